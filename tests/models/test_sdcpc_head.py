"""SD-CPC head: output shapes on MiT-like and dilated-ResNet-like strides, stage 1 aggregating only
the most different reference cells (by their features or, with 'js', their class posteriors),
both stages adding to the target, the fine stage's difference gate, its windows at the coarse
stage's argmax, the single-frame exit.
(Gradients: tests/methods/test_sdcpc.py.)"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import split_over_two_devices
from tests.models.helpers import layer_norm_epsilons
from vssjax.models import sdcpc_attention
from vssjax.models.sdcpc_head import DSSA, SDCPCHead, js_divergence, strongest_kept_cells
from vssjax.models.segformer_head import SegFormerHead
from vssjax.ops.pooling import adaptive_avg_pool
from vssjax.train.host_init import host_filled

_DIMS = (8, 16, 24, 32)
_MIT_SIZES = (16, 8, 4, 2)
_RESNET_SIZES = (16, 8, 8, 8)
_HEAD = SDCPCHead(num_classes=5, embed_dim=16, ssea_pool_sizes=(1, 2), ssea_heads=2,
                  dssa_coarse_factor=2, dssa_window=3, dssa_heads=2, embedding_dim=6)


def _features(seed, batch, frames, sizes=_MIT_SIZES):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(size=(batch, frames, s, s, d)), jnp.float32)
          for s, d in zip(sizes, _DIMS)]


@pytest.fixture(scope="module")
def variables():
  return host_filled(jax.eval_shape(lambda f: _HEAD.init(jax.random.key(0), f, train=False),
                                    _features(0, 1, 4)))


@pytest.mark.parametrize("sizes", [_MIT_SIZES, _RESNET_SIZES], ids=["mit", "resnet"])
def test_output_shapes_on_any_strides(variables, sizes):
  """The alignment grid is c2's; the same parameters serve both stride layouts."""
  out = jax.jit(lambda v, f: _HEAD.apply(v, f, train=False))(variables, _features(1, 2, 3, sizes))
  assert out["frame_logits"].shape == (2, 3, 16, 16, 5)
  assert out["final"].shape == (2, 8, 8, 5)
  assert out["embedding"].shape == (2, 8, 8, 6)
  np.testing.assert_allclose(jnp.linalg.norm(out["embedding"], axis=-1), 1.0, rtol=1e-5)


def test_coarse_stage_aggregates_only_the_most_different_reference_cells():
  """Keeping 1 of 4 coarse cells per reference: with the fine stage gated off, only the cell that
  differs most from the target's (here its negation) reaches the output."""
  rng = np.random.default_rng(4)
  target = rng.normal(size=(1, 4, 4, 8)).astype(np.float32)
  refs = rng.normal(size=(1, 2, 4, 4, 8)).astype(np.float32)
  refs[:, :, :2, :2] = target[:, None, :2, :2]  # difference 0
  refs[:, :, 2:, 2:] = -target[:, None, 2:, 2:]  # difference 2: the one selected
  dssa = DSSA(coarse_factor=2, keep_ratio=0.25, window=3, num_heads=2)
  params = host_filled(jax.eval_shape(dssa.init, jax.random.key(0), target, refs))["params"]
  gated_off = {**params, "gate_beta": jnp.full((1,), -1e4)}
  apply = jax.jit(lambda p, r: dssa.apply({"params": p}, target, r))
  nudge = 0.1 * rng.normal(size=(1, 2, 2, 2, 8)).astype(np.float32)

  def nudged(rows, cols):
    out = refs.copy()
    out[:, :, rows, cols] += nudge
    return out

  same = nudged(slice(0, 2), slice(0, 2))
  selected = nudged(slice(2, 4), slice(2, 4))
  np.testing.assert_array_equal(apply(gated_off, refs), apply(gated_off, same))
  assert np.any(apply(gated_off, refs) != apply(gated_off, selected))
  assert np.any(apply(params, refs) != apply(params, same))  # the fine stage sees every cell


