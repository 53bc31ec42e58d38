"""A JAX profiler trace of a few training steps (`train.profile_steps`), and its per-op table.

`--mode=bench` times each program alone on random inputs; a trace of the real loop also shows
what the benchmark cannot: the waits for the input pipeline, host-to-device copies, the gaps
between steps. Each process writes its trace to `workdir/profile/train/process_<i>/` (open it with
TensorBoard's profile plugin or xprof, or the `*.trace.json.gz` file in Perfetto), and process 0
also writes the train step's per-op device time table, `workdir/profile/train_step.md`
(`vssjax/op_profile.py`, the table `--config.bench.profile=True` writes for each bench program),
and saves the step's program beside its trace (`python -m vssjax.op_profile
workdir/profile/train/process_0` makes the table again).

Steps are numbered as the loop logs them (the first update is step 1). Start after the first
step or two: step 1 includes the compile.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import jax
from etils import epath

from vssjax import op_profile
from vssjax.errors import SetupError


def check_profile_steps(profile_steps: tuple[int, ...]) -> None:
  """`()` (off) or `(first, last)`, 1 <= first <= last."""
  if profile_steps == ():
    return
  if (len(profile_steps) != 2 or profile_steps[0] < 1 or profile_steps[1] < profile_steps[0]):
    raise SetupError(f"train.profile_steps={tuple(profile_steps)}: give (first, last) step "
                     "numbers, 1 <= first <= last (e.g. (11, 15)), or () for no trace")


class StepProfiler:
  """Traces the steps `profile_steps` of those this run trains (`start + 1 .. end`).

  `step(n)` wraps step n's work (its batch's loading included), marked as that step in the trace;
  `after_step(n, compiled)` after it: the last profiled step waits for the device, stops the
  trace and writes the table of `compiled()` (the train step's compiled program, asked for only
  then). `close()` stops a trace that a stop or an error cut short, without a table.
  """

  def __init__(self, workdir: str, profile_steps: tuple[int, ...], start: int, end: int):
    self._directory = epath.Path(workdir) / "profile"
    self._trace_dir = self._directory / "train" / f"process_{jax.process_index()}"
    self._first = self._last = None
    self._traced_steps = 0
    self._tracing = False
    if profile_steps:
      first, last = max(profile_steps[0], start + 1), min(profile_steps[1], end)
      if first <= last:
        self._first, self._last = first, last
      else:
        print(f"train.profile_steps={tuple(profile_steps)}: none of them is among this run's "
              f"steps {start + 1}..{end}; no trace", flush=True)

  @contextlib.contextmanager
  def step(self, step: int):
    if step == self._first:
      self._start()
    if not self._tracing:
      yield
      return
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      yield
    self._traced_steps += 1

  def after_step(self, step: int, outputs: Any, compiled: Callable[[], Any]) -> None:
    if not self._tracing or step != self._last:
      return
    jax.block_until_ready(outputs)  # the trace ends with the last step's device work
    self._stop()
    if jax.process_index() != 0:
      return
    try:
      ops = op_profile.ops_with_program_saved(self._trace_dir, compiled().as_text(),
                                              self._traced_steps)
    except Exception as error:  # pylint: disable=broad-except
      # E.g. a workdir on a bucket, which the table's reader cannot list: the trace is written.
      print(f"train.profile_steps: no per-op table ({error!r})", flush=True)
      return
    table_path = self._directory / "train_step.md"
    table_path.write_text(op_profile.format_op_table(
        f"train step, steps {self._first}..{self._last}", ops))
    print(f"profile: per-op time of the train step -> {table_path}", flush=True)

  def _start(self) -> None:
    self._trace_dir.mkdir(parents=True, exist_ok=True)
    try:
      jax.profiler.start_trace(str(self._trace_dir), create_perfetto_trace=True)
    except Exception as error:  # pylint: disable=broad-except
      # E.g. no CUPTI on a GPU host, or a trace already running: not worth the run.
      print(f"train.profile_steps: the profiler did not start ({error!r}); training on without "
            "a trace", flush=True)
      return
    self._tracing = True
    print(f"profiling steps {self._first}..{self._last} -> {self._trace_dir}", flush=True)

  def close(self) -> None:
    if self._tracing:
      self._stop()

  def _stop(self) -> None:
    jax.profiler.stop_trace()
    self._tracing = False
    steps = "step" if self._traced_steps == 1 else "steps"
    print(f"profile: trace of {self._traced_steps} {steps} -> {self._trace_dir}", flush=True)
