"""The part of a network's variables that one inference program reads, in the dtype and the
layout it reads them.

A jitted call flattens and checks every leaf of its arguments on the host, whether the program
reads it or not: DCFM-B2's 352 variable arrays cost ~0.23 ms a call on the 2-core CPU (a trivial
program: 0.013 ms without them, 2026-12-04). That is as much as a small program's device time on a
GPU, and DCFM's non-key programs read 24 and 6 of them (the encoder's shallow prefix; the FFM and
the classifier). And a bfloat16 network keeps float32 parameters, which it converts at every call:
on a GPU each conversion is a kernel of its own before the cuBLAS or cuDNN call that reads it, 170
of the 546 kernels of DCFM-B2's keyframe at 480x480 as XLA compiles it for an H100
(`python -m vssjax.aot`), 12 of the 37 of its non-key frame's shallow prefix. So every program a
predictor runs on a video's variables is a `ProgramOnPart`, and the predictor calls it bound to the
video's variables (`ProgramOnPart.bound`): it passes the program the part it reads
(`VariablesRead`), each array it only converts converted once for the video. The values are the
same bits: the program converted them the same way. The part's arrays are also laid out once in
the order the program's library calls read them (`ProgramOnPart`: on an H100 the convolutions'
kernels, transposed at every call otherwise, 33 more of the keyframe's kernels).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental.layout import Format, Layout
from jax.extend.core import Var


class VariablesRead:
  """`VariablesRead(fn)(variables, *args)`: the part of `variables` (nested dicts of arrays) that
  `fn(variables, *args)`'s outputs depend on: the dicts with no such array dropped, the other
  arrays of a dict with one replaced by None (no leaf to a jitted call, and the key that Flax
  looks up stays: a module that runs may fetch a parameter that this program leaves unused, as
  DCFM's FFM its convolution's bias). A program that computes with such a value raises a TypeError
  at the first call. An array that `fn` only converts, all to one dtype (a bfloat16 module's
  float32 kernel), is in the part converted (`_read_dtypes`). `fn` is the unjitted program: a
  jitted one traces as one call that reads all of its arguments as they are.

  Which arrays a program reads is traced once per signature of the variables and the other
  arguments (their trees, shapes and dtypes, as a jitted function's cache), so a program whose
  branches depend on a shape gets the right part for each. Picking the part takes a fraction of a
  millisecond for hundreds of arrays, and converting them one program on the device:
  `ProgramOnPart.bound` remembers each signature's part for the variables it is bound to."""

  def __init__(self, fn: Callable):
    self._fn = fn
    # signature -> (each leaf's dtype in the part, None where unread; whether unread dicts drop)
    self._parts: dict[Any, tuple[tuple[Any, ...], bool]] = {}

  def __call__(self, variables: Any, *args) -> Any:
    key = call_signature((variables, *args))
    if key not in self._parts:
      self._parts[key] = self._checked_part(variables, args)
    return _part(variables, *self._parts[key])

  def _checked_part(self, variables: Any, args: tuple) -> tuple[tuple[Any, ...], bool]:
    """The dtypes the program reads the leaves in (None: unread), and whether it runs with the
    unread dicts dropped (else it fetches a dict it does not read, and gets None in its arrays'
    places). Checked on shapes alone: nothing is converted or run."""
    dtypes = _read_dtypes(self._fn, variables, args)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), variables)
    for drop_dicts in (True, False):
      try:
        jax.eval_shape(self._fn, _part(shapes, dtypes, drop_dicts), *args)
        return dtypes, drop_dicts
      except Exception as error:  # pylint: disable=broad-except
        failure = error
    name = getattr(self._fn, "__qualname__", self._fn)
    raise TypeError(f"{name} computes with variables its outputs do not depend on, so it needs "
                    f"all of them: {failure}") from failure


