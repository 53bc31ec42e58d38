"""Layers shared by backbones, heads and methods, with PyTorch numerics pinned.

Everything here mirrors a PyTorch module whose checkpoints we load (depthwise `nn.Conv2d`,
`nn.BatchNorm2d`, mmcv `ConvModule`, timm `DropPath`), keeping parameter shapes convertible and
the forward numerics identical in eval mode. NHWC layout throughout.

Initialisers: training from scratch starts where the original does, so each layer takes the init
its original gets. mmseg-style code (MiT, ConvModule, ResNet) uses `dense_init` / `conv_init`;
layers the originals leave alone get PyTorch's `reset_parameters` default,
`torch_default_init`. Converted checkpoints overwrite all of them.
"""
import functools
from collections.abc import Callable
from typing import Literal

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp
import numpy as np

from vssjax.ops import conv as conv_ops
from vssjax.ops import depthwise as depthwise_ops
from vssjax.ops.mixed_precision import add_bias, float32_product

Initializer = Callable[..., jax.Array]

# ImageNet statistics in RGB order, on the 0..255 scale (mmseg/HF `img_norm_cfg`).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# mmseg initialisers: trunc-normal(0.02) Linear weights, He fan-out normal for convolutions.
# timm's `trunc_normal_(std=.02)` (MiT, GTEM) truncates at +-2 in absolute value, i.e. 100 std: a
# plain N(0, 0.02). Flax's `truncated_normal(0.02)` would cut at +-2 std and give std 0.0176.
dense_init = nn.initializers.normal(stddev=0.02)
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# PyTorch's default `nn.Conv2d` / `nn.Linear` weight, kaiming_uniform_(a=sqrt 5): U(-b, b) with
# b = 1/sqrt(fan_in), fan_in = in_channels / groups * kh * kw. Variance scaling reads that fan-in
# off the kernel shape ([kh, kw, in / groups, out] or [in, out]); uniform with variance
# 1 / (3 fan_in) has exactly that bound.
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Initializer:
  """PyTorch's default `nn.Conv2d` / `nn.Linear` bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The bound is the kernel's fan-in (`torch_kernel_init`'s), which a Flax bias initialiser cannot
  see (it gets the bias shape only), so the layer's builder passes it in.
  """
  bound = 1.0 / np.sqrt(fan_in)

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_default_init(fan_in: int) -> dict[str, Initializer]:
  """`kernel_init` and `bias_init` of a layer PyTorch initialises by default (`nn.Conv2d`,
  `nn.Linear`) whose kernel has fan-in `fan_in`: pass as `**torch_default_init(fan_in)`."""
  return {"kernel_init": torch_kernel_init, "bias_init": torch_bias_init(fan_in)}


class WithBias(nn.Module):
  """A bias-free `nn.Dense` or `nn.Conv` (`layer`) and its bias, added by `add_bias`: in bf16 the
  bias's gradient is summed in float32 (`ops.mixed_precision`), which Flax's own bias add does not
  do. The bias is declared in the layer's own scope (`nn.share_scope`), after its kernel, so the
  parameters are those of the layer with `use_bias=True`: the same tree, checkpoints and initial
  values. Built by `Conv` and `Dense`; unnamed in a compact method it would be `WithBias_<i>`, not
  `Conv_<i>`, so every one is named (or assigned in `setup`)."""
  layer: nn.Module
  bias_init: Initializer = nn.initializers.zeros
  param_dtype: Dtype = jnp.float32

  def setup(self):
    nn.share_scope(self, self.layer)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.layer(x)
    return add_bias(y, self.param("bias", self.bias_init, y.shape[-1:], self.param_dtype))


def Conv(features: int, kernel_size, *args, use_bias: bool = True,  # pylint: disable=invalid-name
         bias_init: Initializer = nn.initializers.zeros, name: str | None = None,
         **conv_kwargs) -> nn.Module:
  """`nn.Conv(features, kernel_size, ...)` as every conv in vssjax runs: kernel == stride
  convolutions (1x1, patchify) as reshape + matmul, 2.5x faster on XLA:CPU (vssjax/ops/conv.py),
  and its bias through `WithBias`. Same arguments and parameters as `nn.Conv`; name it (or assign
  it in `setup`), as `WithBias` says."""
  conv = functools.partial(nn.Conv, features, kernel_size, *args,
                           conv_general_dilated=conv_ops.conv_general_dilated, **conv_kwargs)
  return _with_bias(conv, use_bias, bias_init, conv_kwargs.get("param_dtype", jnp.float32), name)


