"""MCP-CL: per-class sampling, k-means prototypes that find a class's sub-clusters, confidence
bins, prototypes per frame, the multi-positive InfoNCE and the prototype separation against numpy,
and which pixels form the prototypes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import split_over_two_devices
from vssjax.models.sdcpc_prototypes import (class_prototypes, mcp_cl_loss,
                                            prototype_contrastive_loss,
                                            prototype_separation_loss, sample_per_class)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_sample_per_class_caps_every_class():
  labels = jnp.asarray(np.repeat([0, 1, 2, 255], [50, 3, 20, 10]))
  sample = jax.jit(sample_per_class, static_argnums=1)
  keep = np.asarray(sample(labels, 8, jax.random.key(0)))
  counts = [int(keep[np.asarray(labels) == c].sum()) for c in (0, 1, 2, 255)]
  assert counts == [8, 3, 8, 8]
  other = np.asarray(sample(labels, 8, jax.random.key(1)))
  assert np.any(other != keep)  # random, not the first 8


def test_prototypes_find_the_sub_clusters_of_a_class():
  """Class 0 = two tight groups around orthogonal directions; class 2 is absent; -1 is ignored."""
  rng = np.random.default_rng(0)
  centres = np.eye(4)[:3]
  groups = rng.integers(0, 2, 40)  # interleaved in raster order
  embeddings = _unit(centres[groups] + 0.05 * rng.normal(size=(40, 4)))
  embeddings = np.concatenate([embeddings, _unit(centres[2:] + 0.05 * rng.normal(size=(1, 4))),
                               _unit(rng.normal(size=(3, 4)))])
  classes = np.array([0] * 40 + [1] + [-1] * 3)
  build = jax.jit(class_prototypes, static_argnums=(2, 3, 4))
  prototypes, present = build(jnp.asarray(embeddings, jnp.float32), jnp.asarray(classes), 3, 2, 3)
  np.testing.assert_array_equal(present, [True, True, False])
  found = np.sort(np.argmax(np.asarray(prototypes[0]), axis=-1))
  np.testing.assert_array_equal(found, [0, 1])  # one prototype per sub-cluster
  np.testing.assert_allclose(np.linalg.norm(prototypes, axis=-1)[:2], 1.0, rtol=1e-5)
  # Class 1 has one pixel: its second group is empty and takes the class mean.
  np.testing.assert_allclose(prototypes[1], embeddings[[40, 40]], atol=1e-6)
  # By default the prototypes are targets, not paths for gradients; with `gradient` they are the
  # same values, differentiable as their groups' normalised means.
  def total(e, gradient):
    return class_prototypes(e, jnp.asarray(classes), 3, 2, 3, gradient=gradient)[0][:2].sum()

  points = jnp.asarray(embeddings, jnp.float32)
  assert not np.any(np.asarray(jax.grad(total)(points, False)))
  np.testing.assert_allclose(
      class_prototypes(points, jnp.asarray(classes), 3, 2, 3, gradient=True)[0], prototypes,
      atol=1e-6)
  grad = np.asarray(jax.grad(total)(points, True))
  assert np.all(grad[-3:] == 0) and np.all(np.any(grad[:41] != 0, axis=-1))  # members only


def test_contrastive_loss_matches_numpy_and_pulls_towards_own_prototypes():
  rng = np.random.default_rng(1)
  embeddings = _unit(rng.normal(size=(12, 5))).astype(np.float32)
  prototypes = _unit(rng.normal(size=(3, 2, 5))).astype(np.float32)
  labels = np.array([0, 1, 2, 255, 0, 1, 2, 0, 1, 1, 2, 0])
  present = np.array([True, True, False])
  weights = np.ones(12, bool)
  weights[0] = False
  args = [jnp.asarray(a) for a in (embeddings, labels, prototypes, present)]
  loss_fn = jax.jit(prototype_contrastive_loss, static_argnums=4)
  loss = loss_fn(*args, 0.1, weights)
  logits = np.einsum("nd,ckd->nck", embeddings.astype(np.float64), prototypes[:2]) / 0.1
  used = weights & np.isin(labels, [0, 1])
  terms = [np.log(np.exp(logits[n]).sum()) - np.log(np.exp(logits[n, labels[n]]).sum())
           for n in np.flatnonzero(used)]
  np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
  # A gradient step on the embeddings lowers the loss.
  grad = jax.jit(jax.grad(prototype_contrastive_loss), static_argnums=4)(*args, 0.1, weights)
  args[0] = args[0] - 0.01 * grad
  assert loss_fn(*args, 0.1, weights) < loss


def test_prototype_pixels_predicted_or_correct():
  """Labels: rows 0-1 class 0, rows 2-3 class 1 (4x4 grid; labels at 8x8); row 1 is predicted 1.
  With K = 1 the prototype is the normalised mean of the chosen pixels, so the loss is explicit."""
  rng = np.random.default_rng(2)
  embedding = _unit(rng.normal(size=(1, 4, 4, 6))).astype(np.float32)
  labels = np.repeat(np.repeat(np.array([[0], [0], [1], [1]]) * np.ones((1, 4), int), 2, 0), 2, 1)
  labels[0, 2] = 255  # nearest-downsampled to grid pixel (0, 1): no anchor, no prototype member
  predicted = np.array([0, 1, 1, 1])[:, None] * np.ones((1, 4), int)
  logits = np.eye(2, dtype=np.float32)[predicted][None]
  flat, grid_labels = embedding.reshape(16, 6), np.repeat([0, 0, 1, 1], 4)

  anchors = [0, 2, 3, 4, 5, 6, 7] + list(range(8, 16))

  def expected(members_of_0, members_of_1):
    prototypes = np.stack([_unit(flat[members_of_0].mean(0)), _unit(flat[members_of_1].mean(0))])
    logits_np = flat[anchors].astype(np.float64) @ prototypes.T / 0.1
    own = logits_np[np.arange(len(anchors)), grid_labels[anchors]]
    return np.mean(np.log(np.exp(logits_np).sum(-1)) - own)

  for mode, members in (("predicted", ([0, 1, 2, 3], list(range(4, 16)))),
                        ("correct", ([0, 2, 3], list(range(8, 16))))):
    loss = jax.jit(functools.partial(
        mcp_cl_loss, num_prototypes=1, temperature=0.1, kmeans_iters=1, prototype_pixels=mode,
        max_pixels_per_class=100))(embedding, logits, labels[None], jax.random.key(0))
    np.testing.assert_allclose(loss["loss_contrast"], expected(*members), rtol=1e-5,
                               err_msg=mode)


def test_kmeans_starts_from_raster_runs_and_moves_pixels_to_their_nearest_prototype():
  """Three tight groups of 6, 12 and 12 pixels in raster order, K = 3: the starting runs of 10 mix
  the groups; one k-means step (each pixel to its most similar prototype) separates them, in the
  order of the runs."""
  rng = np.random.default_rng(0)
  groups = np.repeat([0, 1, 2], [6, 12, 12])
  embeddings = _unit(np.eye(4)[groups] + 0.05 * rng.normal(size=(30, 4)))
  prototypes, _ = jax.jit(class_prototypes, static_argnums=(2, 3, 4))(
      jnp.asarray(embeddings, jnp.float32), jnp.zeros(30, jnp.int32), 1, 3, 1)
  want = [_unit(embeddings[groups == g].mean(0)) for g in range(3)]
  np.testing.assert_allclose(prototypes[0], want, atol=1e-5)


def test_anchors_are_capped_per_labelled_class():
  """`max_pixels_per_class` caps the anchors of each LABELLED class: with the cap at the label
  counts (8 and 8) every anchor is used, however many pixels are predicted as one class (15)."""
  rng = np.random.default_rng(3)
  embedding = _unit(rng.normal(size=(1, 4, 4, 6))).astype(np.float32)
  labels = np.repeat([0, 0, 1, 1], 4).reshape(1, 4, 4)
  predicted = np.zeros(16, int)
  predicted[-1] = 1
  logits = np.eye(2, dtype=np.float32)[predicted].reshape(1, 4, 4, 2)
  loss = jax.jit(functools.partial(
      mcp_cl_loss, num_prototypes=1, temperature=0.1, kmeans_iters=1,
      prototype_pixels="predicted"), static_argnames="max_pixels_per_class")
  uncapped = loss(embedding, logits, labels, jax.random.key(0), max_pixels_per_class=100)
  for seed in range(3):
    np.testing.assert_allclose(
        loss(embedding, logits, labels, jax.random.key(seed), max_pixels_per_class=8)[
            "loss_contrast"], uncapped["loss_contrast"], rtol=1e-6)


def _info_nce(anchors, labels, prototypes, temperature):
  """Numpy's multi-positive InfoNCE of anchors [N, D] labelled [N] against prototypes [C, K, D]."""
  logits = np.einsum("nd,ckd->nck", anchors.astype(np.float64), prototypes) / temperature
  own = np.log(np.exp(logits[np.arange(len(labels)), labels]).sum(-1))
  return np.mean(np.log(np.exp(logits).sum((1, 2))) - own)


