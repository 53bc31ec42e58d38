"""Attention primitives of SD-CPC's alignment modules (specs/sdcpc.md §6.1-6.2), NHWC.

`CrossAttention` is one multi-head attention of query tokens over context tokens, either dense
(SSEA's pooled pyramid, DSSA's coarse stage over the selected reference tokens) or restricted to
a w x w window around every query position in each reference frame (DSSA's fine stage).

The window attention is SD-CPC's "window-based attention map" as reconstructed in spec §6.2
[GUESS: the paper's formula is not available]: a pixel attends only to the w x w neighbourhood of
its own position in every reference frame, so its cost is O(N w^2 C R) instead of the
O(N^2 C R) of full cross-frame attention. It is computed blockwise, so that XLA sees dense
matmuls instead of w^2 shifted copies of the key map: the map is cut into b x b blocks
(b = w // 2), every block's queries score the 3 x 3 neighbouring blocks of each reference frame,
and the dense block score map is restricted to each query's own window by its Hadamard product
with a sparse 0/1 window mask (applied as a masked softmax). It scores 9 b^2 positions per query
and reference (81 for w = 7) to keep the w^2 (49) of the window, and is exactly the per-pixel
window attention (tests/models/test_sdcpc_attention.py checks it against a direct loop).
Optionally only the `keep_ratio` highest-scoring window positions of each query are kept
("sparsity of cross-frame attention points", spec §2.3).

The windows sit at the query's own position ("small motion assumption", spec §6.2) or, with
`centres`, displaced by whole blocks per query block and reference: §6.2's alternative, windows
centred on the coarse stage's argmax, upsampled (`DSSA(window_centre='coarse_argmax')`, where the
blocks are the coarse stage's cells). A displaced block reads the 3 x 3 blocks around its centre
block, so the same blockwise products serve, on keys gathered by block.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp
import numpy as np

from vssjax.models.layers import Dense, dense_init
from vssjax.ops.attention import attention_probabilities, dot_product_attention, softmax
from vssjax.ops.mixed_precision import float32_product
from vssjax.ops.top_k import kth_largest


def _split_heads(x: jax.Array, num_heads: int) -> jax.Array:
  if x.shape[-1] % num_heads:
    raise ValueError(f"{x.shape[-1]} channels do not split into {num_heads} heads")
  return x.reshape(x.shape[:-1] + (num_heads, x.shape[-1] // num_heads))


def _masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis of the float32 scores where `mask`; masked entries get weight 0."""
  scores = jnp.where(mask, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  return softmax(scores)


def top_k_mask(scores: jax.Array, mask: jax.Array | np.ndarray, keep: int,
               most_valid: int) -> jax.Array:
  """`mask` narrowed to the `keep` highest scores of each row (last axis); ties are all kept.

  When `keep` reaches `most_valid`, the most valid entries any row can have (static), every row
  keeps them all and no top-k runs (XLA:CPU sorts each row for it: 27% of SD-CPC-B1's forward at
  the configs' ratio 1).
  """
  if keep >= most_valid:
    return jnp.asarray(mask)
  masked = jnp.where(mask, scores, -jnp.inf)
  threshold = kth_largest(masked, keep)
  return mask & (masked >= threshold)


def dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int) -> jax.Array:
  """Multi-head attention of q [B, N, C] over k, v [B, M, C] -> [B, N, C]."""
  q, k, v = (_split_heads(x, num_heads) for x in (q, k, v))
  out = dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5)
  return out.reshape(out.shape[:-2] + (-1,))


def dense_attention_with_weights(q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int
                                 ) -> tuple[jax.Array, jax.Array]:
  """`dense_attention`'s output and its attention weights averaged over the heads, [B, N, M]
  (float32): the same computation, its weights kept."""
  q, k, v = (_split_heads(x, num_heads) for x in (q, k, v))
  weights = attention_probabilities(q, k, scale=q.shape[-1] ** -0.5)
  out = jnp.einsum("bnts,bsnh->btnh", weights.astype(v.dtype), v)
  return out.reshape(out.shape[:-2] + (-1,)), weights.mean(axis=1)


