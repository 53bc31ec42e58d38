"""Loss pieces shared by the methods."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from data_pipelines.sources.base import IGNORE_LABEL
from vssjax.errors import SetupError
from vssjax.methods.rounds import device_share, map_in_rounds, mean_in_rounds, note_loop
from vssjax.ops.attention import softmax
from vssjax.ops.resize import resize_bilinear

LOSS_AVERAGES = ("valid", "all")  # `cross_entropy_at_label_size`'s divisors
# OhemCELoss2D's settings in the DCFM release (specs/dcfm.md §8, Table VII)
OHEM_THRESHOLD = -math.log(0.7)
OHEM_MIN_KEPT_FRACTION = 1 / 16
# mmseg's DiceLoss defaults, for DCFM's Table VII "CE + Dice" (its release has no Dice loss)
DICE_SMOOTH = 1.0
DICE_EXPONENT = 2


def cross_entropy_at_label_size(
    logits: jax.Array, labels: jax.Array, *, average: str = "valid",
    ignore_label: int = IGNORE_LABEL, class_weights: Sequence[float] | jax.Array | None = None,
    align_corners: bool = False,
    pixel_weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(softmax cross-entropy, pixel accuracy) of [N, h, w, C] logits upsampled bilinearly in
  float32 to the labels' [N, H, W] (PyTorch's `F.interpolate`, `align_corners` as given).

  mmseg computes every segmentation loss at label resolution, so the methods do too. The pixel
  accuracy (of the upsampled logits' argmax over the non-ignored pixels) is for logs; it has no
  gradient.

  `average='valid'` divides by the number of non-ignored pixels; `average='all'` divides by all
  pixels (mmseg 0.13's `weight_reduce_loss`, which the DTERN release trained with; DCFM's
  `CrossEntropyLoss_fix` is 'valid'). The two differ only by a per-batch gradient scale.

  Under `jit` the batch is the global one, so 'valid' divides by the valid pixels of every
  device's share together. PyTorch DDP (DCFM trained on 4 GPUs) takes each GPU's own valid mean,
  then averages the gradients: the same where the shares hold as many valid pixels, otherwise a
  sample on a sparsely labelled GPU weighs more there. Deliberate: the global mean does not depend
  on the device count, so a config trains alike on 1 device or 64. ('all' is the same either way:
  the crops are equal-sized.)

  `class_weights` [C] weight each pixel's loss by its label's weight. With 'valid' the divisor is
  then the sum of the weights of the non-ignored pixels: PyTorch's `F.cross_entropy(weight=...)`
  weighted mean (ETC's class-balanced loss). With 'all' it stays the pixel count (mmseg).
  `pixel_weights` [N, H, W] (no gradient) weight each pixel instead, the ignored ones included,
  whose loss is 0 (`ohem_cross_entropy_at_label_size`'s selection); with 'valid' the divisor is
  their sum.

  The whole batch's upsampled logits are never made at once, nor kept for the backward pass: the
  loss takes the batch in rounds (`vssjax/methods/rounds.py`).
  """
  if average not in LOSS_AVERAGES:
    raise SetupError(f"loss average must be one of {LOSS_AVERAGES}, got {average!r}")
  valid = labels != ignore_label
  if pixel_weights is not None:
    if class_weights is not None:
      raise ValueError("class_weights and pixel_weights: one or the other")
    weights = jax.lax.stop_gradient(pixel_weights).astype(jnp.float32)
  elif class_weights is None:
    weights = valid.astype(jnp.float32)
  else:
    class_weights = jnp.asarray(class_weights, jnp.float32)
    if class_weights.shape != logits.shape[-1:]:  # a gather would clamp out-of-range ids silently
      raise ValueError(f"{class_weights.shape[0]} class weights for {logits.shape[-1]} classes")
    weights = jnp.where(valid, class_weights[jnp.where(valid, labels, 0)], 0.0)
  if average == "all":
    divisor = jnp.float32(max(valid.size, 1))
  else:  # a batch with no valid pixel has loss 0 (torch would return nan)
    divisor = jnp.maximum(weights.sum(), jnp.finfo(jnp.float32).tiny)
  sample_sums = functools.partial(_sample_sums, ignore_label=ignore_label,
                                  align_corners=align_corners)
  loss, correct = mean_in_rounds(sample_sums, [logits.astype(jnp.float32)], [labels, weights],
                                 divisor)
  return loss, correct / jnp.maximum(valid.sum(), 1)


