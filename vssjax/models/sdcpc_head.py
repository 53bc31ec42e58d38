"""SD-CPC decode head (specs/sdcpc.md): static (SSEA) and dynamic (DSSA) semantic alignment.

What follows the paper (spec §2, from its abstract and figure captions only; the paper body was
not available) and what is reconstruction (spec §6, [GUESS]; every unknown is a field here or in
the method's config):

- Paper: a per-frame backbone; SSEA models "intra-frame spatial multi-scale and multi-level
  correlations" of the backbone's pixel features; DSSA performs "two-stage cross-frame selective
  aggregation" "based on cross-frame static perceptual differences", "from coarse to fine";
  a window-based attention map exploits the sparsity of cross-frame attention points.
- Reconstruction: the SegFormer all-MLP branch as the per-frame decoder (its fused feature X_f is
  the pixel feature; its logits give the single-frame prediction and an auxiliary loss); SSEA = one
  attention of X_f (on c2's grid) over adaptive-average-pooled pyramids (`pool_sizes`) of the
  projected backbone levels (`levels`), then a Mix-FFN; the static perceptual difference = 1 -
  cos(Y_t, Y_r) of the SSEA outputs (`difference='cosine'`), or §6.2's class-level variant, the
  Jensen-Shannon divergence of the frames' class posteriors (`'js'`: the SegFormer branch's softmax,
  averaged over c2's grid cells and the coarse cells, without gradient; in [0, ln 2] where the
  cosine one is in [0, 2], so the gate below starts near sigma(0) = 0.5); DSSA stage 1 (coarse, the
  grid pooled by `coarse_factor`) keeps the `keep_ratio` reference positions that differ most from
  the target and attends to them; stage 2 (fine) is window attention (`window`, `window_keep_ratio`)
  of the stage-1-refined target over the references, the windows at the pixel's own position or at
  stage 1's argmax (`window_centre`), gated per pixel by sigma(alpha * difference + beta)
  (`difference_gate`); the prediction is a 1x1 classifier on c2's grid, resized to the label or
  input size in one bilinear step (spec §6.2 says "logits at stride 4", which on MiT would add a
  stride-8 -> 4 step first; one step keeps MCP-CL's embedding and the logits on one grid); an
  embedding projector feeds MCP-CL (vssjax/models/sdcpc_prototypes.py).

The head takes 4 feature maps of any strides (MiT: 4/8/16/32, dilated ResNet: 4/8/8/8); the
alignment grid is c2's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import (Conv, Dense, cosine_similarity, dense_init, dropout2d,
                                  flatten_time, l2_normalize, layer_norm, TORCH_LAYER_NORM_EPS)
from vssjax.models.mit import MixFFN
from vssjax.models.sdcpc_attention import CrossAttention
from vssjax.models.segformer_head import SegFormerBranch
from vssjax.ops.mixed_precision import broadcast_add
from vssjax.ops.pooling import adaptive_avg_pool
from vssjax.ops.resize import resize_bilinear
from vssjax.ops.top_k import top_k


MLP_RATIO = 4  # [GUESS] Mix-FFN width of SSEA, as MiT's


DIFFERENCES = ("cosine", "js")
WINDOW_CENTRES = ("same", "coarse_argmax")


def static_difference(target: jax.Array, refs: jax.Array) -> jax.Array:
  """The static perceptual difference 1 - cos(Y_t(p), Y_r(p)): [B, ..., C], [B, R, ..., C] ->
  [B, R, ...], in [0, 2]."""
  return 1.0 - cosine_similarity(target[:, None], refs)


def strongest_kept_cells(weights: jax.Array, chosen: jax.Array) -> jax.Array:
  """Per coarse target cell and reference, the reference's kept cell with the largest coarse-stage
  attention weight: weights [B, cells, R * keep] (over the kept cells, reference-major), chosen
  [B, R, keep] (their flat cell indices) -> [B, cells, R] flat cell indices."""
  batch, cells, _ = weights.shape
  refs, keep = chosen.shape[1:]
  best = jnp.argmax(weights.reshape((batch, cells, refs, keep)), axis=-1)
  return jnp.take_along_axis(chosen[:, None], best[..., None], axis=-1)[..., 0]


def js_divergence(target: jax.Array, refs: jax.Array) -> jax.Array:
  """Jensen-Shannon divergence (natural log) of class distributions [B, ..., C] and
  [B, R, ..., C] -> [B, R, ...], in [0, ln 2]; in float32. A zero probability adds nothing (its
  logarithm is clamped, so its gradient stays finite)."""
  p, q = target[:, None].astype(jnp.float32), refs.astype(jnp.float32)
  log_m = jnp.log(jnp.maximum(0.5 * (p + q), jnp.finfo(jnp.float32).tiny))

  def kl_to_mean(x):
    return jnp.sum(x * (jnp.log(jnp.maximum(x, jnp.finfo(jnp.float32).tiny)) - log_m), axis=-1)

  return 0.5 * (kl_to_mean(p) + kl_to_mean(q))


class SSEA(nn.Module):
  """Static semantic alignment of each frame: `__call__(x [N, h, w, E], features)`.

  Queries: the pixels of x. Keys/values: for each backbone level in `levels` (0-based indices into
  the 4 maps of `features`, each [N, h_i, w_i, C_i]), a linear projection to E pooled to every
  grid in `pool_sizes` (multi-level x multi-scale), plus a learned embedding per pooled token
  (`token_embedding`: which level and grid a token came from, else lost in the concatenation),
  then a LayerNorm (`context_norm`). Pre-norm attention and Mix-FFN, both residual. The spec's §6.1
  has neither the embedding nor the context norm (both are switchable guesses), and says "MLP"
  where this uses MiT's Mix-FFN (a guess without a switch).
  """
  levels: Sequence[int] = (1, 2, 3)
  pool_sizes: Sequence[int] = (1, 2, 4, 8)
  num_heads: int = 8
  dwconv_impl: str = "shifted"
  dtype: Dtype = jnp.float32
  token_embedding: bool = True
  context_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, features: Sequence[jax.Array]) -> jax.Array:
    frames, height, width, dim = x.shape
    tokens = []
    for level in self.levels:
      projected = Dense(dim, kernel_init=dense_init, dtype=self.dtype,
                        name=f"level_proj_{level + 1}")(features[level])
      for size in self.pool_sizes:
        tokens.append(adaptive_avg_pool(projected, size).reshape((frames, size * size, dim)))
    context = jnp.concatenate(tokens, axis=1)
    if self.token_embedding:
      embedding = self.param("token_embed", dense_init, context.shape[1:]).astype(context.dtype)
      context = broadcast_add(context, embedding)  # its gradient sums over the frames in float32
    if self.context_norm:
      context = layer_norm(TORCH_LAYER_NORM_EPS, "context_norm")(context)
    queries = layer_norm(TORCH_LAYER_NORM_EPS, "norm1")(x).reshape((frames, height * width, dim))
    attended = CrossAttention(self.num_heads, dtype=self.dtype, name="attn")(queries, context)
    x = x + attended.reshape(x.shape)
    return x + MixFFN(MLP_RATIO, self.dwconv_impl, self.dtype, name="mlp")(
        layer_norm(TORCH_LAYER_NORM_EPS, "norm2")(x))


class DSSA(nn.Module):
  """Dynamic semantic alignment: `__call__(target [B, h, w, E], refs [B, R, h, w, E],
  posteriors)` -> the aligned target [B, h, w, E] (inputs are SSEA outputs; `posteriors`, the
  frames' class posteriors on the same grid, [B, h, w, NC] and [B, R, h, w, NC], are read with
  `difference='js'` only).

  Stage 1 (coarse): target and references average-pooled by `coarse_factor`; per reference the
  ceil(`keep_ratio` * cells) cells with the largest static difference from the target's same cell
  (`difference`: 'cosine', 1 - cos of the pooled features; 'js', the Jensen-Shannon divergence of
  the pooled posteriors) are kept; the coarse target attends densely over all kept cells of all
  references; the result is upsampled and added. Both attentions layer-normalise their queries
  and references first (a guess beyond §6.2) and split into `num_heads` heads (§6.2's window
  score is one head: `num_heads=1`). Stage 2 (fine): window attention of the refined target over
  the full-resolution references, scaled per pixel by sigma(alpha * mean_r difference + beta) with
  `difference_gate` (a guess beyond the spec's §6.2, whose output is the plain sum), else added.
  The windows sit at the query's own position (`window_centre='same'`) or, with 'coarse_argmax'
  (§6.2's alternative), displaced per coarse cell and reference to the kept cell that the cell's
  coarse attention weighs most (averaged over the heads; `strongest_kept_cells`): a query at p in
  coarse cell P reads reference r around p + coarse_factor (A_r(P) - P), the cells cut from c2's
  grid in squares of `coarse_factor` (the coarse pool's bins where the grid is a multiple of it).
  The settings are checked where the model is built (`methods.sdcpc.build_sdcpc`).
  """
  coarse_factor: int = 4
  keep_ratio: float = 0.5
  window: int = 7
  window_keep_ratio: float = 1.0
  num_heads: int = 8
  dtype: Dtype = jnp.float32
  difference_gate: bool = True
  difference: str = "cosine"
  window_centre: str = "same"

  @nn.compact
  def __call__(self, target: jax.Array, refs: jax.Array,
               posteriors: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    batch, height, width, dim = target.shape
    num_refs = refs.shape[1]
    if (posteriors is None) != (self.difference == "cosine"):
      raise ValueError(f"DSSA(difference={self.difference!r}) takes posteriors with 'js' only")

    def norm(name):
      return layer_norm(TORCH_LAYER_NORM_EPS, name)

    coarse_hw = (-(-height // self.coarse_factor), -(-width // self.coarse_factor))
    coarse_target = adaptive_avg_pool(target, coarse_hw)
    coarse_refs = adaptive_avg_pool(refs, coarse_hw)
    # What the static difference compares, on c2's grid and on the coarse one: the features
    # themselves, or the frames' class posteriors.
    if posteriors is None:
      measure, compared = static_difference, (target, refs)
      coarse_compared = (coarse_target, coarse_refs)
    else:
      measure, compared = js_divergence, posteriors
      coarse_compared = tuple(adaptive_avg_pool(p, coarse_hw) for p in posteriors)
    cells = coarse_hw[0] * coarse_hw[1]
    keep = max(math.ceil(self.keep_ratio * cells), 1)
    difference = measure(*coarse_compared).reshape((batch, num_refs, cells))
    chosen = top_k(difference, keep)[1]
    selected = jnp.take_along_axis(coarse_refs.reshape((batch, num_refs, cells, dim)),
                                   chosen[..., None], axis=2).reshape((batch, -1, dim))
    at_argmax = self.window_centre == "coarse_argmax"
    coarse = CrossAttention(self.num_heads, dtype=self.dtype, return_weights=at_argmax,
                            name="coarse_attn")(
        norm("coarse_norm_q")(coarse_target.reshape((batch, cells, dim))),
        norm("coarse_norm_kv")(selected))
    centres = None
    if at_argmax:
      coarse, weights = coarse
      centres = strongest_kept_cells(weights, chosen).reshape((batch,) + coarse_hw + (num_refs,))
    x = target + resize_bilinear(coarse.reshape((batch,) + coarse_hw + (dim,)),
                                 (height, width), align_corners=False)

    fine = CrossAttention(self.num_heads, self.window, self.window_keep_ratio, self.dtype,
                          block=self.coarse_factor if at_argmax else None, name="fine_attn")(
                              norm("fine_norm_q")(x), norm("fine_norm_kv")(refs), centres)
    if not self.difference_gate:
      return x + fine
    alpha = self.param("gate_alpha", nn.initializers.ones, (1,))
    beta = self.param("gate_beta", nn.initializers.zeros, (1,))
    gate = jax.nn.sigmoid(alpha * measure(*compared).mean(axis=1) + beta)
    # In float32, rounded once: the gate's gradient sums over the channels, in bf16 otherwise.
    return x + (gate[..., None] * fine.astype(jnp.float32)).astype(fine.dtype)


class SDCPCHead(SegFormerBranch, nn.Module):
  """`__call__(features, *, train)`, features = 4 levels [B, T, h_i, w_i, C_i] (target last) ->
  dict with `frame_logits` [B, T, h1, w1, NC] (SegFormer branch, every frame) and, when T > 1,
  `final` [B, h2, w2, NC] (the prediction, on c2's grid) and `embedding` [B, h2, w2, D]
  (L2-normalised, for MCP-CL); with `embed_references`, also `reference_embedding`
  [B, T - 1, h2, w2, D], the reference frames' SSEA features through the same projector (MCP-CL's
  prototypes per frame). With T = 1 only the SegFormer branch runs.
  """
  num_classes: int
  embed_dim: int = 256
  dropout_rate: float = 0.1
  ssea_levels: Sequence[int] = (1, 2, 3)
  ssea_pool_sizes: Sequence[int] = (1, 2, 4, 8)
  ssea_heads: int = 8
  dssa_coarse_factor: int = 4
  dssa_keep_ratio: float = 0.5
  dssa_window: int = 7
  dssa_window_keep_ratio: float = 1.0
  dssa_heads: int = 8
  embedding_dim: int = 128
  dwconv_impl: str = "shifted"
  dtype: Dtype = jnp.float32
  ssea_token_embedding: bool = True
  ssea_context_norm: bool = True
  dssa_difference_gate: bool = True
  dssa_difference: str = "cosine"
  dssa_window_centre: str = "same"
  embed_references: bool = False

  def setup(self):
    self.setup_segformer_branch()
    self.ssea = SSEA(tuple(self.ssea_levels), tuple(self.ssea_pool_sizes), self.ssea_heads,
                     self.dwconv_impl, self.dtype, token_embedding=self.ssea_token_embedding,
                     context_norm=self.ssea_context_norm)
    self.dssa = DSSA(self.dssa_coarse_factor, self.dssa_keep_ratio, self.dssa_window,
                     self.dssa_window_keep_ratio, self.dssa_heads, self.dtype,
                     difference_gate=self.dssa_difference_gate,
                     difference=self.dssa_difference,
                     window_centre=self.dssa_window_centre)
    self.dropout = dropout2d(self.dropout_rate)
    self.classifier = Conv(self.num_classes, (1, 1), dtype=self.dtype)
    self.projector_fc1 = Dense(self.embed_dim, kernel_init=dense_init, dtype=self.dtype)
    self.projector_fc2 = Dense(self.embedding_dim, kernel_init=dense_init, dtype=self.dtype)

  def __call__(self, features: Sequence[jax.Array], *, train: bool) -> dict[str, jax.Array]:
    out, fused, frames = self.segformer_branch(features, train=train)
    if fused is None:
      return out
    static = self._static(fused, frames)
    clips = features[0].shape[:2]
    static = static.reshape(clips + static.shape[1:])
    posteriors = self._posteriors(flatten_time(out["frame_logits"]), static.shape[2:4])
    if posteriors is not None:
      posteriors = posteriors.reshape(clips + posteriors.shape[1:])
      posteriors = posteriors[:, -1], posteriors[:, :-1]
    aligned = self.dssa(static[:, -1], static[:, :-1], posteriors)
    out["final"] = self.classifier(self.dropout(aligned, deterministic=not train))
    out["embedding"] = self._embed(aligned)
    if self.embed_references:
      out["reference_embedding"] = self._embed(static[:, :-1])
    return out

  def _embed(self, x: jax.Array) -> jax.Array:
    """MCP-CL's projector: unit float32 embeddings of x [..., E]."""
    return l2_normalize(self.projector_fc2(nn.relu(self.projector_fc1(x))).astype(jnp.float32))

  def frame_state(self, features: Sequence[jax.Array]
                  ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """What the evaluation needs of one frame [B, h_i, w_i, C_i] x 4 levels, as DTERN's head:
    for its own prediction its SegFormer-branch logits; for every clip it belongs to its
    SSEA-aligned static feature (per frame in eval mode) and, with DSSA's 'js' difference, its
    class posteriors on that grid, which the predictor keeps."""
    logits, fused = self.segformer(features, train=False)
    kept = {"static": self._static(fused, features)}
    posteriors = self._posteriors(logits, kept["static"].shape[1:3])
    return {"logits": logits}, kept if posteriors is None else {**kept, "posteriors": posteriors}

  def predict_from_states(self, target: dict[str, jax.Array], references: dict[str, jax.Array]
                          ) -> jax.Array:
    """`final` of a clip from its frames' static features stacked on axis 1 (target last), in
    eval mode: equal to `__call__`'s up to float rounding (the target's first part is unused)."""
    del target
    static, posteriors = references["static"], references.get("posteriors")
    if posteriors is not None:
      posteriors = posteriors[:, -1], posteriors[:, :-1]
    return self.classifier(self.dssa(static[:, -1], static[:, :-1], posteriors))

  def _static(self, fused: jax.Array, frames: Sequence[jax.Array]) -> jax.Array:
    """SSEA on the SegFormer feature at c2's grid: each frame aligned on its own."""
    grid = frames[1].shape[-3:-1]
    return self.ssea(resize_bilinear(fused, grid, align_corners=False), frames)

  def _posteriors(self, logits: jax.Array, grid: tuple[int, int]) -> jax.Array | None:
    """With DSSA's 'js' difference, the SegFormer branch's class posteriors [N, h, w, NC] averaged
    over the cells of the alignment `grid` (float32); else None. A score, as MCP-CL's k-means
    assignments are: no gradient reaches the branch through them, which the final loss could
    otherwise move to open or close DSSA's gate, against the branch's own cross-entropy."""
    if self.dssa_difference == "cosine":
      return None
    posteriors = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
    return adaptive_avg_pool(posteriors, grid)
