"""Where a compiled program's time goes: per-HLO-op device time from the JAX profiler.

`--config.bench.profile=True` runs this on every JAX program `--mode=bench` times and writes one
Markdown table per program (workdir/profile/*.md): each op's time per call, its share, its output
shape and the JAX source op it came from (the HLO `op_name` metadata, e.g.
`.../decode_head/linear_fuse/conv/...`). Op events come from the profiler's XSpace: on XLA:CPU
the `tf_XLA*` thread lines of the host plane (thunk bookkeeping events excluded); on a `/device:*`
plane its `XLA Ops` line where it has one (TPU), else the kernels of its stream lines that carry
an `hlo_op` stat, each kernel counted for that HLO op (the raw GPU trace: `XLA Ops` is a line
that only the TensorBoard/XProf conversion derives, and an H200 run found none). An op counts its
self time: a `while` event of XLA:CPU encloses its body's op events on its line, which count for
themselves. Times of ops that run concurrently add up, so the total can exceed the wall time.

The trace stays in workdir/profile/<program>/process_<i>/ with the program's HLO text, so that the
table can be made again wherever the folder is copied, e.g. a GPU's trace brought back to a
laptop after a fix of the reader above, without device time:

  python -m vssjax.op_profile workdir/profile/keyframe_bfloat16/process_0 [--top=60]
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re
from typing import Any, Callable

import jax
from absl import app, flags

from vssjax.command_line import user_errors_in_one_line
from vssjax.errors import SetupError

_CPU_BOOKKEEPING = ("ThunkExecutor", "SlinkyThreadPool")
_HLO_MODULE = re.compile(r"HloModule ([\w.\-]+)")
# An instruction's name and result shape: one array's (`f32[1,48,48]{2,1,0}`) or a tuple's,
# whose parts are separated by ", " (`(s32[], f32[8]{0})`).
# XLA numbers the parts of a long tuple in comments: `(f32[], ..., /*index=5*/f32[8]{0}, ...)`.
_INDEX_COMMENT = re.compile(r"/\*index=\d+\*/")
_HLO_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\([^=]*?\)|\S+) ")
_OP_NAME = re.compile(r'op_name="([^"]+)"')
# What a trace folder holds besides the trace, for `ops_of_saved_trace`.
_HLO_FILE = "program.hlo.txt"
_CALLS_FILE = "program.json"


@dataclasses.dataclass(frozen=True)
class OpTime:
  name: str  # HLO instruction, e.g. 'fusion.12'
  ms_per_call: float
  share: float  # of the summed op time
  shape: str  # HLO result shape
  source: str  # JAX op_name metadata


def _op_events(profile, module: str | None) -> collections.Counter:
  """Summed self time (ns) per HLO op name over the op events of an XSpace; with `module`, only
  for the ops of that HLO module (an event that names another module is another program's, e.g. an
  eager op between two training steps; one that names none is kept)."""
  totals = collections.Counter()
  for name, self_ns, stats in _named_op_events(profile):
    if _of_module(stats, module):
      totals[name] += self_ns
  return totals


def _named_op_events(profile):
  """(HLO op name, its self time in ns, its stats as a dict) for each op event of the XSpace, as
  the module docstring says."""
  for plane in profile.planes:
    if plane.name.startswith("/host:CPU"):
      for line in plane.lines:
        if line.name.startswith("tf_XLA"):
          events = [event for event in line.events
                    if not event.name.startswith(_CPU_BOOKKEEPING)]
          yield from ((event.name, self_ns, dict(event.stats))
                      for event, self_ns in _self_times(events))
    elif plane.name.startswith("/device:"):
      xla_ops = [line for line in plane.lines if line.name == "XLA Ops"]
      if xla_ops:
        yield from ((event.name, self_ns, dict(event.stats))
                    for event, self_ns in _self_times(list(xla_ops[0].events)))
        continue
      for line in plane.lines:  # one a CUDA stream ("Stream #7(Kernel,MemcpyH2D)")
        for event in line.events:
          stats = dict(event.stats)
          hlo_op = stats.get("hlo_op")  # from XLA's annotation of the launch
          if hlo_op is not None:
            yield str(hlo_op), event.duration_ns, stats  # kernels of a stream do not nest


def _self_times(events: list) -> list[tuple[Any, int]]:
  """Each event of one trace line with its self time: its duration less that of the events
  nested in it. On XLA:CPU a `while` (a `conditional`, a `call`) is an event enclosing its body's
  op events on the same line: counted whole, its body's time was counted twice (a training step's
  loop at 16.6% of the summed time, its body's ops again beside it)."""
  ordered = sorted(events, key=lambda event: (event.start_ns, -event.duration_ns))
  self_ns = {id(event): event.duration_ns for event in ordered}
  open_events = []  # the chain of events enclosing the current one, outermost first
  for event in ordered:
    while open_events and open_events[-1].end_ns <= event.start_ns:
      open_events.pop()
    if open_events and event.end_ns <= open_events[-1].end_ns:
      self_ns[id(open_events[-1])] -= event.duration_ns
    open_events.append(event)
  return [(event, self_ns[id(event)]) for event in ordered]