def test_confidence_grouping_bins_each_class_by_its_predicted_probability():
  """grouping='confidence': each class's pixels in K runs of equal size by their predicted
  class's probability (least confident first), each prototype its run's normalised mean,
  whatever the raster order; no k-means step follows (`kmeans_iters` is ignored)."""
  rng = np.random.default_rng(4)
  flat = _unit(rng.normal(size=(16, 6))).astype(np.float32)
  predicted = rng.permutation(np.repeat([0, 1], 8))
  margin = rng.permutation(16).astype(np.float32) / 4  # distinct: one order per class
  logits = np.where(np.eye(2, dtype=bool)[predicted], margin[:, None], 0.0).astype(np.float32)

  def expected(order):
    prototypes = []
    for c in (0, 1):
      members = np.flatnonzero(predicted == c)
      runs = members[np.argsort(order[members], kind="stable")].reshape(2, 4)
      prototypes.append([_unit(flat[run].mean(0)) for run in runs])
    return _info_nce(flat, predicted, np.asarray(prototypes), 0.5)

  args = (flat.reshape(1, 4, 4, 6), logits.reshape(1, 4, 4, 2), predicted.reshape(1, 4, 4),
          jax.random.key(0))

  def loss(grouping, kmeans_iters):
    return jax.jit(functools.partial(
        mcp_cl_loss, num_prototypes=2, temperature=0.5, kmeans_iters=kmeans_iters,
        prototype_pixels="predicted", max_pixels_per_class=100, grouping=grouping))(*args)

  got = loss("confidence", 3)
  np.testing.assert_allclose(got["loss_contrast"], expected(margin), rtol=1e-5)
  assert set(got) == {"loss_contrast"}  # the separation term only when asked for
  raster = expected(np.zeros(16))  # k-means' start, without its steps
  np.testing.assert_allclose(loss("kmeans", 0)["loss_contrast"], raster, rtol=1e-5)
  assert abs(raster - expected(margin)) > 0.01  # the two groupings differ here