def test_coarse_stage_keeps_the_ceiling_of_the_ratio_of_an_odd_cell_count():
  """DSSA keeps ceil(keep_ratio * cells) cells per reference, at least the fraction of
  specs/sdcpc.md §6.2: of 3 x 3 cells at ratio 0.5, 5. Five cells of the reference are the
  target's negated (difference 2), four equal to it (difference 0): with the fine stage gated
  off, every negated cell reaches the output and no equal one does; int(4.5) = 4 would drop a
  negated cell."""
  rng = np.random.default_rng(10)
  target = rng.normal(size=(1, 6, 6, 8)).astype(np.float32)
  refs = target[:, None].copy()
  negated = [(0, 0), (0, 2), (1, 1), (2, 0), (2, 2)]
  for row, col in negated:
    rows, cols = slice(2 * row, 2 * row + 2), slice(2 * col, 2 * col + 2)
    refs[:, 0, rows, cols] = -target[:, rows, cols]
  dssa = DSSA(coarse_factor=2, keep_ratio=0.5, window=3, num_heads=2)
  params = host_filled(jax.eval_shape(dssa.init, jax.random.key(0), target, refs))["params"]
  gated_off = {**params, "gate_beta": jnp.full((1,), -1e4)}
  apply = jax.jit(lambda r: dssa.apply({"params": gated_off}, target, r))
  base = np.asarray(apply(refs))
  nudge = 0.1 * rng.normal(size=(1, 2, 2, 8)).astype(np.float32)
  for row in range(3):
    for col in range(3):
      nudged = refs.copy()
      nudged[:, 0, 2 * row:2 * row + 2, 2 * col:2 * col + 2] += nudge
      reaches = np.any(np.asarray(apply(nudged)) != base)
      assert reaches == ((row, col) in negated), (row, col)


def test_layer_norm_epsilons_are_torch_s_default():
  """Every LayerNorm of SSEA and DSSA has nn.LayerNorm's default eps 1e-5, the reconstruction's
  choice (specs/sdcpc.md §6 gives none; the MiT backbone's block norms use 1e-6): a change shows
  here, where the head's and the method's other tests pass with eps 1e-6."""
  epsilons = layer_norm_epsilons(_HEAD, _features(0, 1, 4), train=False)
  assert epsilons == {f"ssea/{norm}": 1e-5 for norm in ("context_norm", "norm1", "norm2")} | {
      f"dssa/{stage}_norm_{side}": 1e-5 for stage in ("coarse", "fine") for side in ("q", "kv")}


def test_single_frame_is_the_segformer_branch(variables):
  features = _features(5, 2, 1)
  out = jax.jit(lambda v, f: _HEAD.apply(v, f, train=False))(variables, features)
  assert set(out) == {"frame_logits"}
  segformer_vars = {c: {k: v for k, v in tree.items() if k.startswith("linear_")}
                    for c, tree in variables.items()}
  want, _ = SegFormerHead(5, 16).apply(segformer_vars, [f[:, 0] for f in features], train=False)
  np.testing.assert_allclose(out["frame_logits"][:, 0], want, atol=1e-6)


def test_reference_embeddings_are_each_reference_s_static_feature_through_the_projector(
    variables):
  """`embed_references` (MCP-CL's prototypes per frame): reference r's embedding is its own SSEA
  feature (as `frame_state` keeps it) through the target's projector; none by default, and no
  parameter of its own."""
  features = _features(6, 2, 3)
  head = _HEAD.clone(embed_references=True)
  out = jax.jit(lambda v, f: head.apply(v, f, train=False))(variables, features)
  assert "reference_embedding" not in jax.eval_shape(
      lambda v, f: _HEAD.apply(v, f, train=False), variables, features)
  assert out["reference_embedding"].shape == (2, 2, 8, 8, 6)
  embed_frame = jax.jit(lambda v, f: head.apply(
      v, f, method=lambda m, f: m._embed(m.frame_state(f)[1]["static"])))
  for r in range(2):
    np.testing.assert_allclose(out["reference_embedding"][:, r],
                               embed_frame(variables, [f[:, r] for f in features]), atol=1e-5)


def _zeroed(params, *paths):
  """`params` with the Dense kernels and biases under each path ('a/b') set to zero."""
  params = jax.tree.map(np.asarray, params)
  for path in paths:
    node = params
    for key in path.split("/"):
      node = node[key]
    for name in node:
      node[name] = np.zeros_like(node[name])
  return params


def test_dssa_stages_add_to_the_target():
  """Spec §6.2, F_t = Y_t + Z1 (upsampled) + gate * Z2: with the coarse stage's projection zeroed
  and the fine stage gated off, DSSA returns the target unchanged."""
  rng = np.random.default_rng(7)
  target = jnp.asarray(rng.normal(size=(1, 4, 4, 8)), jnp.float32)
  refs = jnp.asarray(rng.normal(size=(1, 2, 4, 4, 8)), jnp.float32)
  dssa = DSSA(coarse_factor=2, window=3, num_heads=2)
  params = host_filled(jax.eval_shape(dssa.init, jax.random.key(0), target, refs))["params"]
  params = {**_zeroed(params, "coarse_attn/proj"), "gate_beta": jnp.full((1,), -1e4)}
  np.testing.assert_allclose(dssa.apply({"params": params}, target, refs), target, atol=1e-6)