def _of_module(stats: dict, module: str | None) -> bool:
  """Whether an op event with these stats is of HLO module `module` (None: any); one that names
  none is."""
  if module is None:
    return True
  named = stats.get("hlo_module")  # 'jit_step', or 'jit_step(<program id>)'
  return named is None or str(named) == module or str(named).startswith(f"{module}(")


def _hlo_module(hlo_text: str) -> tuple[str, dict[str, tuple[str, str]]]:
  """A compiled program's HLO module name, and HLO instruction name -> (result shape, JAX op_name
  or ''), from its text (`compiled.as_text()`)."""
  module = _HLO_MODULE.match(hlo_text)
  instructions = {}
  for line in hlo_text.splitlines():
    match = _HLO_INSTRUCTION.match(_INDEX_COMMENT.sub("", line))
    if match and match.group(1) not in instructions:
      op_name = _OP_NAME.search(line)
      instructions[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "")
  return (module.group(1) if module else ""), instructions


def profile_ops(run_once: Callable[[], Any], compiled, trace_dir: str | pathlib.Path,
                calls: int = 5) -> list[OpTime]:
  """Traces `calls` calls of `run_once` (already warm) into `trace_dir` and returns the ops,
  slowest first, the program saved beside the trace (`ops_with_program_saved`)."""
  with jax.profiler.trace(str(trace_dir)):
    for _ in range(calls):
      jax.block_until_ready(run_once())
  return ops_with_program_saved(trace_dir, compiled.as_text(), calls)


def ops_with_program_saved(trace_dir: str | pathlib.Path, hlo_text: str,
                           calls: int) -> list[OpTime]:
  """`ops_in_trace`, the program saved beside the trace first (`save_program`): a trace that the
  reader cannot table is kept whole, to be read again once the reader is fixed."""
  save_program(trace_dir, hlo_text, calls)
  return ops_in_trace(trace_dir, hlo_text, calls)


def save_program(trace_dir: str | pathlib.Path, hlo_text: str, calls: int) -> None:
  """Writes beside a trace what its table is made from: the traced program's HLO text and how many
  times the trace ran it (`ops_of_saved_trace` reads them)."""
  trace_dir = pathlib.Path(trace_dir)
  (trace_dir / _HLO_FILE).write_text(hlo_text)
  (trace_dir / _CALLS_FILE).write_text(json.dumps({"calls": calls}) + "\n")


