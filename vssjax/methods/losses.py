"""Loss pieces shared by the methods."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp

from data_pipelines.sources.base import IGNORE_LABEL
from vssjax import parallel
from vssjax.errors import SetupError
from vssjax.ops.resize import resize_bilinear

LOSS_AVERAGES = ("valid", "all")  # `cross_entropy_at_label_size`'s divisors


def cross_entropy_at_label_size(
    logits: jax.Array, labels: jax.Array, *, average: str = "valid",
    ignore_label: int = IGNORE_LABEL, class_weights: Sequence[float] | jax.Array | None = None,
    align_corners: bool = False) -> tuple[jax.Array, jax.Array]:
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

  The whole batch's upsampled logits are never made at once, nor kept for the backward pass
  (`_mean_cross_entropy`).
  """
  if average not in LOSS_AVERAGES:
    raise SetupError(f"loss average must be one of {LOSS_AVERAGES}, got {average!r}")
  valid = labels != ignore_label
  if class_weights is None:
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
  _note_rounds(logits, labels, class_weights is not None, align_corners)
  loss, correct = _mean_cross_entropy(logits.astype(jnp.float32), labels, weights, divisor,
                                      ignore_label, align_corners)
  return loss, correct / jnp.maximum(valid.sum(), 1)


def _sample_sums(logits, labels, weights, ignore_label: int, align_corners: bool):
  """(sum of the weighted per-pixel losses, number of correct valid pixels) of float32 logits
  [n, h, w, C] at the labels' [n, H, W]."""
  up = resize_bilinear(logits, labels.shape[-2:], align_corners=align_corners)
  valid = labels != ignore_label
  # The label's logit through a one-hot product rather than `take_along_axis`: XLA fuses the
  # compare-and-multiply into the reduction, and the gradient stays elementwise instead of a
  # scatter (value and gradient at 4x480x480x124 on XLA:CPU: 478-563 vs 621-690 ms).
  one_hot = jax.nn.one_hot(jnp.where(valid, labels, 0), up.shape[-1], dtype=jnp.float32)
  nll = jax.nn.logsumexp(up, axis=-1) - jnp.sum(up * one_hot, axis=-1)
  correct = jnp.sum((jnp.argmax(up, axis=-1) == labels) & valid)
  return jnp.sum(jnp.where(valid, nll, 0.0) * weights), correct


def _in_rounds(fn, *arrays):
  """`fn` over the batch a few samples at a time: one per piece that the batch is split into in
  the traced program (`parallel.batch_shards`), so that each device takes one of its own samples
  a round and none waits for another's. `fn(*arrays_of_the_round)` -> a tree of results; the
  rounds' results come stacked on a leading axis, samples in the order given."""
  n = arrays[0].shape[0]
  pieces = _pieces(n)
  # Sample d * (n / pieces) + j, the j-th of device d's contiguous share, goes in round j.
  rounds = [x.reshape(pieces, n // pieces, *x.shape[1:]).swapaxes(0, 1) for x in arrays]
  return jax.lax.map(lambda xs: fn(*xs), rounds)


def _pieces(batch: int) -> int:
  """How many samples a round of `_in_rounds` takes."""
  return math.gcd(batch, parallel.batch_shards())


def _unrounded(x: jax.Array) -> jax.Array:
  """Stacked per-round samples [rounds, pieces, ...] back in the batch's order [N, ...]."""
  return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _mean_cross_entropy(logits, labels, weights, divisor, ignore_label, align_corners):
  """(the batch's weighted per-pixel losses summed, over `divisor`; correct valid pixels),
  computed in rounds of a few samples (`_in_rounds`).

  Each round's gradient is computed in the forward pass, with its value, for the cotangent 1 /
  divisor that the division passes back to the sum, as the plain composition's backward pass
  computes it (the loss's gradient is the same to float32 rounding; mostly bit for bit on
  XLA:CPU). The backward pass only scales the kept gradient, at the logits' resolution, by the
  loss's cotangent. Rematerialising the rounds instead (`jax.checkpoint`) would upsample every
  sample twice. At SegFormer-B1's 16 x 480x480 crops and 124 classes the upsampled float32 logits
  are 1.8 GB, and their gradient as much: kept whole, they were most of a training step's
  temporaries besides the backbone's activations (docs/scaling.md, "Activation memory")."""
  sums, correct = _in_rounds(
      lambda x, y, w: _sample_sums(x, y, w, ignore_label, align_corners), logits, labels, weights)
  return sums.sum() / divisor, correct.sum()


def _mean_cross_entropy_forward(logits, labels, weights, divisor, ignore_label, align_corners):
  def round_value_and_gradient(x, y, w):
    summed, backward, correct = jax.vjp(
        lambda x: _sample_sums(x, y, w, ignore_label, align_corners), x, has_aux=True)
    gradient, = backward(jnp.float32(1) / divisor)
    return summed, correct, gradient
  sums, correct, gradients = _in_rounds(round_value_and_gradient, logits, labels, weights)
  return (sums.sum() / divisor, correct.sum()), _unrounded(gradients)


def _mean_cross_entropy_backward(ignore_label, align_corners, gradient, cotangents):
  del ignore_label, align_corners
  return cotangents[0] * gradient, None, None, None


_mean_cross_entropy.defvjp(_mean_cross_entropy_forward, _mean_cross_entropy_backward)


@dataclasses.dataclass(frozen=True)
class Rounds:
  """One traced cross-entropy's loop over its rounds (`_in_rounds`), which XLA's cost analysis
  counts once: `count` rounds, each of them, on a device, about what `program(*arguments)` costs
  (the loss's value and gradient on one sample)."""
  count: int
  logits: jax.ShapeDtypeStruct  # one sample's
  labels: jax.ShapeDtypeStruct
  weighted: bool
  align_corners: bool

  @property
  def arguments(self) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    return self.logits, self.labels

  def program(self, logits: jax.Array, labels: jax.Array):
    weights = jnp.ones(logits.shape[-1:]) if self.weighted else None
    return jax.value_and_grad(lambda x: cross_entropy_at_label_size(
        x, labels, class_weights=weights, align_corners=self.align_corners)[0])(logits)


_traced_rounds: contextvars.ContextVar[list[Rounds] | None] = contextvars.ContextVar(
    "traced_rounds", default=None)


@contextlib.contextmanager
def rounds_traced() -> Iterator[list[Rounds]]:
  """Lists the `Rounds` of every cross-entropy traced in the block: what the bench adds to the
  cost XLA counts for a train step (`--mode=bench`). Only a fresh trace notes them: a jitted
  function traced before, whose trace JAX reuses, runs none of the loss's Python."""
  token = _traced_rounds.set([])
  try:
    yield _traced_rounds.get()
  finally:
    _traced_rounds.reset(token)


def _note_rounds(logits, labels, weighted: bool, align_corners: bool) -> None:
  """Adds a traced cross-entropy's `Rounds` to the list of the enclosing `rounds_traced`."""
  traced = _traced_rounds.get()
  if traced is not None:
    n = logits.shape[0]
    one_sample = lambda x: jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    traced.append(Rounds(n // _pieces(n), one_sample(logits), one_sample(labels), weighted,
                         align_corners))
