"""A loss summed over a batch's samples, taken a few samples at a time.

The segmentation losses work at label resolution: they upsample the logits first (MiT's 1/4
resolution 4x, PSPNet's 1/8 8x). SegFormer-B1's 16 frames of 124 float32 maps at 480x480 are then
1.8 GB, and their gradient as much; kept whole for the backward pass, they were most of a training
step's temporaries besides the backbone's activations (docs/scaling.md, "Activation memory").
`mean_in_rounds` runs a per-sample loss in rounds (`jax.lax.map`) of one sample per device, and
computes each round's gradient with its value (`jax.custom_vjp`): only the gradient at the inputs'
resolution is kept, and nothing is computed twice (rematerialising the rounds with
`jax.checkpoint` instead would upsample every sample again in the backward pass).

XLA's cost analysis counts a loop's body once: `rounds_traced` lists the loops that a trace makes
(`Rounds`), for the bench to add the rounds it leaves out.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp

from vssjax import parallel

# per_sample(*differentiable, *data) -> (float32 value summed over the samples given, a tree of
# by-products summed likewise, without gradient)
PerSample = Callable[..., tuple[jax.Array, object]]


def mean_in_rounds(per_sample: PerSample, differentiable: Sequence[jax.Array],
                   data: Sequence[jax.Array], divisor: jax.Array) -> tuple[jax.Array, object]:
  """(the sum over the batch of `per_sample`'s value, over `divisor`; its by-products summed).

  `per_sample` is given [n, ...] slices, the n samples of a round, of every array of
  `differentiable` (float32, differentiated) and of `data` (not differentiated); `divisor` is a
  float32 scalar without gradient. The gradient is the plain composition's (every sample at once,
  then divided) to float32 rounding: each round's is taken for the cotangent 1 / divisor that the
  division passes back to the sum, and the backward pass scales the kept gradients by the mean's
  cotangent (bit for bit the same at a cotangent of 1 in most cases on XLA:CPU).

  A round takes one sample of each device's contiguous share of the batch (the mesh the program
  is traced under, `parallel.batch_shards`: the train step's), so the devices exchange nothing
  but the sums.
  """
  differentiable, data = tuple(differentiable), tuple(data)
  _note_rounds(functools.partial(_value_and_gradients, per_sample), differentiable, data)
  return _mean(per_sample, differentiable, data, divisor)


def _value_and_gradients(per_sample: PerSample, differentiable, data):
  """`mean_in_rounds`' value and gradients of a batch taken whole (a divisor of 1): one round's
  computation, for the bench (`Rounds`)."""
  return jax.value_and_grad(
      lambda x: _mean(per_sample, x, data, jnp.float32(1))[0])(tuple(differentiable))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _mean(per_sample, differentiable, data, divisor):
  values, by_products = _in_rounds(per_sample, *differentiable, *data)
  return values.sum() / divisor, jax.tree.map(lambda x: x.sum(0), by_products)


def _mean_forward(per_sample, differentiable, data, divisor):
  count = len(differentiable)

  def round_value_and_gradients(*arrays):
    value, backward, by_products = jax.vjp(
        lambda *x: per_sample(*x, *arrays[count:]), *arrays[:count], has_aux=True)
    return value, by_products, backward(jnp.float32(1) / divisor)

  values, by_products, gradients = _in_rounds(round_value_and_gradients, *differentiable, *data)
  return ((values.sum() / divisor, jax.tree.map(lambda x: x.sum(0), by_products)),
          tuple(map(_unrounded, gradients)))


def _mean_backward(per_sample, gradients, cotangents):
  del per_sample
  return tuple(cotangents[0] * gradient for gradient in gradients), None, None


_mean.defvjp(_mean_forward, _mean_backward)


def map_in_rounds(fn: Callable[..., jax.Array], *arrays: jax.Array) -> jax.Array:
  """`fn` of [n, ...] slices of `arrays` taken in `mean_in_rounds`' rounds, its per-sample results
  [n, ...] back in the batch's order [N, ...]: a per-pixel map of a batch (a loss before it is
  reduced), without making every sample's upsampled logits at once. For values only: its
  gradient would keep every round's intermediates."""
  _note_rounds(fn, *arrays)
  return _unrounded(_in_rounds(fn, *arrays))


def _in_rounds(fn, *arrays):
  """`fn` over the batch a few samples at a time: one per piece that the batch is split into in
  the traced program (`parallel.batch_shards`), so that each device takes one of its own samples
  a round and none waits for another's. The rounds' results come stacked on a leading axis."""
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


@dataclasses.dataclass(frozen=True)
class Rounds:
  """One traced loop, which XLA's cost analysis counts once: `count` iterations, each of them, on a
  device, about what `program(*arguments)` costs (`mean_in_rounds`: the loss's value and
  gradients on one sample; `map_in_rounds`: its function on one sample, such as OHEM's selection
  pass; `note_loop`'s: OHEM's bisection, a count over a device's losses)."""
  count: int
  program: Callable[..., object]
  arguments: tuple[object, ...]  # trees of jax.ShapeDtypeStruct


def _note_rounds(program: Callable[..., object], *arguments) -> None:
  """Lists the loop that `_in_rounds` makes of `arguments` (trees of [N, ...] arrays) in the
  `rounds_traced` block being traced, if any, as `program` on one sample's arguments."""
  n = jax.tree.leaves(arguments)[0].shape[0]
  note_loop(n // _pieces(n), program, *jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype), arguments))


def note_loop(count: int, program: Callable[..., object], *arguments) -> None:
  """Lists a loop of `count` iterations being traced in a `rounds_traced` block, if any, each
  iteration about what `program(*arguments)` costs (`arguments`: what a device's iteration reads,
  as shapes), for the bench to add the iterations XLA's cost analysis leaves out."""
  traced = _traced_rounds.get()
  if traced is not None:
    traced.append(Rounds(count, program, tuple(arguments)))


def device_share(x: jax.Array) -> jax.ShapeDtypeStruct:
  """The shape of the share of the batch-major `x` that a device holds in the program being
  traced (`parallel.batch_shards`), for `note_loop`."""
  return jax.ShapeDtypeStruct((x.shape[0] // _pieces(x.shape[0]), *x.shape[1:]), x.dtype)


_traced_rounds: contextvars.ContextVar[list[Rounds] | None] = contextvars.ContextVar(
    "traced_rounds", default=None)


@contextlib.contextmanager
def rounds_traced() -> Iterator[list[Rounds]]:
  """Lists the `Rounds` of every `mean_in_rounds`, `map_in_rounds` and `note_loop` traced in the
  block: what the bench adds to the cost XLA counts for a train step (`--mode=bench`). Only a
  fresh trace notes them: a jitted function traced before, whose trace JAX reuses, runs none of
  the loss's Python."""
  token = _traced_rounds.set([])
  try:
    yield _traced_rounds.get()
  finally:
    _traced_rounds.reset(token)