def test_fine_stage_gate_opens_with_the_static_difference():
  """The fine stage is scaled per pixel by sigma(alpha * mean_r (1 - cos(Y_t, Y_r)) + beta): with
  a steep gate that opens at a mean difference of 1.5, rows 0-1 (both references equal to the
  target, difference 0; or one equal and one negated, mean 1) get no fine-stage update and rows
  2-3 (both references the target's negation, difference 2) do."""
  rng = np.random.default_rng(8)
  target = rng.normal(size=(1, 4, 4, 8)).astype(np.float32)
  refs = rng.normal(size=(1, 2, 4, 4, 8)).astype(np.float32)
  refs[:, :, :2] = target[:, None, :2]
  refs[:, 1, 1] = -target[:, 1]
  refs[:, :, 2:] = -target[:, None, 2:]
  dssa = DSSA(coarse_factor=2, window=3, num_heads=2)
  params = host_filled(jax.eval_shape(dssa.init, jax.random.key(0), target, refs))["params"]
  apply = jax.jit(lambda p: dssa.apply({"params": p}, target, refs))
  gated_off = apply({**params, "gate_beta": jnp.full((1,), -1e4)})
  steep = apply({**params, "gate_alpha": jnp.full((1,), 1e3),
                 "gate_beta": jnp.full((1,), -1.5e3)})
  np.testing.assert_allclose(steep[:, :2], gated_off[:, :2], atol=1e-6)
  assert np.all(np.abs(np.asarray(steep[:, 2:] - gated_off[:, 2:])).max(-1) > 1e-4)


@pytest.mark.parametrize("difference", ["cosine", "js"])
def test_coarse_cells_are_chosen_per_reference(difference):
  """Each reference keeps the cells that differ most from the target in THAT reference: here
  reference 0's is the bottom-right cell and reference 1's the top-left one, so with the fine stage
  gated off reference 0's bottom-right cell reaches the output and its top-left one does not. By
  'cosine' those cells' features are the target's negation; by 'js' every feature equals the
  target's (cosine difference 0) and only those cells' class posteriors differ."""
  rng = np.random.default_rng(9)
  target = rng.normal(size=(1, 4, 4, 8)).astype(np.float32)
  refs = np.repeat(target[:, None], 2, axis=1)  # difference 0 everywhere...
  posteriors = None
  if difference == "cosine":
    refs[:, 0, 2:, 2:] = -target[:, 2:, 2:]  # ...but 2 in one cell per reference
    refs[:, 1, :2, :2] = -target[:, :2, :2]
  else:
    target_posteriors = np.full((1, 4, 4, 3), 1 / 3, np.float32)
    ref_posteriors = np.repeat(target_posteriors[:, None], 2, axis=1)
    ref_posteriors[:, 0, 2:, 2:] = [1.0, 0.0, 0.0]  # ...but not the class posteriors
    ref_posteriors[:, 1, :2, :2] = [0.0, 1.0, 0.0]
    posteriors = (target_posteriors, ref_posteriors)
  dssa = DSSA(coarse_factor=2, keep_ratio=0.25, window=3, num_heads=2, difference=difference)
  params = host_filled(jax.eval_shape(dssa.init, jax.random.key(0), target, refs,
                                      posteriors))["params"]
  gated_off = {**params, "gate_beta": jnp.full((1,), -1e4)}
  apply = jax.jit(lambda r: dssa.apply({"params": gated_off}, target, r, posteriors))
  nudge = 0.1 * rng.normal(size=(1, 2, 2, 8)).astype(np.float32)
  kept, dropped = refs.copy(), refs.copy()
  kept[:, 0, 2:, 2:] += nudge
  dropped[:, 0, :2, :2] += nudge
  assert np.any(apply(kept) != apply(refs))
  np.testing.assert_array_equal(apply(dropped), apply(refs))


