"""The rows of `--mode=bench` (vssjax/bench.py) and of its PyTorch reference
(vssjax/bench_torch.py): one timed program each, how it is timed, and the lines printed as each
program starts and is measured."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Iterable, Sequence

import jax


@dataclasses.dataclass
class Row:
  """One benchmarked program. `frames_per_s` counts input frames (batch x clip length)."""
  phase: str  # 'forward' | 'train_step' | 'torch[_compile]_forward|train' | DCFM: 'keyframe',
  # 'non_key_B|P', 'non_key_B|P_one_program', 'video_avg_K<K>' | DTERN, SD-CPC: 'stream_frame' |
  # sliding windows: 'slide_frame' | a method's own streamed frames (`Method.streamed_frames`)
  dtype: str
  batch: int
  frames: int
  compile_s: float | None
  latency_ms: float
  frames_per_s: float
  gflops: float | None  # XLA's estimate; per device when the train step is split over a mesh
  peak_memory_mb: float | None  # XLA's memory analysis of the row's program(s); None for torch
  dispatch_ms: float | None = None  # `Timing.dispatch_seconds`; None for torch (it synchronises)
  gb_accessed: float | None = None  # XLA's estimate of the device memory its kernels read and
  # write (`bench_figures.xla_cost`), per device like `gflops`; None for torch
  kernels: float | None = None  # the kernels a call runs (`bench_figures.kernel_count`: a loop's
  # once), added up over the row's programs; a video's average frame averages them; None for torch
  streamed_ms: float | None = None  # a video frame's rows: `streamed_seconds`, per frame; None
  # for the other rows


@dataclasses.dataclass(frozen=True)
class Timing:
  """Medians over a program's timed calls. `seconds`: until its results were ready.
  `dispatch_seconds`: until the call returned, before waiting for them. JAX enqueues the device's
  work and returns, so a program whose dispatch takes nearly its whole latency is bound by the
  host (Python, the arguments' handling), one with a short dispatch by the device: the split
  that says whether a short program (DCFM's non-key frame) gains from fewer kernels or from fewer
  arguments and calls."""
  seconds: float
  dispatch_seconds: float


def median_timing(fn: Callable[[], Any], warmup: int, repeats: int) -> Timing:
  """`Timing` of `fn()` over `repeats` calls after `warmup` ones, each waited for
  (`block_until_ready` on what it returns; the torch programs synchronise themselves)."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times, dispatches = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    dispatches.append(time.perf_counter() - start)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  return Timing(statistics.median(times), statistics.median(dispatches))


def streamed_seconds(fn: Callable[[], Any], frames: int, streams: int = 3) -> float:
  """Seconds per call of `fn()` over `frames` calls dispatched one after the other and waited for
  once at the end (the median of `streams` such runs): a video frame's time when the host keeps
  the device busy, as the predictor's loop does (`eval.stream.stream_predictions` dispatches a
  frame before it fetches the last one's labels). `median_timing` waits for every call, so its
  time also holds a call's start on an idle device and the wait for its end: a large share of a
  short program's (DCFM's non-key frame), a small one of a keyframe's."""
  per_call = []
  for _ in range(streams):
    start = time.perf_counter()
    jax.block_until_ready([fn() for _ in range(frames)])
    per_call.append((time.perf_counter() - start) / frames)
  return statistics.median(per_call)


def median_call_timing(settings: dict[str, Any], fn: Callable, *args) -> Timing:
  """`median_timing` of `fn(*args)` with the forward's warm-up and repeats."""
  return median_timing(lambda: fn(*args), settings["warmup"], settings["repeats"])


def program_name(phase: str, dtype: str, batch: int) -> str:
  return f"{phase} {dtype} batch {batch}"


def announce(phase: str, dtype: str, batch: int, doing: str = "compiling") -> None:
  """Says which program the bench starts on: compiles and timings of a large config take minutes
  each, and the table comes only at the end."""
  print(f"bench: {program_name(phase, dtype, batch)}: {doing}...", flush=True)


def report(row: Row) -> Row:
  """Prints a row's compile time and latency as soon as they are measured; returns the row."""
  compiled = "" if row.compile_s is None else f"compiled in {row.compile_s:.1f} s, "
  dispatch = "" if row.dispatch_ms is None else f" (dispatch {row.dispatch_ms:.2f} ms)"
  streamed = "" if row.streamed_ms is None else f", {row.streamed_ms:.2f} ms/frame streamed"
  print(f"bench: {program_name(row.phase, row.dtype, row.batch)}: {compiled}"
        f"{row.latency_ms:.2f} ms/call{dispatch}{streamed}", flush=True)
  return row


def figure(value: float | None, spec: str) -> str:
  """`value` formatted by `spec`, or 'n/a' where a backend gave none. `spec` 'digits': four
  significant digits below 10,000 (a quick config's programs are a few MFLOPs and under 1 MiB),
  whole numbers from there (a GPU's 11351 MiB; '.4g' would write 1.135e+04)."""
  if value is None:
    return "n/a"
  if spec == "digits":
    spec = ".4g" if abs(value) < 1e4 else ".0f"
  return format(value, spec)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """A Markdown table of `header` and the `rows` of cells (the reports of `--mode=bench` and
  `vssjax.aot`)."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
