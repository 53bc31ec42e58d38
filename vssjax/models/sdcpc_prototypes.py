"""MCP-CL: multivariate class prototypes with contrastive learning (SD-CPC, training only).

Paper (specs/sdcpc.md §2.1, abstract and Fig. 2 caption only): several prototypes per class are
obtained from the prediction results and the output features, and contrastive learning against
them gives "personalized inter-class" and "diversified intra-class" features. A third-party summary
says only correctly predicted pixels form the prototypes [SECONDARY].

Reconstruction (spec §6.3, [GUESS]; all knobs in `config.method.mcp`): on the target frames of a
batch, the pixels predicted as class c (and, with `prototype_pixels='correct'`, labelled c) are
split into K groups, by `grouping`: 'kmeans', a few spherical k-means steps started from K
contiguous runs of them in raster order, or 'confidence', K runs of equal size in the order of their
predicted probability of c (§6.3's "K confidence bins", as quantiles so that no bin of a class with
K pixels or more is empty), or 'frames', one group per place in the clips (§6.3's (c): the target
frames' pixels as above, and each reference frame's, embedded by the same projector from its SSEA
feature and chosen by the SegFormer branch's prediction; K = the clip's length; group r pools
reference r of every clip of the batch, as the other groupings pool the batch's targets); the K
group means, re-normalised, are c's prototypes. The assignments carry no gradient (spec §6.3);
the means do only with `prototype_gradient=True`. Off by default: the prototypes are then fixed
targets for the step, as in prototype methods that update them without back-propagation, and the
loss shapes each pixel's embedding only through that pixel.
Each labelled pixel (at most `max_pixels_per_class` per class, drawn at random) is pulled towards
the prototypes of its class and pushed from those of every other class by a multi-positive
InfoNCE with temperature tau:
  l(p) = -log( sum_k exp(e_p . m_{c,k} / tau) / sum_{c', k} exp(e_p . m_{c',k} / tau) ),
over the classes that have prototypes in the batch. Being pulled towards the nearest of several
prototypes rather than one mean keeps a class's features diverse. §6.3's optional prototype-level
term (`separation_weight`, off by default) pushes each prototype from the other classes' ones,
never towards its own class's: a log-mean-exp of its similarities to them over tau, which only
moves the prototypes when they carry gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from data_pipelines.sources.base import IGNORE_LABEL
from vssjax.models.layers import l2_normalize
from vssjax.ops.resize import resize_nearest

PROTOTYPE_PIXELS = ("predicted", "correct")
GROUPINGS = ("kmeans", "confidence", "frames")


def rank_within_class(classes: jax.Array, order: jax.Array) -> jax.Array:
  """For every element of `classes` [N], how many elements of its class come before it when the
  class is sorted by `order` [N] (ties keep index order)."""
  num = classes.shape[0]
  by_class = jnp.lexsort((jnp.arange(num), order, classes))
  sorted_classes = classes[by_class]
  first = jnp.searchsorted(sorted_classes, sorted_classes, side="left")
  return jnp.zeros(num, jnp.int32).at[by_class].set(jnp.arange(num, dtype=jnp.int32) - first)


def sample_per_class(labels: jax.Array, max_per_class: int, rng: jax.Array) -> jax.Array:
  """Bool [N]: a uniformly random subset of at most `max_per_class` elements of every label."""
  return rank_within_class(labels, jax.random.uniform(rng, labels.shape)) < max_per_class


def class_prototypes(embeddings: jax.Array, classes: jax.Array, num_classes: int,
                     num_prototypes: int, kmeans_iters: int, *, gradient: bool = False,
                     order: jax.Array | None = None,
                     groups: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """K prototypes per class from unit embeddings [N, D] and their classes [N] (-1: none).

  The groups start as K contiguous runs of each class's pixels sorted by `order` [N] (ascending;
  None: raster order), or as the given `groups` [N] (in [0, K)), then take `kmeans_iters` k-means
  steps. Returns (prototypes [C, K, D], unit vectors; present [C], whether the class has any
  pixel). A group left empty (a class with fewer than K pixels, or none in a given group) takes
  the class mean. The assignments never carry gradient; the prototypes
  (their groups' means) do with `gradient`.
  """
  embeddings = embeddings.astype(jnp.float32)
  points = jax.lax.stop_gradient(embeddings)
  k = num_prototypes
  member = (classes >= 0) & (classes < num_classes)
  safe = jnp.where(member, classes, 0)
  segments = num_classes * k + 1  # the last segment collects the non-members

  def centres(groups, points=points):
    ids = jnp.where(member, safe * k + groups, num_classes * k)
    sums = jax.ops.segment_sum(points, ids, segments)[:-1].reshape((num_classes, k, -1))
    counts = jax.ops.segment_sum(jnp.ones_like(ids), ids, segments)[:-1].reshape((num_classes, k))
    class_sums = sums.sum(axis=1, keepdims=True)
    return l2_normalize(jnp.where(counts[..., None] > 0, sums, class_sums))

  counts = jax.ops.segment_sum(member.astype(jnp.int32), safe, num_classes)
  if groups is None:
    # Start: K contiguous runs of each class's pixels (in raster order: spatially distinct parts).
    order = (jnp.zeros(classes.shape, jnp.float32) if order is None
             else jax.lax.stop_gradient(order))
    rank = rank_within_class(jnp.where(member, safe, -1), order)
    groups = (rank * k) // jnp.maximum(counts[safe], 1)
  prototypes = centres(groups)
  for _ in range(kmeans_iters):
    groups = jnp.argmax(jnp.einsum("nd,nkd->nk", points, prototypes[safe]), axis=-1)
    prototypes = centres(groups)
  if gradient:
    prototypes = centres(groups, embeddings)  # the same values, differentiable in the embeddings
  return prototypes, counts > 0


def prototype_contrastive_loss(embeddings: jax.Array, labels: jax.Array, prototypes: jax.Array,
                               present: jax.Array, temperature: float,
                               weights: jax.Array) -> jax.Array:
  """Mean multi-positive InfoNCE of unit embeddings [N, D] labelled [N] against prototypes
  [C, K, D] of the `present` classes, over the anchors with `weights` [N] whose class is present."""
  num_classes = prototypes.shape[0]
  valid = (labels >= 0) & (labels < num_classes)
  safe = jnp.where(valid, labels, 0)
  logits = jnp.einsum("nd,ckd->nck", embeddings.astype(jnp.float32), prototypes) / temperature
  logits = jnp.where(present[None, :, None], logits, jnp.finfo(jnp.float32).min)
  positives = jnp.take_along_axis(logits, safe[:, None, None], axis=1)[:, 0]
  per_pixel = (jax.nn.logsumexp(logits, axis=(1, 2))
               - jax.nn.logsumexp(positives, axis=-1))
  used = (weights & valid & present[safe]).astype(jnp.float32)
  return jnp.sum(used * per_pixel) / jnp.maximum(used.sum(), 1.0)


def prototype_separation_loss(prototypes: jax.Array, present: jax.Array,
                              temperature: float) -> jax.Array:
  """Mean over the prototypes [C, K, D] of the `present` classes of the log-mean-exp of their
  similarities to every prototype of the other present classes, over `temperature`: a soft
  maximum of how close each comes to another class, in [-1/tau, 1/tau]. No term pairs two
  prototypes of one class, so it never pulls them together. 0 with fewer than two classes."""
  num_classes = prototypes.shape[0]
  similarity = jnp.einsum("akd,bld->akbl", prototypes, prototypes) / temperature
  others = (present[:, None] & present[None, :] & ~jnp.eye(num_classes, dtype=bool))
  others = jnp.broadcast_to(others[:, None, :, None], similarity.shape)
  similarity = jnp.where(others, similarity, jnp.finfo(jnp.float32).min)
  terms = others.sum(axis=(2, 3))
  per_prototype = (jax.nn.logsumexp(similarity, axis=(2, 3))
                   - jnp.log(jnp.maximum(terms, 1).astype(jnp.float32)))
  used = (terms > 0).astype(jnp.float32)
  return jnp.sum(used * per_prototype) / jnp.maximum(used.sum(), 1.0)


def mcp_cl_loss(embedding: jax.Array, logits: jax.Array, labels: jax.Array, rng: jax.Array, *,
                num_prototypes: int, temperature: float, kmeans_iters: int,
                prototype_pixels: str, max_pixels_per_class: int,
                prototype_gradient: bool = False, grouping: str = "kmeans",
                separation: bool = False,
                references: tuple[jax.Array, jax.Array, jax.Array] | None = None,
                ignore_label: int = IGNORE_LABEL) -> dict[str, jax.Array]:
  """MCP-CL on a batch of target frames: embedding [B, h, w, D] (unit), logits [B, h, w, C] on the
  same grid, labels [B, H, W] (nearest-downsampled to the grid). Returns `loss_contrast` (the
  InfoNCE) and, with `separation`, `loss_separation` (`prototype_separation_loss`).

  `references` (grouping='frames' only): the clips' other frames, (embedding [B, R, h, w, D],
  logits [B, R, h, w, C], labels [B, R, H, W]) on the same grid, which form prototypes (one per
  frame and class, `num_prototypes` unused) but are no anchors. A class that only a reference
  shows is present: its prototypes are negatives, and a target pixel labelled with it an anchor.
  """
  if prototype_pixels not in PROTOTYPE_PIXELS:
    raise ValueError(f"prototype_pixels must be one of {PROTOTYPE_PIXELS}, got "
                     f"{prototype_pixels!r}")
  if grouping not in GROUPINGS:
    raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
  if (references is None) == (grouping == "frames"):
    raise ValueError(f"grouping={grouping!r} with{'out' if references is None else ''} reference "
                     "frames: 'frames' groups by them, and only it takes them")
  num_classes = logits.shape[-1]
  grid = embedding.shape[1:3]

  def pixels(embedding, logits, labels):
    """Flat embeddings, grid labels (-1: ignored) and the classes whose prototypes they form."""
    labels = resize_nearest(labels, grid).reshape(-1)
    labels = jnp.where(labels == ignore_label, -1, labels)
    logits = logits.reshape((-1, num_classes))
    predicted = jnp.argmax(logits, axis=-1)
    if prototype_pixels == "correct":
      predicted = jnp.where(predicted == labels, predicted, -1)
    return embedding.reshape((-1, embedding.shape[-1])), logits, labels, predicted

  embedding, logits, labels, predicted = pixels(embedding, logits, labels)
  points, classes, order, groups = embedding, predicted, None, None
  if grouping == "confidence":  # the predicted class's probability; its bins need no k-means
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    order, kmeans_iters = jnp.max(probabilities, axis=-1), 0
  elif grouping == "frames":  # group r: reference r of every clip; the targets' the last
    batch, num_refs = references[0].shape[:2]
    ref_points, _, _, ref_classes = pixels(*references)

    def by_clip(refs, target):
      """Each clip's references then its target, clip-major as the batch is laid out: joined
      reference-major instead, a batch split over devices would be gathered whole."""
      refs, target = refs.reshape((batch, -1) + refs.shape[1:]), target.reshape(
          (batch, -1) + target.shape[1:])
      joined = jnp.concatenate([refs, target], axis=1)
      return joined.reshape((-1,) + joined.shape[2:])

    points, classes = by_clip(ref_points, embedding), by_clip(ref_classes, predicted)
    groups = jnp.tile(jnp.repeat(jnp.arange(num_refs + 1), predicted.shape[0] // batch), batch)
    num_prototypes, kmeans_iters = num_refs + 1, 0
  prototypes, present = class_prototypes(points, classes, num_classes, num_prototypes,
                                         kmeans_iters, gradient=prototype_gradient, order=order,
                                         groups=groups)
  weights = sample_per_class(labels, max_pixels_per_class, rng)
  losses = {"loss_contrast": prototype_contrastive_loss(embedding, labels, prototypes, present,
                                                        temperature, weights)}
  if separation:
    losses["loss_separation"] = prototype_separation_loss(prototypes, present, temperature)
  return losses