def test_the_strongest_kept_cell_is_the_argmax_of_each_reference_s_weights():
  weights = jnp.asarray([[[0.3, 0.1, 0.4, 0.2], [0.1, 0.5, 0.1, 0.3]]])  # 2 cells, 2 refs x 2
  chosen = jnp.asarray([[[7, 3], [5, 0]]])  # kept cells of ref 0 and ref 1
  np.testing.assert_array_equal(strongest_kept_cells(weights, chosen), [[[7, 5], [3, 0]]])


def test_dssa_moves_each_coarse_cell_s_windows_to_its_strongest_kept_cell(monkeypatch):
  """On a 6 x 10 grid (3 x 5 coarse cells, 6 kept per reference): the centres the fine stage
  gets are, per coarse cell in row-major order and reference, the kept cell (by the cosine
  difference, recomputed here) that the cell's coarse attention weighs most."""
  rng = np.random.default_rng(12)
  target = rng.normal(size=(2, 6, 10, 8)).astype(np.float32)
  refs = rng.normal(size=(2, 2, 6, 10, 8)).astype(np.float32)
  dssa = DSSA(coarse_factor=2, keep_ratio=0.4, window=3, num_heads=2,
              window_centre="coarse_argmax")
  variables = host_filled(jax.eval_shape(dssa.init, jax.random.key(0), target, refs))
  seen = {}

  def record(function, name):
    def recorded(*args, **kwargs):
      out = function(*args, **kwargs)
      seen[name] = np.asarray(kwargs.get("centres") if name == "centres" else out[1])
      return out
    monkeypatch.setattr(sdcpc_attention, function.__name__, recorded)

  record(sdcpc_attention.dense_attention_with_weights, "weights")
  record(sdcpc_attention.window_attention, "centres")
  dssa.apply(variables, jnp.asarray(target), jnp.asarray(refs))

  def pooled(x):  # 2 x 2 cells, flat row-major
    return x.reshape(x.shape[:-3] + (3, 2, 5, 2, 8)).mean((-4, -2)).reshape(x.shape[:-3] + (15, 8))

  def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  difference = 1 - np.sum(unit(pooled(target))[:, None] * unit(pooled(refs)), axis=-1)
  chosen = np.argsort(-difference, axis=-1)[..., :6]  # [B, R, keep], the largest first
  best = seen["weights"].reshape(2, 15, 2, 6).argmax(-1)  # [B, cells, R]
  want = np.take_along_axis(chosen[:, None], best[..., None], axis=-1)[..., 0]
  np.testing.assert_array_equal(seen["centres"], want.reshape(2, 3, 5, 2))


@pytest.mark.parametrize("window_centre, reads", [
    ("same", [(y, x) for y in range(3) for x in range(3)]),
    ("coarse_argmax", [(0, 0), (0, 2), (2, 0), (2, 2)])])
def test_fine_windows_sit_at_the_coarse_stage_s_argmax(window_centre, reads):
  """Reference 0 keeps one coarse cell, its bottom-right one (its features the target's negation),
  so that is every target cell's argmax there: with 'coarse_argmax' a target pixel at (y, x)
  reads reference 0 in the 3 x 3 window around (2 + y % 2, 2 + x % 2), so pixel (1, 1) (outside
  the kept cell, so the coarse stage never reads it) reaches the target pixels at even (y, x), and
  pixel (0, 0) none; at the 'same' place, the target pixels around (1, 1)."""
  rng = np.random.default_rng(11)
  target = rng.normal(size=(1, 4, 4, 8)).astype(np.float32)
  refs = np.repeat(target[:, None], 2, axis=1)
  refs[:, 0, 2:, 2:] = -target[:, 2:, 2:]
  refs[:, 1, :2, :2] = -target[:, :2, :2]
  dssa = DSSA(coarse_factor=2, keep_ratio=0.25, window=3, num_heads=2, difference_gate=False,
              window_centre=window_centre)
  variables = host_filled(jax.eval_shape(dssa.init, jax.random.key(0), target, refs))
  apply = jax.jit(lambda r: dssa.apply(variables, target, r))
  base = apply(refs)

  def reached_by(y, x):
    nudged = refs.copy()
    nudged[0, 0, y, x] += 0.1 * rng.normal(size=8).astype(np.float32)
    changed = np.abs(np.asarray(apply(nudged) - base)).max(-1)[0] > 0
    return sorted(zip(*np.nonzero(changed)))

  assert reached_by(1, 1) == reads
  assert reached_by(0, 0) == ([] if window_centre == "coarse_argmax" else [(0, 0), (0, 1),
                                                                           (1, 0), (1, 1)])


