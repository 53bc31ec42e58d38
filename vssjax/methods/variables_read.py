"""The part of a network's variables that one inference program reads.

A jitted call flattens and checks every leaf of its arguments on the host, whether the program
reads it or not: DCFM-B2's 352 variable arrays cost ~0.23 ms a call on the 2-core CPU (a trivial
program: 0.013 ms without them, 2026-12-04). That is as much as a small program's device time on a
GPU, and DCFM's non-key programs read 24 and 6 of them (the encoder's shallow prefix; the FFM and
the classifier). A predictor therefore passes such a program that part (`VariablesRead`)."""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.extend.core import Var


class VariablesRead:
  """`VariablesRead(fn)(variables, *args)`: `variables` with None in place of the arrays whose
  values `fn(variables, *args)`'s outputs do not depend on (None is no leaf to a jitted call, and
  keeps the key that Flax looks up: a module may fetch a parameter that this program then leaves
  unused, as DCFM's FFM its convolution's bias; one that computes with such a value raises a
  TypeError at the first call). `fn` is the unjitted program: a jitted one traces as one call that
  reads all of its arguments.

  Which arrays a program reads is traced once per structure of the variables and signature of the
  other arguments (their tree and shapes, as a jitted function's cache), so a program whose
  branches depend on a shape gets the right part for each. Picking the part takes a fraction of a
  millisecond for hundreds of arrays: a predictor holds `for_variables(variables)`, which
  remembers each signature's part for the video."""

  def __init__(self, fn: Callable):
    self._fn = fn
    self._masks: dict[Any, tuple[bool, ...]] = {}

  def __call__(self, variables: Any, *args) -> Any:
    leaves, treedef = jax.tree.flatten(variables)
    key = (treedef, _signature(args))
    checked = key in self._masks
    if not checked:
      self._masks[key] = _read_mask(self._fn, variables, args)
    subset = jax.tree.unflatten(treedef, [leaf if read else None
                                          for leaf, read in zip(leaves, self._masks[key])])
    if not checked:
      try:  # a program that computes with a value and then drops it cannot take the subset
        jax.eval_shape(self._fn, subset, *args)
      except Exception as error:
        del self._masks[key]
        name = getattr(self._fn, "__qualname__", self._fn)
        raise TypeError(f"{name} computes with variables its outputs do not depend on, so it "
                        f"needs all of them: {error}") from error
    return subset

  def for_variables(self, variables: Any) -> Callable[..., Any]:
    """`lambda *args: self(variables, *args)`, each signature's part kept: a few microseconds a
    call after the first of a signature."""
    parts: dict[Any, Any] = {}

    def part(*args):
      signature = _signature(args)
      if signature not in parts:
        parts[signature] = self(variables, *args)
      return parts[signature]
    return part


def _signature(args: tuple) -> tuple:
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


def _read_mask(fn: Callable, variables: Any, args: tuple) -> tuple[bool, ...]:
  """Per leaf of `variables` (flattening order), whether the program's outputs depend on it: a
  backward pass over the traced program's equations (an equation whose outputs are needed, or that
  has side effects, needs its inputs)."""
  jaxpr = jax.make_jaxpr(fn)(variables, *args).jaxpr
  needed = {v for v in jaxpr.outvars if isinstance(v, Var)}
  for equation in reversed(jaxpr.eqns):
    if equation.effects or any(v in needed for v in equation.outvars):
      needed.update(v for v in equation.invars if isinstance(v, Var))
  num_leaves = jax.tree.structure(variables).num_leaves
  return tuple(v in needed for v in jaxpr.invars[:num_leaves])