def ohem_cross_entropy_at_label_size(
    logits: jax.Array, labels: jax.Array, *, ignore_label: int = IGNORE_LABEL,
    align_corners: bool = False, threshold: float = OHEM_THRESHOLD,
    min_kept_fraction: float = OHEM_MIN_KEPT_FRACTION) -> tuple[jax.Array, jax.Array]:
  """(online hard example mining cross-entropy, pixel accuracy), the DCFM release's
  `OhemCELoss2D` (specs/dcfm.md §8): of the batch's N per-pixel losses at label size (an ignored
  pixel's 0), sorted in descending order, the mean of those above `threshold` (-log 0.7) when the
  one after the first k = N x `min_kept_fraction` (1/16) is, else of the k largest.

  The losses are found in a first pass without gradient (the logits upsampled once more, in the
  rounds of `cross_entropy_at_label_size`); the chosen pixels then weigh 1 in that loss, and
  where the k-th largest loss is tied, the tied pixels share the weight left to it (torch keeps
  whichever the sort put first: the same value, its gradient spread over equals). No sort: the
  branch is a count, the k-th largest loss a bisection of counts (`_kth_largest`), so a batch
  split over devices exchanges only counts. N is the global batch's (the release took each GPU's
  own, as for the plain mean, above); the mean is over the chosen pixels whatever
  `average` the plain loss would take."""
  def pixel_losses(logits, labels):
    up = resize_bilinear(logits, labels.shape[-2:], align_corners=align_corners)
    return _pixel_nll(up, labels, labels != ignore_label)

  losses = jax.lax.stop_gradient(map_in_rounds(pixel_losses, logits.astype(jnp.float32), labels))
  losses = jnp.where(losses > 0, losses, 0.0)  # no -0.0 or rounding below 0 for the bisection
  kept = max(int(losses.size * min_kept_fraction), 1)
  kth = _kth_largest(losses, kept)
  above_kth, ties = losses > kth, losses == kth
  weights = above_kth + ties * ((kept - above_kth.sum()) / jnp.maximum(ties.sum(), 1))
  if kept < losses.size:  # torch's `loss[n_min] > thresh`: more than k losses above it
    above = losses > threshold
    weights = jnp.where(above.sum() > kept, above, weights)
  return cross_entropy_at_label_size(
      logits, labels, ignore_label=ignore_label, align_corners=align_corners,
      pixel_weights=weights)


def dice_loss_at_label_size(logits: jax.Array, labels: jax.Array, *,
                            ignore_label: int = IGNORE_LABEL,
                            align_corners: bool = False) -> jax.Array:
  """Multi-class soft Dice loss of [N, h, w, C] logits upsampled to the labels' [N, H, W] as for
  the cross-entropy: per image and class, 1 - (2 sum p t + s) / (sum p^e + sum t^e + s) over
  the labelled pixels (p the softmax, t the one-hot label, s = `DICE_SMOOTH`, e =
  `DICE_EXPONENT`), averaged over the C classes, then over the images.

  mmseg 0.x's `DiceLoss` with its defaults, for DCFM's Table VII "CE + Dice" (specs/dcfm.md §8:
  the release has none, so which Dice the paper took is a guess), but for the ignored pixels,
  whose probabilities and (clamped to the last class) labels mmseg's denominator counts: here
  they count nowhere. In the cross-entropy's rounds (`mean_in_rounds`), over the global batch."""
  per_sample = functools.partial(_dice_sums, ignore_label=ignore_label,
                                 align_corners=align_corners)
  loss, _ = mean_in_rounds(per_sample, [logits.astype(jnp.float32)], [labels],
                           jnp.float32(logits.shape[0]))
  return loss


