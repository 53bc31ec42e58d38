"""What a compiled program costs as XLA counts it (FLOPs, bytes its kernels move, the kernels it
runs, its memory peak), and the device's runtime memory peak: the figures of a `--mode=bench` row
besides its times (vssjax/bench_rows.py). Each is None where a backend does not give it: a missing
figure must not cost the row."""

from __future__ import annotations

import collections
import re
from typing import Any

import jax


def xla_cost(figure: str, *compiled) -> float | None:
  """The sum over the `compiled` programs of XLA's cost-analysis `figure` ('flops' or 'bytes
  accessed'), in billions; None where a program's analysis lacks it. `cost_analysis()` is a dict
  on new jax, a list of dicts on older ones.

  'bytes accessed' counts what each kernel (fusion, library call) reads and writes in device
  memory: next to the FLOPs it says whether a program is bound by the memory or by the math, and
  a short program whose time follows neither by the launches (DCFM's non-key frame)."""
  total = 0.0
  for program in compiled:
    analysis = program.cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0] if analysis else None
    value = (analysis or {}).get(figure)
    if value is None or value <= 0:
      return None
    total += float(value)
  return total / 1e9


def program_peak_mb(*compiled) -> float | None:
  """The largest of `compiled` programs' peak memory in MiB, from XLA's memory analysis of each
  (its buffer assignment); None where a backend does not give one.

  Per program, unlike the device's runtime peak (`device_peak_mb`), which counts every program
  of the process so far: in the device suite a later entry's rows would carry an earlier entry's
  larger peak. XLA:GPU's `peak_memory_in_bytes` is the buffer assignment's peak; XLA:CPU's
  (jaxlib 0.10) counts only arguments and outputs, so the figure is at least arguments + outputs
  - donated + temporaries (all of a program's temporaries are one allocation on the CPU).
  """
  peaks = []
  for program in compiled:
    stats = memory_analysis(program)
    if stats is None:
      return None
    peaks.append(peak_bytes(stats))
  return max(peaks) / 2**20 if peaks else None


def memory_analysis(compiled) -> Any:
  """XLA's memory analysis of a compiled program (its buffer assignment's sizes); None where a
  backend gives none."""
  try:
    return compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # a missing figure must not cost the row
    return None


def peak_bytes(stats) -> int:
  """A program's peak from its `memory_analysis` (`program_peak_mb` says which)."""
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
           - stats.alias_size_in_bytes + stats.temp_size_in_bytes)
  return max(getattr(stats, "peak_memory_in_bytes", 0), total)


# An HLO instruction line: `[ROOT ]%name = <type> <opcode>(...`, the type an array's or a tuple's
# (`(bf16[..], s8[..])`, which may hold `/*index=5*/` comments).
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%\S+ = (?:\(.*?\)|\S+) ([\w-]+)\(")
# Instructions that name, pack or reinterpret buffers: no kernel runs for them.
_NOT_KERNELS = frozenset({"parameter", "constant", "tuple", "get-tuple-element", "bitcast"})


def entry_kernels(compiled) -> dict[str, int] | None:
  """The instructions of a compiled program's entry computation that run as kernels, counted by
  opcode: its fusions, its library calls (`custom-call`: on a GPU cuDNN's convolutions and
  cuBLAS's products), copies and whatever else the compiler left unfused; a loop counts once
  (`while`), whatever its trip count. On a GPU each is a launch, the cost that dominates a small
  batch-1 program (DCFM's non-key frame, docs/benchmarks.md). None where the backend gives no HLO
  text, or an instruction of it that this reading does not parse: a count that skipped one would
  be too low without a word."""
  try:
    text = compiled.as_text()
  except Exception:  # pylint: disable=broad-except  # a missing figure must not cost the row
    return None
  if not text or "\nENTRY " not in text:
    return None
  entry = text[text.index("\nENTRY ") + 1:]
  counts: collections.Counter[str] = collections.Counter()
  for line in entry.splitlines()[1:]:
    if line.startswith("}"):
      break
    if not line.strip():
      continue
    match = _INSTRUCTION.match(line)
    if match is None:
      return None
    if match[1] not in _NOT_KERNELS:
      counts[match[1]] += 1
  return dict(counts)


def kernel_count(*compiled) -> int | None:
  """The kernels one call of each of the `compiled` programs runs (`entry_kernels`), added up;
  None where a program's are unknown."""
  total = 0
  for program in compiled:
    kernels = entry_kernels(program)
    if kernels is None:
      return None
    total += sum(kernels.values())
  return total


def device_peak_mb() -> float | None:
  """Peak bytes in use on this process's first device since the process started; None where the
  backend (CPU) keeps no statistics."""
  stats = jax.local_devices()[0].memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20