class ProgramOnPart:
  """An inference program `fn(variables, *args)` that a predictor calls with only the part of the
  variables it reads, in the dtypes it reads them and laid out as it reads them:
  `bound(variables)(*args)` runs it on that part of `variables` (`VariablesRead`, picked once per
  signature of `args`). Called directly it runs jitted on the variables given, as they are: all
  of them in tests and one-off calls. `fn` is the unjitted program (a jitted one would read all of
  its arguments), kept to compose into another program for the same reason.

  The part's layouts are XLA's to pick (`Layout.AUTO`): a convolution's kernel in the order its
  library call reads it (cuDNN's output-features-first filter, where the variables hold
  height, width, in, out) is put in that order once for the video, by `laid_out`, instead of
  transposed by a kernel of its own at every call (on an H100, 33 of the 381 kernels of DCFM-B2's
  keyframe and 3 of the 25 of its non-key frame's shallow prefix, `python -m vssjax.aot`). On a
  CPU XLA keeps every default layout, and `laid_out` passes the part through. `trace` and
  `compiled` give that program for a part: `vssjax.aot` and the bench compile it, the predictor
  calls it.
  """

  def __init__(self, fn: Callable):
    self.fn = fn
    self.jitted = jax.jit(fn)
    self.read = VariablesRead(fn)
    # (signature of part and args, the part's shardings) -> the program compiled for them
    self._compiled: dict[Any, jax.stages.Compiled] = {}

  def __call__(self, variables: Any, *args) -> Any:
    return self.jitted(variables, *args)

  def trace(self, part: Any, *args) -> jax.stages.Traced:
    """The program traced for `part` (a `read` of the variables on a device, or its shapes, each
    with its sharding) and `args`, the part's layouts left to XLA: run what it compiles to on
    `laid_out(part, executable)`."""
    formats = _layouts_left_to_xla(part)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          part)
    return jax.jit(self.fn, in_shardings=(formats, *[None] * len(args))).trace(shapes, *args)

  def compiled(self, part: Any, *args) -> jax.stages.Compiled:
    """`trace(part, *args)` compiled, once per signature of the part and the arguments and per
    device of the part (an evaluation's predictors run on several)."""
    key = (call_signature((part, *args)),
           tuple(x.sharding for x in jax.tree.leaves(part)))
    if key not in self._compiled:
      self._compiled[key] = self.trace(part, *args).lower().compile()
    return self._compiled[key]

  def bound(self, variables: Any) -> Callable[..., Any]:
    """`lambda *args: <the program compiled for them>(<the part of variables that it reads,
    laid out for it>, *args)` (`compiled`, `laid_out`), each signature's part and program kept: a
    few microseconds a call after the first of a signature."""
    programs: dict[Any, tuple[jax.stages.Compiled, Any]] = {}

    def call(*args):
      signature = call_signature(args)
      if signature not in programs:
        part = jax.device_put(self.read(variables, *args))  # host arrays to the default device
        executable = self.compiled(part, *args)
        programs[signature] = executable, laid_out(part, executable)
      executable, part = programs[signature]
      return executable(part, *args)
    return call


def _layouts_left_to_xla(part: Any) -> Any:
  """Each array of `part` on its own sharding, in the layout XLA picks for it."""
  return jax.tree.map(lambda x: Format(Layout.AUTO, x.sharding), part)


def laid_out(part: Any, executable: jax.stages.Compiled) -> Any:
  """`part`, the first argument of `executable` (`ProgramOnPart.compiled`), in the layouts it was
  compiled for: the arrays already so, the same arrays (not copies)."""
  return jax.tree.map(lambda x, format_: x if x.format == format_ else jax.device_put(x, format_),
                      part, executable.input_formats[0][0])


def _part(variables: Any, dtypes: tuple[Any, ...], drop_dicts: bool) -> Any:
  """`variables` with None in place of the unread arrays, the read ones in their `dtypes`
  (`_in_dtypes`) and, with `drop_dicts` (nested dicts only), less the dicts none of whose arrays
  are read: a jitted call's host cost grows with its arguments' tree nodes too (a trivial program
  given DCFM-B2's shallow part, 2-core CPU: 148 us with None at all 328 unread places, 45 us
  without the unread dicts, 12 us with no variables)."""
  entries = jax.tree_util.tree_flatten_with_path(variables)[0]
  leaves = _in_dtypes([leaf for _, leaf in entries], dtypes)
  if not drop_dicts or not all(isinstance(k, jax.tree_util.DictKey)
                               for path, _ in entries for k in path):
    return jax.tree.unflatten(jax.tree.structure(variables), leaves)
  read_dicts = {path[:-1] for (path, _), dtype in zip(entries, dtypes) if dtype is not None}
  part: dict = {}
  for (path, _), leaf in zip(entries, leaves):
    if path[:-1] in read_dicts:
      node = part
      for entry in path[:-1]:
        node = node.setdefault(entry.key, {})
      node[path[-1].key] = leaf
  return part


