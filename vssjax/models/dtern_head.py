"""DTERN decode head (specs/dtern.md §3-4), NHWC, parameter paths mirroring the mmseg key tree.

`DTERNHead` = mmseg's `SegFormerHead_clips2_DTERN_ensemble4`: the SegFormer MLP branch on every
frame of the clip plus the DTERN branch (multi-level fusion to 1/8, two LTEM layers, GTEM) on the
target, fused by `linear_pred1`. Torch `a.b.0.c` keys become Flax paths `a/b_0/c` (the MiT
convention); the SegFormer branch shares the head's scope, so `decode_head.linear_c1` is
`decode_head/linear_c1` here too.

Entries the release saves but never uses (`conv_seg`, `clustering.norm1`, layer 0's prompts and
transforms) are created so the checkpoint tree and the parameter count match; they get no gradient.

Init as the release's (specs/dtern.md §7), for training from scratch: mmcv ConvModules (the
fusion convs, GTEM's projections) He fan-out normal; GTEM's Linears and FCC/VCC trunc-normal 0.02
with zero biases; `conv_seg` N(0, 0.01) (mmseg's `BaseDecodeHead`). LTEM (`Cluster_layer`, its
CAM, Mlp and DWConvs) and `linear_pred1` have no init hook, so they keep PyTorch's nn.Conv2d /
nn.Linear default, U(+-1/sqrt(fan_in)) for weights and biases (`layers.torch_default_init`).
"""
import functools
from collections.abc import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import (BatchNorm, Conv, ConvBNAct, Dense, DepthwiseConv,
                                  DepthwiseWeights, cosine_similarity, dense_init, depthwise_conv,
                                  dropout2d, flatten_time, gelu, inner_product, l2_normalize,
                                  layer_norm, torch_default_init, TORCH_LAYER_NORM_EPS)
from vssjax.models.segformer_head import SegFormerBranch
from vssjax.ops.attention import dot_product_attention, softmax
from vssjax.ops.mixed_precision import broadcast_add, float32_product
from vssjax.ops.resize import resize_bilinear


LTEM_HEADS = (2, 4)  # attention heads of the two LTEM layers (the release's [2, 4, 8, 16][:2])
MLP_RATIO = 4