def Dense(features: int, *args, use_bias: bool = True,  # pylint: disable=invalid-name
          bias_init: Initializer = nn.initializers.zeros, name: str | None = None,
          **dense_kwargs) -> nn.Module:
  """`nn.Dense(features, ...)` with its bias through `WithBias`; same arguments and parameters;
  name it (or assign it in `setup`)."""
  return _with_bias(functools.partial(nn.Dense, features, *args, **dense_kwargs), use_bias,
                    bias_init, dense_kwargs.get("param_dtype", jnp.float32), name)


def _with_bias(layer: Callable[..., nn.Module], use_bias: bool, bias_init: Initializer,
               param_dtype: Dtype, name: str | None) -> nn.Module:
  if not use_bias:
    return layer(use_bias=False, name=name)
  return WithBias(layer(use_bias=False, parent=None), bias_init, param_dtype, name=name)


def normalize_images(frames: jax.Array, dtype: Dtype = jnp.float32) -> jax.Array:
  """uint8 RGB frames `[..., H, W, 3]` -> ImageNet-normalised floats of `dtype`.

  The arithmetic is float32 whatever `dtype` is, so bf16 models see the same rounded inputs.
  """
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return ((frames.astype(jnp.float32) - mean) / std).astype(dtype)


def flatten_time(x: jax.Array) -> jax.Array:
  """[B, T, ...] -> [B*T, ...] (clip-major, time innermost), as the frames of clips go through a
  per-frame network (the backbone, a head's per-frame branch) and their labels into its loss."""
  return x.reshape((-1,) + x.shape[2:])


def unflatten_time(x: jax.Array, batch: int) -> jax.Array:
  """[B*T, ...] -> [B, T, ...]: `flatten_time`'s inverse, per-frame outputs back into clips.

  A clip's frames stay adjacent in between, so a step whose batch is split over devices keeps each
  clip's frames and their outputs on its device; the halves of `concatenate([x[:, 0], x[:, 1]])`
  would move them between devices (tests/methods/test_dcfm.py, test_etc.py)."""
  return x.reshape((batch, -1) + x.shape[1:])


def gelu(x: jax.Array) -> jax.Array:
  """torch's exact `nn.GELU()`: x/2 (1 + erf(x/sqrt 2)), computed in float32, in x's dtype.

  This is the formula of torch's CPU and CUDA kernels, which also compute bf16 in float32.
  `jax.nn.gelu(approximate=False)` uses erfc(-x/sqrt 2) instead: ~2.5x the time of this on
  XLA:CPU (erfc is the costlier polynomial), and in bf16 up to one bf16 ulp away from torch.
  """
  x32 = x.astype(jnp.float32)
  return (0.5 * x32 * (1.0 + jax.lax.erf(x32 * np.float32(np.sqrt(0.5))))).astype(x.dtype)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """torch's `F.normalize(x, p=2, dim=axis, eps=eps)`: x / max(||x||_2, eps), in x's dtype.

  A zero vector stays zero; one shorter than `eps` comes out with length ||x|| / eps < 1.
  The norm and the division are computed in float32 whatever x's dtype, then cast back.
  """
  x32 = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=axis, keepdims=True))
  return (x32 / jnp.maximum(norm, eps)).astype(x.dtype)


def inner_product(x: jax.Array, y: jax.Array) -> jax.Array:
  """Inner product over the last axis (broadcasting the others), as a contraction (`einsum`) and
  not `sum(x * y, -1)`: XLA:CPU ran that reduction of a broadcast product 35x slower (44 vs
  1.3 ms for DTERN's [1, 14400, 200] cluster logits against a [200] prompt)."""
  return jnp.einsum("...e,...e->...", x, y)


