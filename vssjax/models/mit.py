"""Mix Transformer (MiT-B0..B5), the SegFormer backbone (specs/dtern.md §2), NHWC.

Parameter paths mirror the mmseg state_dict keys (specs/dtern.md §10.1) so converters are a
renaming: `patch_embed{s}/{proj,norm}`, `block{s}_{j}/{norm1,attn/{q,kv,proj,sr,norm},norm2,
mlp/{fc1,dwconv,fc2}}`, stage norms `norm{s}` (s = 1..4). Every LayerNorm path contains "norm",
which the optimizer's weight-decay groups match on.

Epsilons are mmseg's: 1e-5 in the patch-embed and spatial-reduction norms, 1e-6 in the block and
stage norms. (HF transformers uses 1e-5 everywhere; the parity test pins its block norms to 1e-6.)
The attention/projection/MLP dropouts of the original are 0 in every SegFormer config and are not
implemented; stochastic depth is.
"""
import itertools
from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp
import numpy as np

from vssjax.errors import SetupError
from vssjax.models.layers import (Conv, Dense, DepthwiseConv, DropPath, conv_init, dense_init,
                                  gelu, layer_norm, remat_policy, run_block, TORCH_LAYER_NORM_EPS)
from vssjax.ops.attention import dot_product_attention


_WIDE = (64, 128, 320, 512)
_HEADS = (1, 2, 5, 8)
_SR = (8, 4, 2, 1)
MIT_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "b0": dict(embed_dims=(32, 64, 160, 256), num_heads=_HEADS, depths=(2, 2, 2, 2), sr_ratios=_SR),
    "b1": dict(embed_dims=_WIDE, num_heads=_HEADS, depths=(2, 2, 2, 2), sr_ratios=_SR),
    "b2": dict(embed_dims=_WIDE, num_heads=_HEADS, depths=(3, 4, 6, 3), sr_ratios=_SR),
    "b3": dict(embed_dims=_WIDE, num_heads=_HEADS, depths=(3, 4, 18, 3), sr_ratios=_SR),
    "b4": dict(embed_dims=_WIDE, num_heads=_HEADS, depths=(3, 8, 27, 3), sr_ratios=_SR),
    "b5": dict(embed_dims=_WIDE, num_heads=_HEADS, depths=(3, 6, 40, 3), sr_ratios=_SR),
}

PATCH_EMBED_EPS = TORCH_LAYER_NORM_EPS
BLOCK_EPS = 1e-6  # set by the release, in every block and after every stage


def _dense(features: int, dtype: Dtype, name: str) -> nn.Module:
  return Dense(features, kernel_init=dense_init, dtype=dtype, name=name)


class OverlapPatchEmbed(nn.Module):
  """Strided conv with explicit symmetric padding k // 2, then LayerNorm (eps 1e-5).

  `padding='SAME'` would pad asymmetrically at stride 2/4 and shift every feature by a pixel
  relative to the PyTorch weights, hence the explicit padding.
  """
  features: int
  patch_size: int
  stride: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad = self.patch_size // 2
    x = Conv(self.features, (self.patch_size,) * 2, strides=self.stride,
             padding=((pad, pad), (pad, pad)), kernel_init=conv_init, dtype=self.dtype,
             name="proj")(x)
    return layer_norm(PATCH_EMBED_EPS, "norm")(x)


class EfficientAttention(nn.Module):
  """Multi-head self-attention whose keys/values come from a `sr_ratio`-strided conv of the map.

  Input and output are NHWC maps; queries are every pixel, keys/values are the reduced map (cost
  N * N / sr^2). Heads are contiguous channel blocks, `kv` packs [keys; values] as in mmseg.
  `attention_impl` is `jax.nn.dot_product_attention`'s `implementation`: 'xla' (any device,
  any dtype; `ops.attention`'s form, whose gradient XLA:CPU runs faster) or 'cudnn' (NVIDIA GPUs,
  fp16/bf16: fused, the score matrix is never stored).
  """
  num_heads: int
  sr_ratio: int
  dtype: Dtype = jnp.float32
  attention_impl: Literal["xla", "cudnn"] = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    head_dim = channels // self.num_heads
    q = _dense(channels, self.dtype, "q")(x).reshape(batch, -1, self.num_heads, head_dim)
    context = x
    if self.sr_ratio > 1:
      context = Conv(channels, (self.sr_ratio,) * 2, strides=self.sr_ratio, padding="VALID",
                     kernel_init=conv_init, dtype=self.dtype, name="sr")(x)
      context = layer_norm(PATCH_EMBED_EPS, "norm")(context)
    kv = _dense(2 * channels, self.dtype, "kv")(context)
    kv = kv.reshape(batch, -1, 2, self.num_heads, head_dim)
    out = dot_product_attention(q, kv[:, :, 0], kv[:, :, 1], scale=head_dim ** -0.5,
                                implementation=self.attention_impl)
    out = out.reshape(batch, height, width, channels)
    return _dense(channels, self.dtype, "proj")(out)