def _dice_sums(logits, labels, *, ignore_label: int, align_corners: bool):
  """(the sum over the n images of their class-averaged Dice loss, no by-product) of float32
  logits [n, h, w, C] at the labels' [n, H, W]."""
  up = resize_bilinear(logits, labels.shape[-2:], align_corners=align_corners)
  valid = (labels != ignore_label)[..., None]
  # The project's softmax: `jax.nn.softmax`'s values, a gradient XLA:CPU runs faster
  # (`ops/attention.py`; value and gradient at 2x240x240x124: 115 -> 90 ms on the 2-core CPU).
  probabilities = softmax(up, -1) * valid
  targets = jax.nn.one_hot(jnp.where(valid[..., 0], labels, 0), up.shape[-1]) * valid
  overlap = 2 * jnp.sum(probabilities * targets, axis=(1, 2)) + DICE_SMOOTH
  total = jnp.sum(probabilities ** DICE_EXPONENT + targets ** DICE_EXPONENT, axis=(1, 2))
  return jnp.sum(jnp.mean(1 - overlap / (total + DICE_SMOOTH), axis=-1)), ()


def _kth_largest(x: jax.Array, k: int) -> jax.Array:
  """The k-th largest (1-based) of the non-negative float32 `x`, exactly: a bisection on the bit
  patterns, which order as the values do for non-negative floats, each of its 31 steps a count
  over `x` (a sum, where `x` is split over devices)."""
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)

  def step(_, bounds):  # count(bits >= low) >= k > count(bits >= high)
    low, high = bounds
    middle = low + (high - low) // 2
    enough = _count_at_least(bits, middle) >= k
    return jnp.where(enough, middle, low), jnp.where(enough, high, middle)

  infinity_bits = 0x7F800000
  steps = 31
  note_loop(steps, _count_at_least, device_share(bits), jax.ShapeDtypeStruct((), jnp.int32))
  low, _ = jax.lax.fori_loop(0, steps, step, (jnp.int32(0), jnp.int32(infinity_bits + 1)))
  return jax.lax.bitcast_convert_type(low, jnp.float32)


def _count_at_least(bits: jax.Array, threshold: jax.Array) -> jax.Array:
  """How many of `bits` are at least `threshold`: a step of `_kth_largest`'s bisection."""
  return jnp.sum(bits >= threshold)


def _pixel_nll(up, labels, valid):
  """Each pixel's softmax cross-entropy [n, H, W] of float32 logits [n, H, W, C] (0 where not
  `valid`)."""
  # The label's logit through a one-hot product rather than `take_along_axis`: XLA fuses the
  # compare-and-multiply into the reduction, and the gradient stays elementwise instead of a
  # scatter (value and gradient at 4x480x480x124 on XLA:CPU: 478-563 vs 621-690 ms).
  one_hot = jax.nn.one_hot(jnp.where(valid, labels, 0), up.shape[-1], dtype=jnp.float32)
  nll = jax.nn.logsumexp(up, axis=-1) - jnp.sum(up * one_hot, axis=-1)
  return jnp.where(valid, nll, 0.0)


def _sample_sums(logits, labels, weights, *, ignore_label: int, align_corners: bool):
  """(sum of the weighted per-pixel losses, number of correct valid pixels) of float32 logits
  [n, h, w, C] at the labels' [n, H, W]."""
  up = resize_bilinear(logits, labels.shape[-2:], align_corners=align_corners)
  valid = labels != ignore_label
  correct = jnp.sum((jnp.argmax(up, axis=-1) == labels) & valid)
  return jnp.sum(_pixel_nll(up, labels, valid) * weights), correct