def window_block_size(window: int) -> int:
  """Block side b of the blockwise window attention: b = w // 2 keeps a w x w window inside the
  3 x 3 blocks around the query's block with the fewest extra scores (9 b^2 per query). The
  window is a positive odd size (centred on its pixel), which `methods.sdcpc` checks as the model
  is built."""
  return max(window // 2, 1)


def window_mask(height: int, width: int, window: int, block: int) -> np.ndarray:
  """Static [nh, nw, b*b, 9*b*b] bool: whether key (neighbour block, pixel) lies in the w x w
  window of query pixel (block, pixel) and inside the height x width map."""
  radius = window // 2
  nh, nw = -(-height // block), -(-width // block)
  pixel = np.arange(block)
  # Query coordinates [nh, b] and key coordinates [nh, 3, b] along one axis.
  q_y = np.arange(nh)[:, None] * block + pixel
  k_y = (np.arange(nh)[:, None, None] + np.arange(-1, 2)[:, None]) * block + pixel
  q_x = np.arange(nw)[:, None] * block + pixel
  k_x = (np.arange(nw)[:, None, None] + np.arange(-1, 2)[:, None]) * block + pixel

  def axis_ok(q, k, size):  # [n, b (query), 3, b (key)]
    near = np.abs(k[:, None] - q[:, :, None, None]) <= radius
    return near & (k[:, None] >= 0) & (k[:, None] < size)

  ok_y, ok_x = axis_ok(q_y, k_y, height), axis_ok(q_x, k_x, width)
  # [nh, nw, qy, qx, ny, ky, nx, kx] -> [nh, nw, (qy, qx), (ny, nx, ky, kx)]
  ok = ok_y[:, None, :, None, :, :, None, None] & ok_x[None, :, None, :, None, None, :, :]
  return ok.transpose(0, 1, 2, 3, 4, 6, 5, 7).reshape(nh, nw, block * block, 9 * block * block)


def _to_blocks(x: jax.Array, block: int, nh: int, nw: int) -> jax.Array:
  """[..., nh*b, nw*b, C] -> [..., nh, nw, b*b, C]."""
  lead = x.shape[:-3]
  x = x.reshape(lead + (nh, block, nw, block, x.shape[-1]))
  x = jnp.moveaxis(x, -4, -3)  # [..., nh, nw, b, b, C]
  return x.reshape(lead + (nh, nw, block * block, x.shape[-1]))


def _neighbour_blocks(x: jax.Array, block: int, nh: int, nw: int) -> jax.Array:
  """Reference maps [B, R, H, W, C] -> the 3 x 3 blocks around each block,
  [B, nh, nw, R*9*b*b, C] ordered (ref, neighbour row, neighbour col, pixel row, pixel col)."""
  batch, refs, height, width, channels = x.shape
  x = jnp.pad(x, ((0, 0), (0, 0), (block, (nh + 1) * block - height),
                  (block, (nw + 1) * block - width), (0, 0)))
  x = _to_blocks(x, block, nh + 2, nw + 2)  # [B, R, nh+2, nw+2, b*b, C]
  x = jnp.stack([x[:, :, i:i + nh, j:j + nw] for i in range(3) for j in range(3)], axis=4)
  x = jnp.moveaxis(x, 1, 3)  # [B, nh, nw, R, 9, b*b, C]
  return x.reshape((batch, nh, nw, refs * 9 * block * block, channels))


def _displaced(neighbourhoods: jax.Array, centres: jax.Array) -> jax.Array:
  """The 3 x 3 blocks around each block of each reference, [B, nh, nw, R, 9*b*b, C] -> those
  around each query block's centre block, `centres` [B, nh, nw, R] (flat indices)."""
  batch, nh, nw, refs = neighbourhoods.shape[:4]
  flat = neighbourhoods.reshape((batch, nh * nw) + neighbourhoods.shape[3:])
  index = centres.reshape((batch, nh * nw, refs, 1, 1))
  return jnp.take_along_axis(flat, index, axis=1).reshape(neighbourhoods.shape)


def window_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, window: int, num_heads: int,
                     keep_ratio: float = 1.0, centres: jax.Array | None = None,
                     block: int | None = None) -> jax.Array:
  """Each query pixel of q [B, H, W, C] attends to the w x w windows around its own position in
  every reference map of k, v [B, R, H, W, C]; one softmax over all R * w^2 positions (those in
  the map).

  `keep_ratio` < 1 keeps only the ceil(ratio * R * w^2) best-scoring positions per query and head.
  `centres` [B, nh, nw, R] (int, flat block indices), with the map cut into `block` x `block`
  blocks (nh, nw = ceil(H / block), ceil(W / block)): each query block's windows in reference r
  are displaced to block `centres[..., r]`, so that a query at (y, x) of block (i, j) with centre
  block (a, c) attends to the window around (y + (a - i) block, x + (c - j) block); the window
  must stay within the 3 x 3 blocks around, so its radius is at most `block`, and, displaced into
  a last block that the map cuts short (to one row), still hold a pixel of the map, so its radius
  is at least `block` - 1 (else that query's softmax would have no key). `block` defaults to
  `window_block_size(window)`.
  """
  batch, height, width, channels = q.shape
  num_refs = k.shape[1]
  block = block or window_block_size(window)
  if window // 2 > block:
    raise ValueError(f"a {window} x {window} window does not fit in the 3 x 3 blocks of side "
                     f"{block} around its block")
  if centres is not None and window // 2 < block - 1:
    raise ValueError(f"a {window} x {window} window displaced by blocks of side {block} can miss "
                     "the map: its radius must be at least the block's side - 1")
  nh, nw = -(-height // block), -(-width // block)
  padding = ((0, 0), (0, nh * block - height), (0, nw * block - width), (0, 0))
  queries = _split_heads(_to_blocks(jnp.pad(q, padding), block, nh, nw), num_heads)
  keys, values = (_neighbour_blocks(x, block, nh, nw) for x in (k, v))
  mask = window_mask(height, width, window, block)  # [nh, nw, b*b, 9*b*b]
  most_valid = num_refs * int(mask.sum(-1).max())
  if centres is None:
    mask = np.tile(mask, (1, 1, 1, num_refs))[None]
  else:  # Per reference and query block, its centre block's keys and window mask.
    keys, values = (_displaced(x.reshape(x.shape[:3] + (num_refs, -1, channels)), centres)
                    .reshape(x.shape) for x in (keys, values))
    # A key's place relative to the query pixel is the same in every block: the centre block's
    # mask is the displaced query's. [B, nh, nw, R, b*b, 9*b*b] -> [B, nh, nw, b*b, R*9*b*b]
    mask = jnp.asarray(mask.reshape((nh * nw,) + mask.shape[2:]))[centres]
    mask = jnp.moveaxis(mask, 3, 4).reshape((batch, nh, nw, block * block, -1))
  keys, values = (_split_heads(x, num_heads) for x in (keys, values))
  scale = (channels // num_heads) ** -0.5
  # float32 scores of the compute-dtype operands (docs/deviations.md, "bf16 is an option").
  scores = float32_product(functools.partial(jnp.einsum, "bijqhd,bijkhd->bijhqk"),
                           queries * jnp.asarray(scale, q.dtype), keys)
  keep = math.ceil(keep_ratio * num_refs * window * window)
  mask = top_k_mask(scores, mask[:, :, :, None], keep, most_valid)
  weights = _masked_softmax(scores, mask).astype(values.dtype)
  out = jnp.einsum("bijhqk,bijkhd->bijqhd", weights, values)
  out = out.reshape((batch, nh, nw, block, block, channels))
  out = jnp.moveaxis(out, 3, 2).reshape((batch, nh * block, nw * block, channels))
  return out[:, :height, :width]


class CrossAttention(nn.Module):
  """Projections q, k, v and `proj` around a multi-head attention.

  Dense (`window` = 0): queries [B, N, C] over context [B, M, C]; with `return_weights`,
  `(output, weights)`, the attention weights averaged over the heads [B, N, M]. Windowed
  (`window` = w > 0): query map [B, H, W, C] over reference maps [B, R, H, W, C]
  (`window_attention`, its windows displaced by `centres` over blocks of side `block`).
  """
  num_heads: int
  window: int = 0
  keep_ratio: float = 1.0
  dtype: Dtype = jnp.float32
  block: int | None = None
  return_weights: bool = False

  @nn.compact
  def __call__(self, queries: jax.Array, context: jax.Array, centres: jax.Array | None = None
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    dim = queries.shape[-1]

    def dense(name):
      return Dense(dim, kernel_init=dense_init, dtype=self.dtype, name=name)

    q, k, v = dense("q")(queries), dense("k")(context), dense("v")(context)
    if self.window:
      out = window_attention(q, k, v, window=self.window, num_heads=self.num_heads,
                             keep_ratio=self.keep_ratio, centres=centres, block=self.block)
    elif self.return_weights:
      out, weights = dense_attention_with_weights(q, k, v, self.num_heads)
      return dense("proj")(out), weights
    else:
      out = dense_attention(q, k, v, self.num_heads)
    return dense("proj")(out)