class MixFFN(nn.Module):
  """fc1 (C -> ratio*C) -> depthwise 3x3 conv -> exact GELU -> fc2: the conv replaces pos-embeds."""
  mlp_ratio: int
  dwconv_impl: Literal["shifted", "grouped"] = "shifted"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    x = _dense(channels * self.mlp_ratio, self.dtype, "fc1")(x)
    x = DepthwiseConv(3, impl=self.dwconv_impl, dtype=self.dtype, name="dwconv")(x)
    x = gelu(x)
    return _dense(channels, self.dtype, "fc2")(x)


class Block(nn.Module):
  """Pre-norm transformer block: x += DropPath(Attn(LN(x))); x += DropPath(MixFFN(LN(x)))."""
  num_heads: int
  sr_ratio: int
  mlp_ratio: int
  drop_path: float
  dwconv_impl: Literal["shifted", "grouped"] = "shifted"
  dtype: Dtype = jnp.float32
  attention_impl: Literal["xla", "cudnn"] = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               drop_path: jax.Array | None = None) -> jax.Array:
    """`drop_path`, if given, replaces the field's rate (a traced one under `scan_blocks`)."""
    drop = DropPath(self.drop_path)
    y = layer_norm(BLOCK_EPS, "norm1")(x)
    attention = EfficientAttention(self.num_heads, self.sr_ratio, self.dtype, self.attention_impl,
                                   name="attn")
    x = x + drop(attention(y), train=train, rate=drop_path)
    y = layer_norm(BLOCK_EPS, "norm2")(x)
    y = MixFFN(self.mlp_ratio, self.dwconv_impl, self.dtype, name="mlp")(y)
    return x + drop(y, train=train, rate=drop_path)


def apply_as_scan(blocks: Sequence[Block], params: dict, rates: np.ndarray, x: jax.Array, *,
                  train: bool, rng: jax.Array | None, remat: str = "") -> jax.Array:
  """`blocks` (one stage's, alike but for their rates) applied in turn to `x` as one `lax.scan`
  over their parameters stacked, which XLA compiles once instead of once a block.

  `params` holds each block's own tree under its name, as the unrolled blocks keep them: the
  parameter tree and the checkpoints do not change, the stacking is a copy inside the program.
  With `rng` (training with stochastic depth), block i drops at `rates[i]` with the i-th key of a
  split of `rng`: the same distribution as the unrolled blocks, other draws. A `remat` policy
  rematerialises the body (`layers.run_block`).
  """
  block = blocks[0].clone(parent=None, name=None, drop_path=0.0)

  def scanned(body):
    if not remat:
      return body
    # A scan's iterations cannot be merged, so common subexpressions need no guard (JAX's advice).
    return jax.checkpoint(body, policy=remat_policy(remat), prevent_cse=False)

  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(params[b.name] for b in blocks))
  if rng is None:  # no stochastic depth
    def body(h, block_params):
      return block.apply({"params": block_params}, h, train=train), None
    return jax.lax.scan(scanned(body), x, stacked)[0]

  def dropping_body(h, inputs):
    block_params, rate, key = inputs
    return block.apply({"params": block_params}, h, train=train, drop_path=rate,
                       rngs={"dropout": key}), None
  keys = jax.random.split(rng, len(blocks))
  return jax.lax.scan(scanned(dropping_body), x,
                      (stacked, jnp.asarray(rates, jnp.float32), keys))[0]