def _conv(x: jax.Array, features: int, kernel: tuple[int, int], name: str, dtype: Dtype, *,
          use_bias: bool = True) -> jax.Array:
  """`x` through a stride-1 conv with torch's symmetric `k // 2` padding, initialised as
  torch's nn.Conv2d (LTEM's convs have no init hook)."""
  pads = ((kernel[0] // 2, kernel[0] // 2), (kernel[1] // 2, kernel[1] // 2))
  fan_in = x.shape[-1] * kernel[0] * kernel[1]
  return Conv(features, kernel, padding=pads, use_bias=use_bias, **torch_default_init(fan_in),
              dtype=dtype, name=name)(x)


def _dwconv(kernel: tuple[int, int], name: str, impl: str, dtype: Dtype) -> DepthwiseConv:
  """A depth-wise conv initialised as torch's nn.Conv2d(groups=C): fan-in kh * kw."""
  return DepthwiseConv(kernel, impl=impl, dtype=dtype,
                       **torch_default_init(kernel[0] * kernel[1]), name=name)


def _dwconv_weights(size: int, channels: int, name: str) -> tuple[jax.Array, jax.Array]:
  """The (kernel, bias) of a size x size `_dwconv`, declared but not applied."""
  return DepthwiseWeights((size, size), **torch_default_init(size * size), name=name)(channels)


def _dense(features: int, fan_in: int, dtype: Dtype, name: str | None = None) -> nn.Module:
  """A Dense initialised as torch's nn.Linear (LTEM's Linears have no init hook)."""
  return Dense(features, **torch_default_init(fan_in), dtype=dtype, name=name)


def normalized_dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """`F.normalize(a, dim=-1) @ F.normalize(b)`: each vector divided by max(its norm, 1e-12),
  then their dot product; LTEM's prompt masks take the cosine this way, its exemplar gate with
  `cosine_similarity` (the release uses both). They differ by rounding, and where a norm
  product falls below 1e-8. The unit vectors are computed in float32 (`l2_normalize`) and the
  product in the inputs' dtype, as under torch's autocast (float32 `norm`, bf16 matmul)."""
  return inner_product(l2_normalize(a), l2_normalize(b))


def dwconv_sum(x: jax.Array, weights: Sequence[tuple[jax.Array, jax.Array]], impl: str,
               dtype: Dtype) -> jax.Array:
  """x + sum_i DWConv_i(x) for odd square kernels of several sizes, as ONE depth-wise conv: the
  kernels zero-padded to the largest size and summed, plus 1 at the centre tap for `x` itself.

  Equal to the release's sum of separate convs (torch's k // 2 padding centres every kernel on
  the same pixel) up to float rounding, at the largest kernel's cost: 169 instead of 420
  multiply-adds per pixel and channel for the (13, 11, 9, 7) kernels.
  """
  size = max(kernel.shape[0] for kernel, _ in weights)
  if any(kernel.shape[0] % 2 == 0 or kernel.shape[0] != kernel.shape[1] for kernel, _ in weights):
    raise ValueError(f"CAM kernels must be odd and square, got "
                     f"{[kernel.shape[:2] for kernel, _ in weights]}")
  combined = jnp.zeros((size, size, 1, x.shape[-1]), jnp.float32).at[size // 2, size // 2].set(1.0)
  for kernel, _ in weights:
    pad = (size - kernel.shape[0]) // 2
    combined = combined + jnp.pad(kernel, ((pad, pad), (pad, pad), (0, 0), (0, 0)))
  bias = sum(bias for _, bias in weights)
  return depthwise_conv(x, combined, bias, impl, dtype)


class CAM(nn.Module):
  """Cluster-assignment block: local multi-kernel depth-wise context gated by an H/W excitation."""
  kernels: Sequence[int]
  dwconv_impl: str = "shifted"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    dim, dt = x.shape[-1], self.dtype

    def dwconv(kernel, name):
      return _dwconv(kernel, name, self.dwconv_impl, dt)

    x1 = gelu(_conv(x, dim, (1, 1), "conv1_1_0", dt))
    x2 = dwconv((3, 3), "conv1_2_2")(gelu(_conv(x, dim, (1, 1), "conv1_2_0", dt)))
    local = dwconv_sum(x1, [_dwconv_weights(kernel, dim, f"conv2_{i}_0")
                            for i, kernel in enumerate(self.kernels, start=1)],
                       self.dwconv_impl, dt)
    local = _conv(local, dim, (1, 1), f"conv2_{len(self.kernels) + 1}_0", dt)
    local = gelu(BatchNorm(dtype=dt, name=f"conv2_{len(self.kernels) + 1}_1")(local, train=train))
    # Row and column descriptors (means over H resp. W), each convolved along the other axis.
    g_h = _conv(x2.mean(axis=-3, keepdims=True), dim, (1, 3), "conv3_1_0", dt, use_bias=False)
    g_h = BatchNorm(dtype=dt, name="conv3_1_1")(g_h, train=train)
    g_w = _conv(x2.mean(axis=-2, keepdims=True), dim, (3, 1), "conv3_2_0", dt, use_bias=False)
    g_w = BatchNorm(dtype=dt, name="conv3_2_1")(g_w, train=train)
    # Each descriptor's gradient sums over the axis it is broadcast along: in float32.
    descriptors = broadcast_add(g_h, g_w)
    glob = dwconv((11, 1), "excite_2")(gelu(dwconv((1, 11), "excite_0")(descriptors)))
    out = _conv(local * jax.nn.sigmoid(glob) + local, dim, (1, 1), "conv_0", dt)
    return gelu(BatchNorm(dtype=dt, name="conv_1")(out, train=train))


class ClusterBlock(nn.Module):
  """`Cluster_Block`: CAM then a bias-free 1x1 conv to K assignment logits per pixel."""
  num_clusters: int
  kernels: Sequence[int]
  dwconv_impl: str = "shifted"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, maps: jax.Array, *, train: bool) -> jax.Array:
    if self.is_initializing():  # saved by the release, never applied
      layer_norm(TORCH_LAYER_NORM_EPS, "norm1")(maps[..., :1, :1, :])
    x = CAM(self.kernels, self.dwconv_impl, self.dtype, name="cam")(maps, train=train)
    return _conv(x, self.num_clusters, (1, 1), "Clustering_0", self.dtype, use_bias=False)


class DepthwiseMlp(nn.Module):
  """fc1 -> 3x3 depth-wise conv on the pixel grid -> GELU -> fc2 (tokens laid out as maps)."""
  dwconv_impl: str = "shifted"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dim = x.shape[-1]
    y = _dense(dim * MLP_RATIO, dim, self.dtype, "fc1")(x)
    y = _dwconv((3, 3), "dwconv", self.dwconv_impl, self.dtype)(y)
    return _dense(dim, dim * MLP_RATIO, self.dtype, "fc2")(gelu(y))


class LTEMLayer(nn.Module):
  """`Cluster_layer`: soft per-frame exemplars, temporal gating, exemplar attention (FEM).

  `__call__(target [B,h,w,E], refs [B,R,h,w,E], prev_logits, *, train)` ->
  (refined target [B,h,w,E], assignment logits [B, (R+1)*h*w, K] with time outer).
  Its two halves: `assign` (each frame's assignment logits and exemplar centers: per frame, given
  the frame's logits of the previous layer) and `refine` (the target against its own centers and
  the references'), so that a streaming predictor can keep the references' centers.
  """
  num_clusters: int
  num_heads: int
  kernels: Sequence[int]
  embed_dim: int
  dwconv_impl: str = "shifted"
  dtype: Dtype = jnp.float32

  def setup(self):
    k, dim = self.num_clusters, self.embed_dim
    self.clustering = ClusterBlock(k, self.kernels, self.dwconv_impl, self.dtype)
    self.sim_beta = self.param("sim_beta", nn.initializers.zeros, (1,))
    self.sim_alpha = self.param("sim_alpha", nn.initializers.ones, (1,))
    # Prompt-masked K x K transforms, created in both layers and applied in layer 1 only.
    self.prompt1 = self.param("prompt1", nn.initializers.normal(1.0), (k,))
    self.top_down_transform1 = self.param("top_down_transform1", lambda _, s: jnp.eye(s[0]),
                                          (k, k))
    self.prompt2 = self.param("prompt2", nn.initializers.normal(1.0), (k,))
    self.top_down_transform2 = self.param("top_down_transform2", lambda _, s: jnp.eye(s[0]),
                                          (k, k))
    # One LayerNorm, used three times (post-norm).
    self.norm1 = layer_norm(TORCH_LAYER_NORM_EPS)
    self.mlp = DepthwiseMlp(self.dwconv_impl, self.dtype)
    self.q, self.k, self.v, self.proj = [_dense(dim, dim, self.dtype) for _ in range(4)]

  def __call__(self, target: jax.Array, refs: jax.Array, prev_logits: jax.Array | None, *,
               train: bool) -> tuple[jax.Array, jax.Array]:
    frames = jnp.concatenate([refs, target[:, None]], axis=1)  # [B, T, h, w, E], target last
    logits, centers = self.assign(frames, prev_logits, train=train)
    return self.refine(target, centers[:, -1], centers[:, :-1]), logits

  def assign(self, frames: jax.Array, prev_logits: jax.Array | None, *, train: bool
             ) -> tuple[jax.Array, jax.Array]:
    """frames [B, T, h, w, E] -> (assignment logits [B, T*h*w, K], per-frame exemplar centers
    [B, T, K, E]); `prev_logits` are the previous layer's logits of the same frames."""
    k = self.num_clusters
    batch, num_t, height, width, dim = frames.shape
    logits = self.clustering(frames.reshape((batch * num_t, height, width, dim)), train=train)
    logits = self._fuse_assignments(logits.reshape((batch, num_t * height * width, k)),
                                    prev_logits)
    # The frames may be a float32 LayerNorm output (layer 2 takes layer 1's): the pooling
    # product runs in the compute dtype, as torch's autocast runs its einsum.
    tokens = frames.reshape((batch, num_t, height * width, dim)).astype(self.dtype)
    soft = softmax(logits.reshape((batch, num_t, height * width, k)).astype(jnp.float32),
                   axis=2).astype(tokens.dtype)
    return logits, jnp.einsum("btnk,btne->btke", soft, tokens)  # attention-pooled exemplars

  def refine(self, target: jax.Array, target_centers: jax.Array, ref_centers: jax.Array
             ) -> jax.Array:
    """The target [B, h, w, E] attending to its exemplars: its centers [B, K, E] plus the
    references' [B, R, K, E], each gated by its similarity to the target's."""
    gate = jax.nn.sigmoid(self.sim_beta + self.sim_alpha
                          * cosine_similarity(target_centers[:, None], ref_centers))
    exemplars = target_centers + jnp.einsum("brk,brke->bke", gate.astype(ref_centers.dtype),
                                            ref_centers)
    batch, height, width, dim = target.shape
    queries = target.reshape((batch, height * width, dim))
    x = queries + self.norm1(self._attend(queries, self.norm1(exemplars)))
    x = x + self.norm1(self.mlp(x.reshape(target.shape)).reshape(x.shape))
    return x.reshape(target.shape)

  def _fuse_assignments(self, logits: jax.Array, prev: jax.Array | None) -> jax.Array:
    """Prompt-masked K x K transforms of the previous and current logits, averaged (layer 1)."""
    if prev is None:
      return logits

    def masked_transform(z, prompt, transform):
      mask = jnp.clip(normalized_dot(z, prompt.astype(z.dtype)), 0.0, 1.0)
      # z * mask[..., None] as a contraction, whose transpose for mask's gradient is one too
      # (see `ops.attention`: XLA:CPU reduces the product slowly, 2 x 200 ms per step).
      return jnp.einsum("...k,...->...k", z, mask) @ transform.astype(z.dtype)

    return (masked_transform(logits, self.prompt2, self.top_down_transform2)
            + masked_transform(prev, self.prompt1, self.top_down_transform1)) / 2

  def _attend(self, queries: jax.Array, exemplars: jax.Array) -> jax.Array:
    """Multi-head attention of the target pixels over the K exemplars (softmax over K)."""
    dim, heads = queries.shape[-1], self.num_heads
    head_dim = dim // heads

    def split(x):
      return x.reshape(x.shape[:2] + (heads, head_dim))

    # q scaled before the product, as torch's `F.multi_head_attention_forward` does (scale 1
    # below); the scores are float32 (docs/deviations.md, "bf16 is an option").
    q = split(self.q(queries)) * head_dim ** -0.5
    out = dot_product_attention(q, split(self.k(exemplars)), split(self.v(exemplars)), scale=1.0)
    return self.proj(out.reshape(queries.shape))


class NonLocalCrossAttention(nn.Module):
  """`SelfAttentionBlockWithTime`, one ConvModule per projection: query pixels attend to keys."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, query_map: jax.Array, key_map: jax.Array, *, train: bool) -> jax.Array:
    batch, height, width, dim = query_map.shape

    def project(x, name):
      return ConvBNAct(dim, dtype=self.dtype, name=name)(x, train=train).reshape(
          (batch, height * width, dim))

    q = project(query_map, "query_project")
    k = project(key_map, "key_project")
    v = project(key_map, "value_project")
    # float32 scores (docs/deviations.md, "bf16 is an option"). Not `dot_product_attention` with
    # one head: its [B, 1, N, M]-shaped products changed float32 outputs by rounding.
    scores = float32_product(functools.partial(jnp.einsum, "bnc,bmc->bnm"), q, k)
    weights = softmax(scores * jnp.float32(dim ** -0.5))
    context = jnp.einsum("bnm,bmc->bnc", weights.astype(v.dtype), v).reshape(query_map.shape)
    return ConvBNAct(dim, dtype=self.dtype, name="out_project")(context, train=train)


class GTEM(nn.Module):
  """Global exemplars: learnable class key/value tables; returns (refined map, class logits)."""
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    dim = x.shape[-1]
    fcc = self.param("FCC", dense_init, (1, 1, self.num_classes, dim))
    vcc = self.param("VCC", dense_init, (1, self.num_classes, dim))
    q = Dense(dim, kernel_init=dense_init, dtype=self.dtype, name="q")(x)
    k = Dense(dim, kernel_init=dense_init, dtype=self.dtype, name="k")(fcc[0, 0])
    # float32 scores, as every attention's (docs/deviations.md, "bf16 is an option").
    class_logits = float32_product(functools.partial(jnp.einsum, "bhwc,nc->bhwn"), q, k)
    class_logits = class_logits * jnp.float32(dim ** -0.5)
    # x is LTEM's float32 LayerNorm output: the context product runs in the compute dtype.
    probs = softmax(class_logits).astype(self.dtype)
    class_context = jnp.einsum("bhwn,nc->bhwc", probs, vcc[0].astype(self.dtype))
    context = NonLocalCrossAttention(self.dtype, name="cross_attn")(x, class_context, train=train)
    return x + context, class_logits


class DTERN(nn.Module):
  """The DTERN branch on raw backbone features: fusion to 1/8, LTEM x2, GTEM.

  `__call__(features, *, train)`: 4 levels, each [B, T, h_i, w_i, C_i] with the target last.
  Returns (target feature [B, h8, w8, E], class logits [B, h8, w8, NC]). Its two halves:
  `fuse` (each frame on its own) and `temporal` (the target against the references).
  """
  num_classes: int
  num_clusters: int
  kernels: Sequence[int]
  embed_dim: int = 256
  dwconv_impl: str = "shifted"
  dtype: Dtype = jnp.float32

  def setup(self):
    self.convs = [ConvBNAct(self.embed_dim, dtype=self.dtype) for _ in range(4)]
    self.fusion_conv = ConvBNAct(self.embed_dim, dtype=self.dtype)
    self.cluster_blocks = [
        LTEMLayer(self.num_clusters, heads, self.kernels, self.embed_dim, self.dwconv_impl,
                  self.dtype)
        for heads in LTEM_HEADS]
    self.gtem = GTEM(self.num_classes, self.dtype)

  def __call__(self, features: Sequence[jax.Array], *, train: bool
               ) -> tuple[jax.Array, jax.Array]:
    batch, num_t = features[0].shape[:2]
    # Target and references go through the shared convs separately (own BN statistics).
    target = self.fuse([f[:, -1] for f in features], train=train)
    refs = self.fuse([flatten_time(f[:, :-1]) for f in features], train=train)
    return self.temporal(target, refs.reshape((batch, num_t - 1) + refs.shape[1:]), train=train)

  def fuse(self, levels: Sequence[jax.Array], *, train: bool) -> jax.Array:
    """4 levels of frames [N, h_i, w_i, C_i] -> their fused map on c2's 1/8 grid [N, h8, w8, E]."""
    grid = levels[1].shape[-3:-1]
    maps = [resize_bilinear(conv(level, train=train), grid, align_corners=False)
            for conv, level in zip(self.convs, levels[::-1])]
    return self.fusion_conv(jnp.concatenate(maps, axis=-1), train=train)

  def temporal(self, target: jax.Array, refs: jax.Array, *, train: bool
               ) -> tuple[jax.Array, jax.Array]:
    """The fused target [B, h8, w8, E] against the fused references [B, T-1, h8, w8, E]."""
    logits = None
    for block in self.cluster_blocks:
      target, logits = block(target, refs, logits, train=train)
    return self.gtem(target, train=train)

  def frame_exemplars(self, fused: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eval mode, per frame: the first LTEM layer's assignment logits of a fused frame
    [B, h8, w8, E] ([B, h8*w8, K], which its own prediction as the target reuses) and what each
    layer takes of it as a reference: its exemplar centers `centers_<i>` [B, K, E] (each layer's
    references are the fused maps themselves)."""
    centers, logits = {}, None
    for i, block in enumerate(self.cluster_blocks):
      logits, frame_centers = block.assign(fused[:, None], logits, train=False)
      centers[f"centers_{i}"] = frame_centers[:, 0]
      if i == 0:
        first_logits = logits
    return first_logits, centers

  def temporal_from_states(self, target: dict[str, jax.Array], centers: dict[str, jax.Array]
                           ) -> tuple[jax.Array, jax.Array]:
    """Eval mode: `temporal` of a clip from the target's `fuse` (`dtern`) and first-layer logits
    (`assignments_0`), and the clip's `frame_exemplars` centers stacked on axis 1 (target last).
    The first layer's target centers are the kept ones; the later layers assign the refined
    target anew."""
    x, logits = target["dtern"], target["assignments_0"]
    for i, block in enumerate(self.cluster_blocks):
      clip_centers = centers[f"centers_{i}"]
      if i == 0:
        target_centers = clip_centers[:, -1]
      else:
        logits, assigned = block.assign(x[:, None], logits, train=False)
        target_centers = assigned[:, 0]
      x = block.refine(x, target_centers, clip_centers[:, :-1])
    return self.gtem(x, train=False)


class DTERNHead(SegFormerBranch, nn.Module):
  """`SegFormerHead_clips2_DTERN_ensemble4`: SegFormer branch on all frames + DTERN on the target.

  `__call__(features, *, train)`, features = 4 levels [B, T, h_i, w_i, C_i] (target last) ->
  dict with `frame_logits` [B, T, h4, w4, NC] (SegFormer branch) and, when T > 1, `final`
  (the prediction) and `class_logits` (GTEM's auxiliary map), both [B, h4, w4, NC]. With T = 1
  only the SegFormer branch runs: the release's early exit for a video's first three frames.
  """
  num_classes: int
  num_clusters: int
  kernels: Sequence[int]
  embed_dim: int = 256
  dropout_rate: float = 0.1
  seg_channels: int = 128  # sizes the unused `conv_seg` only
  dwconv_impl: str = "shifted"
  dtype: Dtype = jnp.float32

  def setup(self):
    self.setup_segformer_branch()
    self.dtern = DTERN(self.num_classes, self.num_clusters, tuple(self.kernels), self.embed_dim,
                       self.dwconv_impl, self.dtype)
    self.dropout = dropout2d(self.dropout_rate)
    self.linear_pred1 = Conv(self.num_classes, (1, 1), **torch_default_init(2 * self.embed_dim),
                             dtype=self.dtype)
    self.conv_seg = Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.normal(0.01),
                         dtype=self.dtype)

  def __call__(self, features: Sequence[jax.Array], *, train: bool) -> dict[str, jax.Array]:
    if self.is_initializing():  # saved by the release, never applied
      self.conv_seg(jnp.zeros((1, 1, 1, self.seg_channels), self.dtype))
    out, fused, _ = self.segformer_branch(features, train=train)
    if fused is None:
      return out
    feature, class_logits = self.dtern(features, train=train)
    target_c = _to_eighth(fused.reshape(features[0].shape[:2] + fused.shape[1:])[:, -1],
                          feature.shape[1:3])
    quarter = fused.shape[1:3]
    out["final"] = self._final(target_c, feature, quarter, train=train)
    out["class_logits"] = resize_bilinear(class_logits, quarter, align_corners=False)
    return out

  def frame_state(self, features: Sequence[jax.Array]
                  ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """What the evaluation needs of one frame [B, h_i, w_i, C_i] x 4 levels, in two parts: for
    its own prediction (its SegFormer-branch logits, its SegFormer feature at 1/8, its DTERN
    fusion and first-layer assignments: 30 MiB at 480x864), and for the later clips it is a
    reference of (its LTEM centers, `DTERN.frame_exemplars`: 0.4 MiB), which the predictor keeps.
    Eval mode only: the BatchNorms then treat frames alike."""
    logits, fused = self.segformer(features, train=False)
    dtern = self.dtern.fuse(features, train=False)
    assignments, centers = self.dtern.frame_exemplars(dtern)
    return ({"logits": logits, "segformer": _to_eighth(fused, dtern.shape[1:3]), "dtern": dtern,
             "assignments_0": assignments}, centers)

  def predict_from_states(self, target: dict[str, jax.Array], references: dict[str, jax.Array]
                          ) -> jax.Array:
    """`final` of a clip from the first part of its target's `frame_state` and the second part
    of every clip frame's, stacked on axis 1 (target last), in eval mode: equal to `__call__`'s
    up to float rounding."""
    feature, _ = self.dtern.temporal_from_states(target, references)
    return self._final(target["segformer"], feature, target["logits"].shape[1:3], train=False)

  def _final(self, target_c: jax.Array, feature: jax.Array, quarter: tuple[int, int], *,
             train: bool) -> jax.Array:
    y = self.dropout(jnp.concatenate([target_c, feature], axis=-1), deterministic=not train)
    return resize_bilinear(self.linear_pred1(y), quarter, align_corners=False)


def _to_eighth(quarter_map: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """The SegFormer branch's fused 1/4 map [B, h4, w4, E] on the DTERN feature's 1/8 `grid`
  (c2's), where `linear_pred1` concatenates the two. The release resizes to (h4 // 2, w4 // 2),
  the same grid wherever it runs; with an odd h4 or w4 c2's grid is ceil(h4 / 2) and the release
  fails (docs/deviations.md)."""
  return resize_bilinear(quarter_map, grid, align_corners=False)