@pytest.mark.parametrize("window_centre", ["same", "coarse_argmax"])
def test_dssa_split_over_the_batch_moves_nothing_between_devices(window_centre):
  """Both top-k selections (the coarse cells, the window positions) rank each device's own
  samples, forward and backward: `lax.top_k` had all-gathered the global batch's scores
  (`vssjax/ops/top_k.py`). Only sums move: the loss's and the parameters' gradients."""
  rng = np.random.default_rng(0)
  target = rng.normal(size=(4, 16, 16, 32)).astype(np.float32)
  refs = rng.normal(size=(4, 2, 16, 16, 32)).astype(np.float32)
  dssa = DSSA(num_heads=2, window=7, window_keep_ratio=0.5, window_centre=window_centre)
  variables = dssa.init(jax.random.key(0), target, refs)
  loss = lambda params, target, refs: jnp.sum(dssa.apply({"params": params}, target, refs) ** 2)
  moved, split, whole = split_over_two_devices(jax.value_and_grad(loss),
                                               (variables["params"], target, refs), split=(1, 2))
  assert {op for op, _ in moved} == {"all-reduce"}
  np.testing.assert_allclose(split[0], whole[0], rtol=1e-5)
  for got, expected in zip(jax.tree.leaves(split[1]), jax.tree.leaves(whole[1])):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_js_divergence_matches_numpy_and_is_finite_at_zero_probabilities():
  rng = np.random.default_rng(10)
  p = rng.dirichlet(np.ones(5), size=(2, 3)).astype(np.float32)
  q = rng.dirichlet(np.ones(5), size=(2, 2, 3)).astype(np.float32)
  p[0, 0] = [0.5, 0.5, 0, 0, 0]  # zeros: 0 log 0 = 0
  q[0, 0, 0] = [0, 0, 0.5, 0.5, 0]  # disjoint from p[0, 0]: ln 2
  q[1, 1, 2] = p[1, 2]  # equal: 0

  def kl(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * np.log(np.where(a > 0, a, 1) / np.where(a > 0, b, 1)), axis=-1)

  m = 0.5 * (p[:, None] + q)
  want = 0.5 * (kl(np.broadcast_to(p[:, None], q.shape), m) + kl(q, m))
  got = np.asarray(jax.jit(js_divergence)(p, q))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got[0, 0, 0], np.log(2), rtol=1e-6)
  assert abs(got[1, 1, 2]) < 1e-6
  grad = jax.grad(lambda a, b: js_divergence(a, b).sum(), argnums=(0, 1))(p, q)
  assert all(np.all(np.isfinite(g)) for g in grad)


def test_js_difference_opens_the_gate_where_a_reference_s_posteriors_differ():
  """difference='js' gates the fine stage by the mean over references of the posteriors'
  divergence: closed where every reference's posterior is the target's (features may differ),
  open where one differs. Without posteriors a 'js' DSSA is refused, with them a 'cosine' one."""
  rng = np.random.default_rng(11)
  target = rng.normal(size=(1, 4, 4, 8)).astype(np.float32)
  refs = rng.normal(size=(1, 2, 4, 4, 8)).astype(np.float32)
  target_posteriors = np.full((1, 4, 4, 3), 1 / 3, np.float32)
  ref_posteriors = np.repeat(target_posteriors[:, None], 2, axis=1)
  ref_posteriors[:, 0, 3, 3] = [1.0, 0.0, 0.0]
  posteriors = (target_posteriors, ref_posteriors)
  dssa = DSSA(coarse_factor=2, window=3, num_heads=2, difference="js")
  params = host_filled(jax.eval_shape(dssa.init, jax.random.key(0), target, refs,
                                      posteriors))["params"]
  apply = jax.jit(lambda p: dssa.apply({"params": p}, target, refs, posteriors))
  closed = apply({**params, "gate_beta": jnp.full((1,), -1e4)})
  steep = apply({**params, "gate_alpha": jnp.full((1,), 1e3), "gate_beta": jnp.full((1,), -1e2)})
  np.testing.assert_allclose(steep[:, :3], closed[:, :3], atol=1e-6)
  np.testing.assert_allclose(steep[:, 3, :3], closed[:, 3, :3], atol=1e-6)
  assert np.abs(np.asarray(steep[:, 3, 3] - closed[:, 3, 3])).max() > 1e-4
  for module, given in ((dssa, None), (DSSA(window=3, num_heads=2), posteriors)):
    with pytest.raises(ValueError, match="takes posteriors with 'js' only"):
      module.init(jax.random.key(0), target, refs, given)


