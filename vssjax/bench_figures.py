"""What a compiled program costs as XLA counts it (FLOPs, bytes its kernels move, its memory peak),
and the device's runtime memory peak: the figures of a `--mode=bench` row besides its times
(vssjax/bench_rows.py). Each is None where a backend does not give it: a missing figure must not
cost the row."""

from __future__ import annotations

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


def device_peak_mb() -> float | None:
  """Peak bytes in use on this process's first device since the process started; None where the
  backend (CPU) keeps no statistics."""
  stats = jax.local_devices()[0].memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20
