"""The part of a network's variables that one inference program reads.

A jitted call flattens and checks every leaf of its arguments on the host, whether the program
reads it or not: DCFM-B2's 352 variable arrays cost ~0.23 ms a call on the 2-core CPU (a trivial
program: 0.013 ms without them, 2026-12-04). That is as much as a small program's device time on a
GPU, and DCFM's non-key programs read 24 and 6 of them (the encoder's shallow prefix; the FFM and
the classifier). A method therefore makes such a program a `ProgramOnPart`, and its predictor calls
the program bound to the video's variables, which passes it that part (`VariablesRead`)."""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.extend.core import Var


class VariablesRead:
  """`VariablesRead(fn)(variables, *args)`: the part of `variables` (nested dicts of arrays) that
  `fn(variables, *args)`'s outputs depend on: the dicts with no such array dropped, the other
  arrays of a dict with one replaced by None (no leaf to a jitted call, and the key that Flax
  looks up stays: a module that runs may fetch a parameter that this program leaves unused, as
  DCFM's FFM its convolution's bias). A program that computes with such a value raises a TypeError
  at the first call. `fn` is the unjitted program: a jitted one traces as one call that reads all
  of its arguments.

  Which arrays a program reads is traced once per signature of the variables and the other
  arguments (their trees, shapes and dtypes, as a jitted function's cache), so a program whose
  branches depend on a shape gets the right part for each. Picking the part takes a fraction of a
  millisecond for hundreds of arrays: `ProgramOnPart.bound` remembers each signature's part for
  the variables it is bound to."""

  def __init__(self, fn: Callable):
    self._fn = fn
    self._parts: dict[Any, tuple[tuple[bool, ...], bool]] = {}  # key -> (mask, drop dicts)

  def __call__(self, variables: Any, *args) -> Any:
    key = _signature((variables, *args))
    if key not in self._parts:
      self._parts[key] = self._checked_part(variables, args)
    return _part(variables, *self._parts[key])

  def _checked_part(self, variables: Any, args: tuple) -> tuple[tuple[bool, ...], bool]:
    """The read mask, and whether the program runs with the unread dicts dropped (else it fetches
    a dict it does not read, and gets None in its arrays' places)."""
    mask = _read_mask(self._fn, variables, args)
    for drop_dicts in (True, False):
      try:
        jax.eval_shape(self._fn, _part(variables, mask, drop_dicts), *args)
        return mask, drop_dicts
      except Exception as error:  # pylint: disable=broad-except
        failure = error
    name = getattr(self._fn, "__qualname__", self._fn)
    raise TypeError(f"{name} computes with variables its outputs do not depend on, so it needs "
                    f"all of them: {failure}") from failure


class ProgramOnPart:
  """An inference program `fn(variables, *args)`, jitted, that a predictor calls with only the
  part of the variables it reads: `bound(variables)(*args)` runs it on that part of `variables`
  (`VariablesRead`, picked once per signature of `args`). Called directly it runs on the variables
  given, all of them in tests and one-off calls. `fn` is the unjitted program (a jitted one would
  read all of its arguments); `jitted` is the program to lower or compile."""

  def __init__(self, fn: Callable):
    self.jitted = jax.jit(fn)
    self.read = VariablesRead(fn)

  def __call__(self, variables: Any, *args) -> Any:
    return self.jitted(variables, *args)

  def bound(self, variables: Any) -> Callable[..., Any]:
    """`lambda *args: self(<the part of variables that the program reads>, *args)`, each
    signature's part kept: a few microseconds a call after the first of a signature."""
    parts: dict[Any, Any] = {}

    def call(*args):
      signature = _signature(args)
      if signature not in parts:
        parts[signature] = self.read(variables, *args)
      return self.jitted(parts[signature], *args)
    return call


def _part(variables: Any, mask: tuple[bool, ...], drop_dicts: bool) -> Any:
  """`variables` with None in place of the unread arrays and, with `drop_dicts` (nested dicts
  only), less the dicts none of whose arrays are read: a jitted call's host cost grows with its
  arguments' tree nodes too (a trivial program given DCFM-B2's shallow part, 2-core CPU: 148 us
  with None at all 328 unread places, 45 us without the unread dicts, 12 us with no variables)."""
  entries = jax.tree_util.tree_flatten_with_path(variables)[0]
  if not drop_dicts or not all(isinstance(k, jax.tree_util.DictKey)
                               for path, _ in entries for k in path):
    return jax.tree.unflatten(jax.tree.structure(variables),
                              [leaf if read else None for (_, leaf), read in zip(entries, mask)])
  read_dicts = {path[:-1] for (path, _), read in zip(entries, mask) if read}
  part: dict = {}
  for (path, leaf), read in zip(entries, mask):
    if read or path[:-1] in read_dicts:
      node = part
      for entry in path[:-1]:
        node = node.setdefault(entry.key, {})
      node[path[-1].key] = leaf if read else None
  return part


def _signature(args: tuple) -> tuple:
  """What a jitted function's cache tells calls apart by: the tree, each leaf's shape and dtype
  (a Python scalar's type). A bound program computes it at every call, so it stays on attribute
  reads: the dtype's name instead of the dtype took 10 and 26 us of DCFM's non-key calls (one
  array; two and one) on the 2-core CPU, against 2 and 3 us now (2026-12-05)."""
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((getattr(x, "shape", ()), getattr(x, "dtype", type(x))) for x in leaves)


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
