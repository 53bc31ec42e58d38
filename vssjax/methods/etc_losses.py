"""ETC's losses (specs/etc.md §4) as pure NHWC functions, reductions exactly as the release's.

* `supervised_loss`: class-balanced CE on the labelled frame, main + 0.4 aux (§4.1).
* `temporal_loss`: the flow-warped consistency between the student's predictions on the
  labelled frame and its partner, masked where the warp is unreliable (§4.2).
* distillation from a frozen teacher (§4.3): `pixelwise_distillation` (PI),
  `pair_wise_distillation` (PF, cross-frame affinity), `self_similarity_distillation` (per-frame
  structure) and `multi_frame_distillation` (MF, a ConvLSTM over self-similarity maps);
  `centre_weighted` is the release's 3-frame combination centre + 0.4 (backward + forward).

Every upsampling is bilinear with align_corners=True, as in the release. Teacher inputs are
wrapped in `stop_gradient` (the teacher runs under no_grad), so gradients reach the student only.
Logits and features are [B, h, w, C]; images [B, H, W, 3] ImageNet-normalised floats.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vssjax.methods import losses, rounds
from vssjax.models import conv_lstm
from vssjax.ops.attention import softmax
from vssjax.ops.resize import resize_bilinear
from vssjax.ops.warp import occlusion_mask, warp

# CriterionDSN's class weights for the 19 Cityscapes train ids, in train-id order.
CITYSCAPES_CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                            1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865,
                            1.1529, 1.0507)
AUX_WEIGHT = 0.4
TEMPORAL_WEIGHT = 0.1  # st_weight of the released cityscapes_pspnet18_flow.yaml
TEMPORAL_FORMULATIONS = ("released", "paper")
NEIGHBOUR_WEIGHT = 0.4  # CriterionKDLong / CriterionSDcos_self: centre + 0.4 (t-k + t+k)
SELF_SIMILARITY_POOL = 2  # CriterionSDcos_self: average pool 2x2, stride 2
MULTI_FRAME_POOL = 16  # CriterionLSTM: average pool 16x16, stride 16 (97x97 -> 6x6)
_NORM_EPS = 1e-8  # torch's cosine_similarity floor; the release has none (all-zero vector: nan)


def upsample(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """float32 `x` [B, h, w, C] at `size`, bilinear with align_corners=True, as the release's losses
  upsample (`supervised_loss` passes the same setting to `losses.cross_entropy_at_label_size`)."""
  return resize_bilinear(x.astype(jnp.float32), tuple(size), align_corners=True)


def supervised_loss(logits: jax.Array, aux_logits: jax.Array | None, labels: jax.Array, *,
                    class_weights: Sequence[float] | None = CITYSCAPES_CLASS_WEIGHTS,
                    aux_weight: float = AUX_WEIGHT, average: str = "valid"
                    ) -> tuple[jax.Array, jax.Array]:
  """(CE(main) + aux_weight * CE(aux), the main logits' pixel accuracy), each upsampled to the
  labels [B, H, W] (ignore 255) with `upsample`'s align_corners=True.

  With `average='valid'` the CE is PyTorch's class-weighted mean, sum_i w_{y_i} nll_i /
  sum_i w_{y_i}, the release's; 'all' divides the weighted sum by the pixel count instead
  (`losses.cross_entropy_at_label_size`). Pass `class_weights=None` for a dataset other than
  Cityscapes, `aux_logits=None` without an aux head.
  """
  def cross_entropy(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return losses.cross_entropy_at_label_size(x, labels, average=average,
                                              class_weights=class_weights, align_corners=True)

  loss, pixel_accuracy = cross_entropy(logits)
  if aux_logits is not None:
    loss = loss + aux_weight * cross_entropy(aux_logits)[0]
  return loss, pixel_accuracy


def temporal_loss(logits_t: jax.Array, logits_s: jax.Array, images_t: jax.Array,
                  images_s: jax.Array, flow: jax.Array, *,
                  formulation: str = "released") -> jax.Array:
  """The motion-guided loss between frame t and its partner s (specs/etc.md §4.2), unweighted:
  the method applies `method.temporal_weight` (st_weight, `TEMPORAL_WEIGHT` in the released
  config).

  Args:
    logits_t, logits_s: student logits of the labelled frame and of the partner [B, h, w, C];
      upsampled to the image size here. Gradients flow through both (no stop-gradient on the
      warped partner prediction, as released).
    images_t, images_s: the two ImageNet-normalised crops [B, H, W, 3].
    flow: [B, H, W, 2] on frame t's grid, bringing frame s onto frame t (`vssjax.flow`
      convention); treated as data (stop-gradient).
    formulation: 'released': mean over all B*H*W*C elements of (M*Z_t - M*Z_hat)^2 on logits,
      i.e. the mask enters squared; 'paper': (1/(B*H*W)) sum_i M_i ||q_t - q_hat||^2 on softmax
      probabilities (the probabilities are warped), the mask linear.
  """
  if formulation not in TEMPORAL_FORMULATIONS:
    raise ValueError(f"unknown temporal loss formulation {formulation!r}; expected one of "
                     f"{TEMPORAL_FORMULATIONS}")
  flow = jax.lax.stop_gradient(flow)
  mask = jax.lax.stop_gradient(occlusion_mask(images_t, warp(images_s.astype(jnp.float32), flow)))
  elements = math.prod(mask.shape) * (logits_t.shape[-1] if formulation == "released" else 1)
  # Upsampled to the images' size, a few samples at a time (`rounds.mean_in_rounds`).
  sample_sum = functools.partial(_temporal_sample_sum, formulation=formulation)
  loss, _ = rounds.mean_in_rounds(sample_sum, [x.astype(jnp.float32) for x in (logits_t, logits_s)],
                                  [mask, flow], jnp.float32(elements))
  return loss


def _temporal_sample_sum(logits_t, logits_s, mask, flow, *, formulation: str):
  """`temporal_loss`'s sum over the samples given, and no by-product."""
  size = mask.shape[1:3]
  z_t, z_s = upsample(logits_t, size), upsample(logits_s, size)
  if formulation == "released":
    return jnp.sum(jnp.square(mask * z_t - mask * warp(z_s, flow))), ()
  q_t, q_s = softmax(z_t), softmax(z_s)
  per_pixel = jnp.sum(jnp.square(q_t - warp(q_s, flow)), axis=-1, keepdims=True)
  return jnp.sum(mask * per_pixel), ()