def _in_dtypes(leaves: list[Any], dtypes: tuple[Any, ...]) -> list[Any]:
  """Each leaf in its dtype, None where that is None: shapes (`jax.ShapeDtypeStruct`, as
  `vssjax.aot` passes them) described so, the arrays to convert converted in one program."""
  out = [None if dtype is None else leaf for leaf, dtype in zip(leaves, dtypes)]
  convert = [i for i, (leaf, dtype) in enumerate(zip(leaves, dtypes))
             if dtype is not None and leaf.dtype != dtype]
  for i in [i for i in convert if isinstance(leaves[i], jax.ShapeDtypeStruct)]:
    out[i] = jax.ShapeDtypeStruct(leaves[i].shape, dtypes[i], sharding=leaves[i].sharding)
  arrays = [i for i in convert if not isinstance(leaves[i], jax.ShapeDtypeStruct)]
  if arrays:
    converted = _converted([leaves[i] for i in arrays], tuple(dtypes[i] for i in arrays))
    for i, array in zip(arrays, converted):
      out[i] = array
  return out


@functools.partial(jax.jit, static_argnums=1)
def _converted(arrays: list[Any], dtypes: tuple[Any, ...]) -> list[jax.Array]:
  return [array.astype(dtype) for array, dtype in zip(arrays, dtypes)]


def call_signature(args: tuple) -> tuple:
  """What a jitted function's cache tells calls apart by: the tree, each leaf's shape and dtype
  (a Python scalar's type). A bound program computes it at every call, so it stays on attribute
  reads: the dtype's name instead of the dtype took 10 and 26 us of DCFM's non-key calls (one
  array; two and one) on the 2-core CPU, against 2 and 3 us now (2026-12-05)."""
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((getattr(x, "shape", ()), getattr(x, "dtype", type(x))) for x in leaves)


def _read_dtypes(fn: Callable, variables: Any, args: tuple) -> tuple[Any, ...]:
  """Per leaf of `variables` (flattening order), the dtype the program reads it in: None where
  its outputs do not depend on it (a backward pass over the traced program's equations: an
  equation whose outputs are needed, or that has side effects, needs its inputs); the one dtype
  it converts it to where that is all it does with it (`_only_converted_to`); else its own."""
  jaxpr = jax.make_jaxpr(fn)(variables, *args).jaxpr
  needed = {v for v in jaxpr.outvars if isinstance(v, Var)}
  used = []  # the equations the outputs need, in reverse order
  for equation in reversed(jaxpr.eqns):
    if equation.effects or any(v in needed for v in equation.outvars):
      needed.update(v for v in equation.invars if isinstance(v, Var))
      used.append(equation)
  uses = _uses(used[::-1], jaxpr.outvars)
  num_leaves = jax.tree.structure(variables).num_leaves
  dtypes = []
  for v in jaxpr.invars[:num_leaves]:
    converted_to = _only_converted_to(v, uses)
    dtypes.append(None if v not in needed
                  else v.aval.dtype if converted_to is None else converted_to)
  return tuple(dtypes)


def _uses(equations, outputs) -> dict[Var, list[tuple[Any, int | None]]]:
  """Each variable's uses: (equation, operand position), and (None, None) where it is one of
  the `outputs`."""
  uses: dict[Var, list[tuple[Any, int | None]]] = {}
  for equation in equations:
    for position, v in enumerate(equation.invars):
      if isinstance(v, Var):
        uses.setdefault(v, []).append((equation, position))
  for v in outputs:
    if isinstance(v, Var):
      uses.setdefault(v, []).append((None, None))
  return uses


# Primitives that only pick or move their first operand's elements: their outputs converted are
# the same values as their operand converted first, then picked or moved.
_MOVES_ELEMENTS = frozenset({"slice", "squeeze", "reshape", "transpose", "rev",
                             "broadcast_in_dim", "copy"})


def _only_converted_to(v: Var, uses: dict[Var, list[tuple[Any, int | None]]]) -> Any:
  """The one dtype that every use of `v` converts it to, None where a use does anything else
  (returning it included): a jitted helper's use counts as that helper's uses of its parameter,
  and a slice's (a squeeze's, ... `_MOVES_ELEMENTS`) as the uses of its output (DCFM's FFM
  converts the two slices of its convolution's kernel, one for each of its inputs)."""
  dtypes = set()
  for equation, position in uses.get(v, []):
    name = None if equation is None else equation.primitive.name
    if name == "convert_element_type":
      dtypes.add(np.dtype(equation.params["new_dtype"]))
    elif name in _MOVES_ELEMENTS and position == 0:
      dtypes.update(_only_converted_to(out, uses) for out in equation.outvars)
    elif name in ("jit", "pjit"):
      inner = equation.params["jaxpr"].jaxpr
      dtypes.add(_only_converted_to(inner.invars[position], _uses(inner.eqns, inner.outvars)))
    else:
      return None
  return dtypes.pop() if len(dtypes) == 1 and None not in dtypes else None