def cosine_similarity(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Cosine over the last axis as torch 1.7's `F.cosine_similarity`, which the DTERN release ran:
  a.b / max(|a| |b|, eps), one floor on the product of the norms. Broadcasts the leading axes,
  as torch's does. In float32 at least, whatever the operands' dtype: torch's autocast runs
  `cosine_similarity` in float32 (a bfloat16 one was up to 0.01 off on DTERN's exemplar gate).
  Generic (DTERN's exemplar gate, SD-CPC's static difference)."""
  a, b = (v.astype(jnp.promote_types(v.dtype, jnp.float32)) for v in (a, b))
  norms = jnp.sqrt(inner_product(a, a) * inner_product(b, b))
  return inner_product(a, b) / jnp.maximum(norms, eps)


TORCH_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default


def layer_norm(epsilon: float, name: str | None = None) -> nn.LayerNorm:
  """A LayerNorm with torch's two-pass variance (flax's fast E[x^2]-E[x]^2 loses precision),
  computed and returned in float32 whatever the compute dtype, as under torch's CUDA autocast
  (whose float32 list holds `layer_norm`): with bf16 compute the residual stream that a pre-norm
  block adds its bf16 branches to stays float32, and the layers after the norm round its output
  to bf16 as they take it (docs/benchmarks.md, "bf16 programs"). `name` inside compact methods; in
  `setup` the attribute names it."""
  return nn.LayerNorm(epsilon=epsilon, dtype=jnp.float32, use_fast_variance=False, name=name)


def _depthwise_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32
                   ) -> jax.Array:
  """He fan-out normal as mmseg computes it for groups=C: fan_out = kh * kw (not kh * kw * C)."""
  std = np.sqrt(2.0 / (shape[0] * shape[1]))
  return std * jax.random.normal(key, shape, dtype)


class DepthwiseConv(nn.Module):
  """Stride-1 depthwise conv with symmetric `k // 2` padding (torch `groups=C`, `padding=k//2`).

  Two implementations share ONE parameter layout (kernel `[kh, kw, 1, C]`, bias `[C]`, the Flax
  image of torch's `[C, 1, kh, kw]`), so checkpoints are interchangeable:
  - 'shifted': kh*kw shifted multiply-adds over a zero-padded input, with a hand-written gradient
    (`vssjax/ops/depthwise.py`). On XLA:CPU this is ~30x faster than the grouped conv
    (notes/jax_stack.md §6).
  - 'grouped': `lax.conv_general_dilated(feature_group_count=C)`; cuDNN-friendly on GPU.

  Init defaults to mmseg's (MiT's DWConv): He fan-out normal kernel, zero bias. Callers that
  apply several depth-wise convs as one (DTERN's CAM) declare the weights with
  `DepthwiseWeights` instead: the same variables.
  """
  kernel_size: int | tuple[int, int] = 3
  use_bias: bool = True
  impl: Literal["shifted", "grouped"] = "shifted"
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = _depthwise_init
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias = _declare_depthwise(self, x.shape[-1])
    return depthwise_conv(x, kernel, bias, self.impl, self.dtype)


class DepthwiseWeights(nn.Module):
  """Declares a `DepthwiseConv`'s kernel `[kh, kw, 1, C]` and bias `[C]` without applying them
  (same names, shapes and initialisers, hence the same parameter tree and checkpoints), for
  modules that combine several depth-wise convs into one (DTERN's CAM, `dwconv_sum`).
  `__call__(channels) -> (kernel, bias or None)`."""
  kernel_size: int | tuple[int, int] = 3
  use_bias: bool = True
  kernel_init: Initializer = _depthwise_init
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, channels: int) -> tuple[jax.Array, jax.Array | None]:
    return _declare_depthwise(self, channels)


def _declare_depthwise(module: DepthwiseConv | DepthwiseWeights, channels: int
                       ) -> tuple[jax.Array, jax.Array | None]:
  """The kernel and bias of a depth-wise conv, declared in `module`'s (compact) scope."""
  size = module.kernel_size
  kh, kw = (size, size) if isinstance(size, int) else tuple(size)
  kernel = module.param("kernel", module.kernel_init, (kh, kw, 1, channels))
  bias = module.param("bias", module.bias_init, (channels,)) if module.use_bias else None
  return kernel, bias


def depthwise_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None,
                   impl: Literal["shifted", "grouped"], dtype: Dtype) -> jax.Array:
  """`DepthwiseConv`'s computation on given weights (kernel `[kh, kw, 1, C]`, odd kh and kw for
  torch's symmetric `k // 2` padding to keep the size)."""
  kh, kw = kernel.shape[:2]
  kernel = kernel.astype(dtype)
  x = x.astype(dtype)
  pads = ((kh // 2, kh // 2), (kw // 2, kw // 2))
  if impl == "shifted":
    y = depthwise_ops.shifted_depthwise(x, kernel, pads)
  elif impl == "grouped":
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding=pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])
  else:
    raise ValueError(f"unknown depthwise conv impl {impl!r}")
  return y if bias is None else add_bias(y, bias)


class BatchNorm(nn.Module):
  """`torch.nn.BatchNorm2d` over the last axis, including its running-variance update.

  Differs from `flax.linen.BatchNorm` in what torch checkpoints rely on: the running variance is
  updated with the UNBIASED batch variance (n / (n - 1)), while the normalisation uses the biased
  one. Statistics (two-pass variance) and the normalisation are computed in float32, the output
  rounded once to `dtype`. `momentum` is Flax-style (the weight of the old value): torch's
  default 0.1 is 0.9 here. Under `jit` with a data-sharded batch the mean is global, i.e.
  SyncBN. Variables: params {scale, bias}, batch_stats {mean, var}.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,))
    bias = self.param("bias", nn.initializers.zeros, (features,))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    if train:
      x32 = x.astype(jnp.float32)
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if not self.is_initializing():
        count = x.size // features
        unbiased = var * (count / max(count - 1, 1))
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    # In float32, rounded once to the compute dtype, as torch's (cuDNN's) batch norm of bf16
    # inputs: a bf16 x * mul would be rounded before the add that cancels the mean.
    return (x.astype(jnp.float32) * mul + (bias - mean * mul)).astype(self.dtype)


def torch_conv(features: int, kernel_size: int, *, stride: int = 1, dilation: int = 1,
               groups: int = 1, kernel_init: Initializer = conv_init, dtype: Dtype, name: str
               ) -> nn.Conv:
  """A bias-free torch `Conv2d` of odd `kernel_size` and its usual padding, `dilation *
  (kernel_size // 2)` on every side (the output keeps the input's grid, divided by `stride`)."""
  pad = dilation * (kernel_size // 2)
  return Conv(features, (kernel_size, kernel_size), strides=stride, padding=((pad, pad),) * 2,
              kernel_dilation=dilation, feature_group_count=groups, use_bias=False,
              kernel_init=kernel_init, dtype=dtype, name=name)


class ConvBNAct(nn.Module):
  """mmcv `ConvModule`: conv (no bias) -> BatchNorm -> activation; children `conv`, `bn`.

  The conv starts as ConvModule's (He fan-out normal) unless `kernel_init` says otherwise, e.g.
  `torch_kernel_init` for a plain torch conv + BN + ReLU (semseg's PSPNet head).
  """
  features: int
  kernel_size: int = 1
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = conv_init

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = torch_conv(self.features, self.kernel_size, kernel_init=self.kernel_init, dtype=self.dtype,
                   name="conv")(x)
    x = BatchNorm(dtype=self.dtype, name="bn")(x, train=train)
    return self.activation(x)


def channel_matmul(x: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
  """`x [..., C] @ kernel [C, D]` in the compute `dtype` with a float32 result, for modules that
  sum several such products and round once (the folded SegFormer head, DCFM's split FFM). Its
  gradients are computed in `dtype` (`ops.mixed_precision`)."""
  return float32_product(conv_ops.matmul_last_axis, x.astype(dtype), kernel.astype(dtype))


class LinearWeights(nn.Module):
  """Declares the kernel (and bias) of a Dense or 1x1 conv without applying it, for modules that
  apply it in pieces (folded, or split over concatenated inputs); same names, shapes and
  initialisers as `nn.Dense` / `nn.Conv`, hence the same parameter tree, checkpoints and initial
  values."""
  shape: tuple[int, ...]
  kernel_init: Initializer = nn.linear.default_kernel_init
  use_bias: bool = True
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array | None]:
    kernel = self.param("kernel", self.kernel_init, self.shape)
    bias = self.param("bias", self.bias_init, self.shape[-1:]) if self.use_bias else None
    return kernel, bias


class Dropout(nn.Dropout):
  """`nn.Dropout` whose kept values are scaled in float32 and rounded once to the input's dtype:
  Flax's divides a bf16 input by the keep probability in bf16 (0.9 is 0.8984375 there: every kept
  value 0.18% too large), where torch's kernel scales in float32, as `DropPath` does. The same
  draws; float32 inputs give what `nn.Dropout` gives. Named after its parent class, so unnamed in
  a compact method it is `Dropout_<i>`, with the same random stream as before."""

  def __call__(self, inputs: jax.Array, deterministic: bool | None = None,
               rng: jax.Array | None = None) -> jax.Array:
    if nn.merge_param("deterministic", self.deterministic, deterministic) or self.rate == 0:
      return inputs
    compute = jnp.promote_types(inputs.dtype, jnp.float32)
    return super().__call__(inputs.astype(compute), deterministic, rng).astype(inputs.dtype)


def dropout2d(rate: float, name: str | None = None) -> Dropout:
  """torch's `nn.Dropout2d` on NHWC maps: one keep/drop decision per (sample, channel), shared
  over H and W ('dropout' rng). No parameters, so named as before: in compact methods `name` None
  gives Flax's automatic `Dropout_<i>`, and with it the same random stream."""
  return Dropout(rate, broadcast_dims=(-3, -2), name=name)


# `jax.checkpoint_policies` that `model.remat` may name: what a block keeps of its forward pass
# for the backward one, the rest recomputed ('nothing_saveable': only the block's input).
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


def run_block(block: nn.Module, x: jax.Array, *, train: bool, remat: str) -> jax.Array:
  """`block(x, train=train)`; in training with a `remat` policy (`REMAT_POLICIES`, '' for none)
  the block is rematerialised: its activations are recomputed in the backward pass instead of
  kept, so that a train step need not hold every block's at once, for about one more forward pass
  of compute (XLA:CPU runs an unrolled block's recomputation early and holds as much: scanned
  blocks save there, docs/scaling.md). Same parameters, outputs, gradients and dropout draws.
  Outside training there is no backward pass, and the block runs as it is."""
  if not (train and remat):
    return block(x, train=train)
  # A function of the block rather than the block's class: `train` stays a Python bool, which
  # `nn.remat` would otherwise trace.
  recomputed = nn.remat(lambda module, inputs: module(inputs, train=True),
                        policy=remat_policy(remat))
  return recomputed(block, x)


def remat_policy(name: str) -> Callable[..., bool]:
  """The `jax.checkpoint_policies` policy `name`, one of `REMAT_POLICIES`."""
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat policy must be one of {REMAT_POLICIES}, got {name!r}")
  return getattr(jax.checkpoint_policies, name)


class DropPath(nn.Module):
  """Stochastic depth: drops a whole residual branch per sample (train only, 'dropout' rng).

  `rate` of the call, if given, replaces the field's: a traced scalar where the blocks holding it
  run as the body of a `lax.scan` (`MixTransformer.scan_blocks`), each block at its own rate.
  """
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, rate: jax.Array | None = None) -> jax.Array:
    if not train:
      return x
    if rate is None:
      if self.rate == 0.0:
        return x
      rate = self.rate
    keep_prob = 1.0 - rate  # float32: the draw's dtype (`bernoulli` draws in p's)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
    # timm 0.3's `x.div(keep_prob)`, as torch's CUDA kernel divides by a scalar: x times the
    # float32 reciprocal, in float32, rounded to x's dtype once (dividing by a bfloat16 keep_prob
    # scaled by 1/0.8984 for 1/0.9: every kept branch 0.2% too large).
    compute = jnp.promote_types(x.dtype, jnp.float32)
    scale = jnp.float32(1) / jnp.asarray(keep_prob, jnp.float32)
    return jnp.where(keep, (x.astype(compute) * scale).astype(x.dtype), jnp.zeros_like(x))