def ops_of_saved_trace(trace_dir: str | pathlib.Path) -> list[OpTime]:
  """The ops of the trace under `trace_dir` that `profile_ops` (or training's `profile_steps`)
  wrote, with the program it saved there."""
  trace_dir = pathlib.Path(trace_dir)
  if not trace_dir.is_dir():
    raise SetupError(f"{trace_dir} is not a folder (a relative path starts at "
                     f"{pathlib.Path.cwd()})")
  processes = sorted(trace_dir.glob("process_*/"))
  if not (trace_dir / _HLO_FILE).exists() and len(processes) == 1:  # a program's folder
    trace_dir = processes[0]
  for name in (_HLO_FILE, _CALLS_FILE):
    if not (trace_dir / name).is_file():
      raise SetupError(f"{trace_dir}: no {name}; give a trace folder that --mode=bench's "
                       "bench.profile or train.profile_steps wrote (e.g. "
                       "workdir/profile/<program>/process_0)")
  calls = json.loads((trace_dir / _CALLS_FILE).read_text())["calls"]
  return ops_in_trace(trace_dir, (trace_dir / _HLO_FILE).read_text(), calls)


def ops_in_trace(trace_dir: str | pathlib.Path, hlo_text: str, calls: int) -> list[OpTime]:
  """The ops of the program whose HLO is `hlo_text` in the newest JAX profiler trace under
  `trace_dir`, which ran it `calls` times, slowest first (other programs' ops in the trace are
  left out)."""
  traces = list(pathlib.Path(trace_dir).rglob("*.xplane.pb"))
  if not traces:
    raise SetupError(f"{trace_dir}: no profiler trace (*.xplane.pb) under it")
  xplane = max(traces, key=lambda path: path.stat().st_mtime)
  module, instructions = _hlo_module(hlo_text)
  profile = jax.profiler.ProfileData.from_file(str(xplane))
  # Only the program's own instructions: the runtime's other events on these lines are not ops.
  totals = {name: ns for name, ns in _op_events(profile, module).items() if name in instructions}
  if not totals:  # a profiler that names modules in another form: every module's events
    totals = {name: ns for name, ns in _op_events(profile, None).items() if name in instructions}
  if not totals:
    raise LookupError(f"no op of {module or 'the program'} in the profiler's trace; its lines: "
                      f"{_trace_lines(profile)}")
  summed = sum(totals.values()) or 1
  return [OpTime(name, ns / 1e6 / calls, ns / summed, *instructions[name])
          for name, ns in sorted(totals.items(), key=lambda item: -item[1])]


def _trace_lines(profile, limit: int = 12) -> str:
  """The busiest lines of an XSpace, each with its event count and its first event's name and stat
  names: what a trace held when none of its events could be read as the program's ops. (A
  profile's lines and events are iterables without a length.)"""
  lines = sorted(((plane.name, line.name, list(line.events)) for plane in profile.planes
                  for line in plane.lines), key=lambda item: -len(item[2]))
  return "; ".join(
      f"{plane}/{line}: {len(events)} events"
      + (f", e.g. {events[0].name[:60]!r} with stats "
         f"{sorted(str(key) for key, _ in events[0].stats)}" if events else "")
      for plane, line, events in lines[:limit]) or "none"


def format_op_table(title: str, ops: list[OpTime], top: int = 30) -> str:
  total_ms = sum(op.ms_per_call for op in ops)
  lines = [f"# {title}", "",
           f"Summed op time {total_ms:.3f} ms per call over {len(ops)} ops"
           + (f"; the {top} slowest:" if top < len(ops) else ":"), "",
           "| ms/call | share | op | shape | source |", "|---|---|---|---|---|"]
  for op in ops[:top]:
    lines.append(f"| {op.ms_per_call:.3f} | {op.share:.1%} | {op.name} | `{op.shape}` | "
                 f"`{op.source}` |")
  return "\n".join(lines) + "\n"


@user_errors_in_one_line
def main(argv):
  """Prints the op table of a saved trace folder (module docstring)."""
  if len(argv) != 2:
    raise app.UsageError("usage: python -m vssjax.op_profile TRACE_FOLDER [--top=N]")
  ops = ops_of_saved_trace(argv[1])
  if flags.FLAGS.top < 1:
    raise app.UsageError(f"--top={flags.FLAGS.top}: list at least 1 op")
  print(format_op_table(argv[1], ops, top=flags.FLAGS.top))


if __name__ == "__main__":
  # Defined here, not at import: other CLIs define flags of the same names in the same process.
  flags.DEFINE_integer("top", 30, "How many of the slowest ops the table lists.")
  app.run(main)