class MixTransformer(nn.Module):
  """MiT backbone: `__call__(x [B,H,W,3], *, train) -> [c1, c2, c3, c4]` at strides 4/8/16/32.

  `dtype` is the compute dtype (params stay float32). Stochastic depth grows linearly from 0 to
  `drop_path_rate` over all blocks and needs a 'dropout' rng when `train` is true.
  `scan_blocks`: in training (`train=True`) each stage's blocks run as one `lax.scan`
  (`apply_as_scan`), compiled once rather than once a block (MiT-B5 has 40 in its third stage):
  the same parameters and outputs, a MiT-B5 train step that compiles ~3x faster. Prediction stays
  unrolled: its programs compile in seconds anyway, and the scan's stacking of the parameters, a
  copy each call, would slow them (docs/benchmarks.md).
  `remat` (a `layers.REMAT_POLICIES` name, '' for none): in training every block is
  rematerialised, its activations recomputed in the backward pass (`layers.run_block`).
  Any input size from 29x29 works (smaller ones leave a stage's map under its spatial-reduction
  window, `_check_input_size`); stage sizes follow torch's conv arithmetic (e.g. 67x93 -> 17x24,
  9x12, 5x6, 3x3).
  """
  embed_dims: Sequence[int]
  num_heads: Sequence[int]
  depths: Sequence[int]
  sr_ratios: Sequence[int]
  mlp_ratio: int = 4
  drop_path_rate: float = 0.1
  dtype: Dtype = jnp.float32
  dwconv_impl: Literal["shifted", "grouped"] = "shifted"
  attention_impl: Literal["xla", "cudnn"] = "xla"
  scan_blocks: bool = False
  remat: str = ""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, shallow_blocks: int | None = None,
               shallow_only: bool = False, stages: int = 4):
    """-> [c1, c2, c3, c4]; with `shallow_blocks=n` -> ([c1..c4], shallow).

    `shallow` is the stage-1 token map after its first n blocks, before the stage norm (DCFM's
    independent feature, specs/dcfm.md §1.1). `shallow_only` stops there and returns `shallow`
    alone: the deeper layers neither run nor need their parameters. `stages=n` runs the first n
    stages alone and returns their features [c1..cn] (a streaming predictor's cheap frames).
    """
    if shallow_only and shallow_blocks is None:
      raise ValueError("shallow_only needs shallow_blocks")
    if not 1 <= stages <= 4 or (stages < 4 and shallow_blocks is not None):
      raise ValueError(f"stages must be in [1, 4] (and 4 with shallow_blocks), got {stages}")
    if shallow_blocks is not None and not 0 <= shallow_blocks <= self.depths[0]:
      raise ValueError(f"shallow_blocks must be in [0, {self.depths[0]}], got {shallow_blocks}")
    _check_input_size(x.shape[1:3], self.sr_ratios)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    x = x.astype(self.dtype)
    features = []
    shallow = None
    block_index = 0
    for stage in range(stages):
      first = stage == 0
      x = OverlapPatchEmbed(self.embed_dims[stage], 7 if first else 3, 4 if first else 2,
                            self.dtype, name=f"patch_embed{stage + 1}")(x)
      depth = self.depths[stage]
      stage_rates = rates[block_index:block_index + depth]
      blocks = [Block(self.num_heads[stage], self.sr_ratios[stage], self.mlp_ratio,
                      float(stage_rates[j]), self.dwconv_impl, self.dtype, self.attention_impl,
                      name=f"block{stage + 1}_{j}") for j in range(depth)]
      block_index += depth
      # Initialisation creates the parameters block by block; DCFM's shallow feature is taken
      # between two blocks of the first stage, which therefore runs them one by one.
      if (self.scan_blocks and train and depth > 1 and not self.is_initializing()
          and not (first and shallow_blocks is not None)):
        dropping = stage_rates.max() > 0.0
        x = apply_as_scan(blocks, self.variables["params"], stage_rates, x, train=True,
                          rng=self.make_rng("dropout") if dropping else None, remat=self.remat)
      else:
        for j, block in enumerate(blocks):
          if first and j == shallow_blocks:
            shallow = x
            if shallow_only:
              return shallow
          x = run_block(block, x, train=train, remat=self.remat)
      if first and shallow_blocks == self.depths[0]:
        shallow = x
        if shallow_only:
          return shallow
      x = layer_norm(BLOCK_EPS, f"norm{stage + 1}")(x)
      features.append(x)
    return features if shallow_blocks is None else (features, shallow)


def _stage_sizes(size: int) -> list[int]:
  """A side of each stage's map for an input side `size`: the patch embeddings' strides 4, 2, 2, 2
  with 'same'-like padding (kernel 7 padding 3, kernel 3 padding 1) round up."""
  sides = [-(-size // 4)]
  for _ in range(3):
    sides.append(-(-sides[-1] // 2))
  return sides


def _check_input_size(input_hw: tuple[int, int], sr_ratios: Sequence[int]) -> None:
  """Refuses an input whose map at some stage is smaller than that stage's spatial-reduction
  window (stage 1's 8x8 on 1/4 of the input): the reduction's 'VALID' conv left no key, and the
  attention failed deep in a trace ("zero-size array to reduction operation max")."""
  for side in input_hw:
    for stage, (map_side, ratio) in enumerate(zip(_stage_sizes(side), sr_ratios), start=1):
      if map_side < ratio:
        smallest = next(size for size in itertools.count(1)
                        if all(s >= r for s, r in zip(_stage_sizes(size), sr_ratios)))
        raise SetupError(
            f"a {input_hw[0]}x{input_hw[1]} input is too small for the MiT: its stage-{stage} map "
            f"({map_side} a side) is smaller than that stage's {ratio}x{ratio} spatial "
            f"reduction; the MiT takes inputs of at least {smallest}x{smallest} (the training "
            "crop, the evaluation size, a sliding window, bench.input_size)")


def mit(variant: str, **overrides: Any) -> MixTransformer:
  """MiT-`variant` ('b0'..'b5'); `overrides` replace any field (e.g. depths, dtype, dwconv_impl)."""
  if variant not in MIT_VARIANTS:
    raise SetupError(f"unknown MiT variant {variant!r}; choose from {sorted(MIT_VARIANTS)}")
  return MixTransformer(**{**MIT_VARIANTS[variant], **overrides})
