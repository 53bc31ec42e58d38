"""SD-CPC attention: the blockwise window attention is exactly per-pixel window attention (with and
without top-k sparsity, at the query's position or displaced by blocks), dense attention is
multi-head attention scaled per head, and DSSA costs far less than full cross-frame attention
(XLA's counts)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.models.sdcpc_attention import (dense_attention, dense_attention_with_weights,
                                           window_attention)
from vssjax.models.sdcpc_head import DSSA


def _direct_window_attention(q, k, v, window, num_heads, keep, shift=lambda b, y, x, r: (0, 0)):
  """Per pixel and head: softmax over the in-map positions of the w x w windows of all refs,
  each centred on the pixel moved by `shift` (per batch row, pixel and ref), restricted to the
  `keep` best scores."""
  batch, height, width, channels = q.shape
  radius, dim = window // 2, channels // num_heads
  out = np.zeros_like(q)
  for b, y, x, h in np.ndindex(batch, height, width, num_heads):
    heads = slice(h * dim, (h + 1) * dim)
    keys, values = [], []
    for r in range(k.shape[1]):
      dy, dx = shift(b, y, x, r)
      ys = slice(max(y + dy - radius, 0), max(y + dy + radius + 1, 0))
      xs = slice(max(x + dx - radius, 0), max(x + dx + radius + 1, 0))
      keys.append(k[b, r, ys, xs, heads].reshape(-1, dim))
      values.append(v[b, r, ys, xs, heads].reshape(-1, dim))
    keys, values = np.concatenate(keys), np.concatenate(values)
    scores = keys @ q[b, y, x, heads] / np.sqrt(dim)
    scores[scores < np.sort(scores)[-min(keep, scores.size)]] = -np.inf
    weights = np.exp(scores - scores.max())
    out[b, y, x, heads] = weights / weights.sum() @ values
  return out


@pytest.mark.parametrize("window,keep_ratio,num_heads", [(7, 1.0, 2), (5, 1.0, 2), (3, 0.3, 2),
                                                          (7, 1.0, 1)])
def test_window_attention_is_per_pixel_window_attention(window, keep_ratio, num_heads):
  """The blockwise form equals each pixel's own window attention, at the configs' window (7) and
  others, top-k included; one head is the spec's §6.2 score (summed over all channels, / sqrt C)."""
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 7, 9, 8))  # sizes that are not multiples of the block
  k, v = rng.normal(size=(2, 2, 2, 7, 9, 8))
  got = window_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), window=window,
                         num_heads=num_heads, keep_ratio=keep_ratio)
  keep = int(np.ceil(keep_ratio * 2 * window * window))
  np.testing.assert_allclose(got, _direct_window_attention(q, k, v, window, num_heads, keep),
                             atol=1e-5)
  # Keeping every window position (ratio 1) needs no top-k, a sort of each query's scores.
  jaxpr = str(jax.make_jaxpr(lambda *a: window_attention(
      *a, window=window, num_heads=num_heads, keep_ratio=keep_ratio))(q, k, v))
  assert (" sort[" in jaxpr) == (keep_ratio < 1.0)