def pixelwise_distillation(student_logits: jax.Array, teacher_logits: jax.Array, *,
                           temperature: float = 1.0) -> jax.Array:
  """KL(softmax(T/tau) || softmax(S/tau)) averaged over all B*C*h*w elements (torch
  `KLDivLoss()` 'mean', not batchmean), the student upsampled to the teacher's size. No tau^2
  factor, as released (tau = 1 there). Per frame: the 2-frame loss is the sum over both frames."""
  teacher = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature
  student = upsample(student_logits, teacher.shape[1:3]) / temperature
  log_p_teacher = jax.nn.log_softmax(teacher, axis=-1)
  log_p_student = jax.nn.log_softmax(student, axis=-1)
  return jnp.mean(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student))


def _pixels_and_norms(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[B, h, w, C] -> ([B, N, C] float32, their L2 norms [B, N] floored at _NORM_EPS)."""
  pixels = x.astype(jnp.float32).reshape(x.shape[0], -1, x.shape[-1])
  # sqrt of a floored square: finite gradients for all-zero vectors too.
  norms = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(pixels), axis=-1), _NORM_EPS**2))
  return pixels, norms


def cross_frame_affinity(x_t: jax.Array, x_s: jax.Array, *,
                         released_normaliser: bool = False) -> jax.Array:
  """A[b, i, j] = <x_t(i), x_s(j)> / (|x_t(i)| |x_s(j)|), [B, N, N] with N = h*w.

  `released_normaliser=True` divides by |x_s(i)| |x_t(j)| instead, the transposed normaliser of
  the release's `Cos_Attn_no` (not a cosine). Channel counts of x_t and x_s must agree.
  """
  if x_t.shape != x_s.shape:
    raise ValueError(f"affinity needs maps of one shape, got {x_t.shape} and {x_s.shape}")
  pixels_t, norms_t = _pixels_and_norms(x_t)
  pixels_s, norms_s = _pixels_and_norms(x_s)
  dots = jnp.einsum("bic,bjc->bij", pixels_t, pixels_s, precision=jax.lax.Precision.HIGHEST)
  if released_normaliser:
    norms_t, norms_s = norms_s, norms_t
  return dots / (norms_t[:, :, None] * norms_s[:, None, :])


def self_similarity(x: jax.Array) -> jax.Array:
  """G[b, i, j] = cos(x(i), x(j)), [B, N, N] (the release's `Cos_Attn_self`, a true cosine)."""
  return cross_frame_affinity(x, x)


def _check_same_grid(student: jax.Array, teacher: jax.Array) -> None:
  if student.shape[:3] != teacher.shape[:3]:
    raise ValueError(f"student and teacher maps must share batch and spatial size (the teacher's "
                     f"output stride must be the student's), got {student.shape} and "
                     f"{teacher.shape}")


def pair_wise_distillation(student_t: jax.Array, student_s: jax.Array, teacher_t: jax.Array,
                           teacher_s: jax.Array, *, released_normaliser: bool = False
                           ) -> jax.Array:
  """PF: mean over (b, i, j) of (A_student - A_teacher)^2, A the cross-frame affinity of frame t
  against its partner s (`CriterionSDcos_sig`; logits by default, any same-grid maps)."""
  _check_same_grid(student_t, teacher_t)
  teachers = [jax.lax.stop_gradient(x).astype(jnp.float32) for x in (teacher_t, teacher_s)]
  b, h, w = student_t.shape[:3]
  # Two [N, N] float32 matrices a sample (N = 97^2 at a 769 crop: 0.35 GB each), so a few samples
  # at a time (`rounds.mean_in_rounds`).
  sample_sum = functools.partial(_pair_wise_sample_sum, released_normaliser=released_normaliser)
  loss, _ = rounds.mean_in_rounds(
      sample_sum, [x.astype(jnp.float32) for x in (student_t, student_s)], teachers,
      jnp.float32(b * (h * w) ** 2))
  return loss


def _pair_wise_sample_sum(student_t, student_s, teacher_t, teacher_s, *,
                          released_normaliser: bool):
  """`pair_wise_distillation`'s sum over the samples given, and no by-product."""
  student = cross_frame_affinity(student_t, student_s, released_normaliser=released_normaliser)
  teacher = cross_frame_affinity(teacher_t, teacher_s, released_normaliser=released_normaliser)
  return jnp.sum(jnp.square(student - teacher)), ()


def _pool(x: jax.Array, window: int) -> jax.Array:
  """torch `AvgPool2d(window, stride=window)`: no padding, incomplete windows dropped."""
  return nn.avg_pool(x.astype(jnp.float32), (window, window), strides=(window, window),
                     padding="VALID")


def self_similarity_distillation(student: jax.Array, teacher: jax.Array, *,
                                 pool: int = SELF_SIMILARITY_POOL) -> jax.Array:
  """One frame of `CriterionSDcos_self`: MSE between the self-cosine matrices of the average-
  pooled student and teacher feature maps (channel counts may differ). Combine the 3 frames with
  `centre_weighted`."""
  _check_same_grid(student, teacher)
  student, teacher = _pool(student, pool), _pool(jax.lax.stop_gradient(teacher), pool)
  b, h, w = student.shape[:3]
  # Two [N, N] matrices a sample (N = 48^2 at a 769 crop and pool 2), a few samples at a time.
  loss, _ = rounds.mean_in_rounds(_self_similarity_sample_sum, [student], [teacher],
                                  jnp.float32(b * (h * w) ** 2))
  return loss


def _self_similarity_sample_sum(student, teacher):
  """`self_similarity_distillation`'s sum over the samples given, and no by-product."""
  return jnp.sum(jnp.square(self_similarity(student) - self_similarity(teacher))), ()


def centre_weighted(centre: jax.Array, *neighbours: jax.Array,
                    neighbour_weight: float = NEIGHBOUR_WEIGHT) -> jax.Array:
  """The release's 3-frame combination: loss(t) + 0.4 * (loss(t-k) + loss(t+k))."""
  return centre + neighbour_weight * sum(neighbours)


def multi_frame_distillation(lstm: conv_lstm.ConvLSTM, lstm_params: Any,
                             student_features: Sequence[jax.Array],
                             teacher_features: Sequence[jax.Array], *, rule: str = "frozen",
                             pool: int = MULTI_FRAME_POOL) -> tuple[jax.Array, jax.Array]:
  """MF (`CriterionLSTM`): (distillation loss, the ConvLSTM's own objective).

  Each sequence (frames t-k, t, t+k in that order) of feature maps is average-pooled
  (`pool` x `pool`, stride `pool`), turned into self-cosine matrices, fed as 1-channel
  [B, N, N, 1] images through the one shared cell from the zero state; the loss is
  MSE(h_T, h_S) + MSE(c_T, c_S) of the final states. `rule` (conv_lstm.TRAINING_RULES) decides
  what trains the cell; minimise the SUM of both returned terms w.r.t. student and cell
  parameters together and each gets the gradient its rule gives it.
  """
  if len(student_features) != len(teacher_features):
    raise ValueError(f"{len(student_features)} student frames vs {len(teacher_features)} teacher")
  for student, teacher in zip(student_features, teacher_features):
    _check_same_grid(student, teacher)
  teacher_features = [jax.lax.stop_gradient(x) for x in teacher_features]

  def graphs(features: Sequence[jax.Array]) -> list[jax.Array]:
    return [self_similarity(_pool(x, pool))[..., None] for x in features]

  variables = {"params": conv_lstm.student_view(lstm_params, rule)}
  teacher_graphs = graphs(teacher_features)
  h_s, c_s = lstm.apply(variables, graphs(student_features), method=conv_lstm.ConvLSTM.unroll)
  h_t, c_t = lstm.apply(variables, teacher_graphs, method=conv_lstm.ConvLSTM.unroll)
  loss = jnp.mean(jnp.square(h_t - h_s)) + jnp.mean(jnp.square(c_t - c_s))
  return loss, conv_lstm.training_objective(lstm, lstm_params, teacher_graphs, rule)