def test_frames_grouping_takes_one_prototype_per_clip_frame():
  """grouping='frames': class c's prototype r is the normalised mean of reference r's pixels
  predicted c (over the batch), its last the target frames'; a class a frame lacks takes the
  class's mean over all frames. The anchors are the target frames' pixels only."""
  rng = np.random.default_rng(5)
  batch, refs, size, dim = 2, 2, 3, 5
  embedding = _unit(rng.normal(size=(batch, size, size, dim))).astype(np.float32)
  ref_embedding = _unit(rng.normal(size=(batch, refs, size, size, dim))).astype(np.float32)
  labels = rng.integers(0, 3, (batch, size, size))
  ref_labels = rng.integers(0, 3, (batch, refs, size, size))
  ref_labels[:, 1] = np.where(ref_labels[:, 1] == 2, 0, ref_labels[:, 1])  # no class 2 there
  logits, ref_logits = (np.eye(3, dtype=np.float32)[x] for x in (labels, ref_labels))
  frames = [(ref_embedding[:, r].reshape(-1, dim), ref_labels[:, r].reshape(-1))
            for r in range(refs)] + [(embedding.reshape(-1, dim), labels.reshape(-1))]
  prototypes = np.zeros((3, refs + 1, dim))
  for c in range(3):
    everywhere = np.concatenate([e[l == c] for e, l in frames])
    for k, (e, l) in enumerate(frames):
      prototypes[c, k] = _unit((e[l == c] if np.any(l == c) else everywhere).mean(0))
  def loss(embedding, ref_embedding, gradient=False):
    return mcp_cl_loss(
        embedding, logits, labels, jax.random.key(0), num_prototypes=4, temperature=0.5,
        kmeans_iters=3, prototype_pixels="predicted", max_pixels_per_class=100,
        grouping="frames", prototype_gradient=gradient,
        references=(ref_embedding, ref_logits, ref_labels))["loss_contrast"]

  np.testing.assert_allclose(jax.jit(loss)(embedding, ref_embedding),
                             _info_nce(frames[-1][0], frames[-1][1], prototypes, 0.5), rtol=1e-5)
  # The references move through their prototypes only, so only where those carry gradient.
  for gradient in (False, True):
    ref_grad = jax.jit(jax.grad(loss, argnums=1), static_argnums=2)(embedding, ref_embedding,
                                                                    gradient)
    assert np.any(np.asarray(ref_grad)) == gradient
  # Split over devices by clip, the devices sum their prototypes' parts and gather only labels
  # (the anchor sampling's sorts), not the embeddings, which a reference-major join would gather.
  moved, split, whole = split_over_two_devices(loss, (embedding, ref_embedding), split=(0, 1))
  assert all(op == "all-reduce" or all(shape.startswith(("s32", "u32", "pred")) for shape in shapes)
             for op, shapes in moved), moved
  np.testing.assert_allclose(split, whole, rtol=1e-6)
  with pytest.raises(ValueError, match="with reference frames: 'frames' groups by them"):
    mcp_cl_loss(embedding, logits, labels, jax.random.key(0), num_prototypes=2, temperature=0.5,
                kmeans_iters=0, prototype_pixels="predicted", max_pixels_per_class=100,
                references=(ref_embedding, ref_logits, ref_labels))