@pytest.mark.parametrize("window,block,keep_ratio", [(3, 2, 1.0), (5, 2, 1.0), (7, 3, 0.3)])
def test_displaced_windows_are_per_pixel_windows_around_the_centre_block(window, block,
                                                                        keep_ratio):
  """With `centres`, a query of block (i, j) attends in reference r to the window around its
  position moved by (a - i, c - j) blocks, (a, c) its centre block there; at its own block the
  windows are the undisplaced ones."""
  rng = np.random.default_rng(3)
  q = rng.normal(size=(2, 7, 9, 8))
  k, v = rng.normal(size=(2, 2, 2, 7, 9, 8))
  nh, nw = -(-7 // block), -(-9 // block)
  centres = rng.integers(0, nh * nw, (2, nh, nw, 2))

  def shift(b, y, x, r):
    a, c = divmod(centres[b, y // block, x // block, r], nw)
    return (a - y // block) * block, (c - x // block) * block

  attend = functools.partial(window_attention, *(jnp.asarray(a, jnp.float32) for a in (q, k, v)),
                             window=window, num_heads=2, keep_ratio=keep_ratio, block=block)
  keep = int(np.ceil(keep_ratio * 2 * window * window))
  np.testing.assert_allclose(attend(centres=jnp.asarray(centres)),
                             _direct_window_attention(q, k, v, window, 2, keep, shift), atol=1e-5)
  own = np.broadcast_to(np.arange(nh * nw).reshape(1, nh, nw, 1), centres.shape)
  np.testing.assert_allclose(attend(centres=jnp.asarray(own)), attend(), atol=1e-6)
  with pytest.raises(ValueError, match="does not fit in the 3 x 3 blocks of side 1"):
    window_attention(q, k, v, window=5, num_heads=2, block=1)
  with pytest.raises(ValueError, match="blocks of side 3 can miss the map"):
    window_attention(q, k, v, window=1, num_heads=2, block=3, centres=centres)


def test_dense_attention_keeps_its_weights_averaged_over_the_heads():
  """DSSA's coarse stage with windows at its argmax: the same output, and weights that are each
  head's softmax averaged."""
  rng = np.random.default_rng(4)
  q, k, v = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((2, 5, 8), (2, 6, 8),
                                                                      (2, 6, 8)))
  out, weights = dense_attention_with_weights(q, k, v, 2)
  np.testing.assert_allclose(out, dense_attention(q, k, v, 2), atol=1e-6)
  heads = [jax.nn.softmax(np.einsum("bnd,bmd->bnm", q[..., part], k[..., part]) / 2.0, axis=-1)
           for part in (slice(0, 4), slice(4, 8))]
  np.testing.assert_allclose(weights, (heads[0] + heads[1]) / 2, atol=1e-6)


def _compiled_costs(fn, *shapes):
  compiled = jax.jit(fn).lower(*shapes).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return cost["flops"], cost["bytes accessed"], compiled.memory_analysis().temp_size_in_bytes


def test_dssa_costs_far_less_than_full_cross_frame_attention():
  """A 64x64 alignment grid (VSPW's is 60x60), 3 references, 32 channels, w = 7."""
  batch, refs, size, dim, heads = 1, 3, 64, 32, 8
  target = jax.ShapeDtypeStruct((batch, size, size, dim), jnp.float32)
  references = jax.ShapeDtypeStruct((batch, refs, size, size, dim), jnp.float32)
  dssa = DSSA(window=7, num_heads=heads)
  variables = jax.eval_shape(lambda t, r: dssa.init(jax.random.key(0), t, r), target, references)
  dssa_costs = _compiled_costs(dssa.apply, variables, target, references)

  def full_attention(t, r):
    """Every target pixel over every reference pixel; no projections (cheaper than DSSA's)."""
    context = r.reshape((batch, refs * size * size, dim))
    return dense_attention(t.reshape((batch, size * size, dim)), context, context, heads)

  full_costs = _compiled_costs(full_attention, target, references)
  flops, bytes_accessed, temp = (d / f for d, f in zip(dssa_costs, full_costs))
  assert flops < 0.1, dssa_costs
  assert bytes_accessed < 0.25, dssa_costs
  assert temp < 0.25, dssa_costs


def test_dense_attention_is_multi_head_attention_scaled_per_head():
  """SSEA and DSSA's coarse stage: each head's scores are scaled by 1/sqrt(head dim), not of the
  full width, and the heads are concatenated in channel order."""
  rng = np.random.default_rng(1)
  q, k, v = (rng.normal(size=s) for s in ((2, 5, 8), (2, 6, 8), (2, 6, 8)))
  heads, dim = 2, 4
  want = np.zeros_like(q)
  for h in range(heads):
    part = slice(h * dim, (h + 1) * dim)
    scores = np.einsum("bnd,bmd->bnm", q[..., part], k[..., part]) / np.sqrt(dim)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    want[..., part] = (weights / weights.sum(-1, keepdims=True)) @ v[..., part]
  got = dense_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), heads)
  np.testing.assert_allclose(got, want, atol=1e-5)