def test_js_posteriors_are_the_branch_s_pooled_softmax_in_the_clip_and_the_kept_states():
  """With 'js', DSSA gets the SegFormer branch's softmax averaged over c2's grid cells, the same
  from the clip forward and from the frames' kept states (the predictor's path), and no gradient
  flows through them into the branch."""
  head = SDCPCHead(num_classes=5, embed_dim=16, ssea_pool_sizes=(1, 2), ssea_heads=2,
                   dssa_coarse_factor=2, dssa_window=3, dssa_heads=2, embedding_dim=6,
                   dssa_difference="js")
  features = _features(2, 1, 4)
  variables = host_filled(jax.eval_shape(lambda f: head.init(jax.random.key(0), f, train=False),
                                         features))
  variables = jax.tree.map(lambda x: x * 30.0, variables)  # far from uniform posteriors

  def dssa_posteriors(fn):
    seen = []

    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, DSSA):
        seen.append(args[2])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      out = fn()
    return out, seen[0]

  out, from_clip = jax.jit(lambda v: dssa_posteriors(
      lambda: head.apply(v, features, train=False)))(variables)
  frame_state = jax.jit(lambda v, f: head.apply(v, f, method=SDCPCHead.frame_state)[1])
  kept = [frame_state(variables, [f[:, t] for f in features]) for t in range(4)]
  stacked = jax.tree.map(lambda *frames: jnp.stack(frames, axis=1), *kept)
  _, from_states = jax.jit(lambda v: dssa_posteriors(lambda: head.apply(
      v, None, stacked, method=SDCPCHead.predict_from_states)))(variables)
  want = adaptive_avg_pool(jax.nn.softmax(out["frame_logits"].reshape((4, 16, 16, 5))), (8, 8))
  np.testing.assert_allclose(from_clip[0][0], want[3], atol=1e-6)
  np.testing.assert_allclose(from_clip[1][0], want[:3], atol=1e-6)
  for got, expected in zip(from_states, from_clip):
    np.testing.assert_allclose(got, expected, atol=1e-6)
  assert np.abs(np.asarray(from_clip[0]) - 0.2).max() > 0.1  # not uniform: the test can tell

  def class_0_mass(params):  # not the sum over the classes, which is 1 whatever the logits
    _, seen = dssa_posteriors(lambda: head.apply({**variables, "params": params}, features,
                                                 train=False))
    return seen[0][0][..., 0].sum() + seen[0][1][..., 0].sum()

  grads = jax.jit(jax.grad(class_0_mass))(variables["params"])
  assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


def test_the_guesses_beyond_the_spec_switch_off():
  """SSEA's token embedding and context norm and DSSA's difference gate are not in the spec's
  reconstruction (§6.1, §6.2): each is a knob, and off it leaves no parameter behind; the
  ungated fine stage is the plain sum, the gate held open."""
  plain = SDCPCHead(num_classes=5, embed_dim=16, ssea_pool_sizes=(1, 2), ssea_heads=2,
                    dssa_coarse_factor=2, dssa_window=3, dssa_heads=2, embedding_dim=6,
                    ssea_token_embedding=False, ssea_context_norm=False,
                    dssa_difference_gate=False)
  shapes = jax.eval_shape(lambda f: plain.init(jax.random.key(0), f, train=False),
                          _features(0, 1, 4))["params"]
  assert "token_embed" not in shapes["ssea"] and "context_norm" not in shapes["ssea"]
  assert not {"gate_alpha", "gate_beta"} & set(shapes["dssa"])

  rng = np.random.default_rng(6)
  target = jnp.asarray(rng.normal(size=(1, 4, 4, 8)), jnp.float32)
  refs = jnp.asarray(rng.normal(size=(1, 2, 4, 4, 8)), jnp.float32)
  gated, ungated = (DSSA(coarse_factor=2, window=3, num_heads=2, difference_gate=g)
                    for g in (True, False))
  params = host_filled(jax.eval_shape(gated.init, jax.random.key(0), target, refs))["params"]
  held_open = {**params, "gate_beta": jnp.full((1,), 1e4)}
  without_gate = {k: v for k, v in params.items() if not k.startswith("gate_")}
  np.testing.assert_array_equal(ungated.apply({"params": without_gate}, target, refs),
                                gated.apply({"params": held_open}, target, refs))
  assert np.any(ungated.apply({"params": without_gate}, target, refs)
                != gated.apply({"params": params}, target, refs))