def _separation_numpy(prototypes, present, temperature):
  """Per present prototype, log-mean-exp over the other present classes' prototypes; averaged."""
  terms = []
  for a in np.flatnonzero(present):
    others = np.concatenate([prototypes[b] for b in np.flatnonzero(present) if b != a])
    for p in prototypes[a]:
      terms.append(np.log(np.mean(np.exp(others.astype(np.float64) @ p / temperature))))
  return np.mean(terms)


def test_separation_is_a_log_mean_exp_over_other_classes_prototypes_only():
  """The prototype-level term (spec §6.3): no pair of one class's prototypes is a term, so it
  never pulls them together; an absent class takes no part; fewer than two classes give 0."""
  rng = np.random.default_rng(5)
  prototypes = _unit(rng.normal(size=(3, 2, 5))).astype(np.float32)
  present = np.array([True, False, True])
  separation = jax.jit(prototype_separation_loss, static_argnums=2)
  np.testing.assert_allclose(separation(prototypes, present, 0.2),
                             _separation_numpy(prototypes, present, 0.2), rtol=1e-5)
  moved = prototypes.copy()
  moved[0, 1] = moved[0, 0]  # two equal prototypes of one class: still only cross-class terms
  np.testing.assert_allclose(separation(moved, present, 0.2),
                             _separation_numpy(moved, present, 0.2), rtol=1e-5)
  grad = np.asarray(jax.grad(prototype_separation_loss)(prototypes, present, 0.2))
  assert not np.any(grad[1]) and np.all(np.any(grad[[0, 2]] != 0, axis=-1))
  # A gradient step moves the two classes' prototypes apart.
  stepped = prototypes - 0.05 * grad
  assert (np.einsum("kd,ld->", prototypes[0], prototypes[2])
          > np.einsum("kd,ld->", stepped[0], stepped[2]))
  assert separation(prototypes, np.array([True, False, False]), 0.2) == 0.0
