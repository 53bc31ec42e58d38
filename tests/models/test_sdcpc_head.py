"""SD-CPC head: output shapes on MiT-like and dilated-ResNet-like strides, stage 1 aggregating only
the most different reference cells, the single-frame exit. (Gradients: tests/methods/test_sdcpc.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.models.sdcpc_head import DSSA, SDCPCHead
from vssjax.models.segformer_head import SegFormerHead
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


def test_single_frame_is_the_segformer_branch(variables):
  features = _features(5, 2, 1)
  out = jax.jit(lambda v, f: _HEAD.apply(v, f, train=False))(variables, features)
  assert set(out) == {"frame_logits"}
  segformer_vars = {c: {k: v for k, v in tree.items() if k.startswith("linear_")}
                    for c, tree in variables.items()}
  want, _ = SegFormerHead(5, 16).apply(segformer_vars, [f[:, 0] for f in features], train=False)
  np.testing.assert_allclose(out["frame_logits"][:, 0], want, atol=1e-6)
