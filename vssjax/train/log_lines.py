"""The train loop's log lines: the mean metrics of the steps since the last line, their rate, and
where the loop's time went (waiting for batches, saving checkpoints), written to metrics.jsonl,
TensorBoard and the console; a run that is input- or checkpoint-bound is told once what to change.

The loop dispatches steps without waiting for them; a line fetches the metrics of the pending
steps (`check_finite`), which waits for the device, so a line's interval runs from one fetch to
the next: the first line's includes the step's compile, and no line's a periodic evaluation.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np

from vssjax.errors import TrainingDiverged

# The step metrics that show a diverged run: its loss, and its gradients and updated parameters
# (a non-finite gradient leaves the step's own loss finite but the parameters it saves broken).
DIVERGENCE_METRICS = ("loss", "grad_norm", "param_norm")

# The share of the time spent waiting for batches (or in checkpoint saves) above which a run is
# said input-bound (checkpoint-bound).
BOUND_SHARE = 0.5


def check_finite(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
  """Fetches the pending step metrics; stops the run at the first non-finite one. Called before
  each log line, checkpoint and periodic evaluation, so neither a checkpoint nor the results
  (results.json, eval_history.jsonl) hold the parameters of a diverged step."""
  host = jax.device_get(pending)
  for step, metrics in host:
    for name in DIVERGENCE_METRICS:
      if name in metrics and not np.isfinite(metrics[name]):
        raise TrainingDiverged(
            f"non-finite {name} {metrics[name]} at step {step}; stopping before any checkpoint "
            "holds it (those saved before are intact). Resuming repeats the same steps: resume "
            "with a lower optim.lr, or start a new --workdir from this one's variables with "
            "optim.grad_clip_norm set (--config.init.workdir=<this workdir> "
            "--config.init.config=<its config file>; clipping adds to the optimizer's state, "
            "which a resume keeps), or, in a method of one's own, look for a log or division of "
            "zero in its loss")
  return host


def summarize(host: list[tuple[int, dict]], seconds: float, lr: float, data_seconds: float,
              save_seconds: float) -> dict[str, float]:
  """Mean of the steps' fetched metrics since the last log line, plus throughput (`seconds`: from
  the last log line's fetch to this one's, evaluations left out), learning rate, `data_wait`: the
  fraction of those seconds the loop waited for its batches (`data_seconds`), and
  `checkpoint_wait`: the fraction it spent in checkpoint saves (`save_seconds`: an asynchronous
  save still waits for the one before it and copies the state off the device). The device
  computes the steps dispatched meanwhile, so a loop that spends most of its time in either is
  input- or checkpoint-bound."""
  mean = {k: float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
  return dict(mean, steps_per_s=len(host) / seconds, lr=lr, data_wait=data_seconds / seconds,
              checkpoint_wait=save_seconds / seconds)


def input_bound_hint(data_wait: float, num_workers: int) -> str | None:
  """The line that says a run is input-bound, with what to change; None when it is not."""
  if data_wait <= BOUND_SHARE:
    return None
  more = max(2 * num_workers, 2)
  return (f"train: input-bound: {100 * data_wait:.0f}% of the last log interval went to waiting "
          f"for batches (data.num_workers={num_workers}); more worker processes load them in "
          f"parallel, e.g. --config.data.num_workers={more} (a run resumes only with the count "
          "it was checkpointed with)")


def checkpoint_bound_hint(share: float, checkpoint_every: int, eval_every: int) -> str | None:
  """The line that says a run is checkpoint-bound (`share` of its time since the first log line
  went to saves; e.g. a `:quick` config, which saves every 2 steps, run for many more), with the
  setting to change: `train.eval_every` where evaluations, each saving first, save more often
  than `checkpoint_every`. None when it is not."""
  if share <= BOUND_SHARE:
    return None
  name, every, why = (("eval_every", eval_every, ", each evaluation saving first")
                      if 0 < eval_every < checkpoint_every else
                      ("checkpoint_every", checkpoint_every, ""))
  return (f"train: checkpoint-bound: {100 * share:.0f}% of the time since the first log line went "
          f"to saving checkpoints (train.{name}={every}{why}); save less often, e.g. "
          f"--config.train.{name}={10 * every}")


class LogLines:
  """The pending steps' metrics and the loop's waits since the last line, and the lines.

  `write` is called at a log step (and where the run stops); `check_pending` before a save or an
  evaluation, which must not hold a diverged step's parameters. Hints are printed by process 0,
  once a run each.
  """

  def __init__(self, writer, progress, schedule: Callable[[int], Any], config):
    self._writer, self._progress, self._schedule = writer, progress, schedule
    self._num_workers = config.data.num_workers
    self._checkpoint_every = config.train.checkpoint_every
    self._eval_every = config.train.eval_every
    self._pending: list[tuple[int, dict]] = []
    self._last = time.perf_counter()
    self._data_seconds = self._save_seconds = 0.0  # since the last line
    # Since the first line (the interval before it holds the compile): the checkpoint-bound share
    # over a whole run, not one interval with the save of a rare checkpoint.
    self._run_seconds = self._run_save_seconds = 0.0
    self._after_first_line = False
    self._hinted: set[str] = set()

  def step(self, step: int, metrics: dict, data_seconds: float) -> None:
    self._pending.append((step, metrics))
    self._data_seconds += data_seconds

  def saved(self, seconds: float) -> None:
    self._save_seconds += seconds

  def paused(self, seconds: float) -> None:
    """Time the loop spent on something else (a periodic evaluation): no line's rate counts it."""
    self._last += seconds

  def check_pending(self) -> None:
    if self._pending:
      check_finite(self._pending)

  def write(self, step: int) -> None:
    """The line of the steps since the last one, if any (`step` is the last of them)."""
    if not self._pending:
      return
    host = check_finite(self._pending)  # waits for these steps to finish
    now = time.perf_counter()
    seconds = now - self._last
    mean = summarize(host, seconds, float(self._schedule(step - 1)), self._data_seconds,
                     self._save_seconds)
    if self._after_first_line:
      self._run_seconds += seconds
      self._run_save_seconds += self._save_seconds
    self._after_first_line = True
    self._last, self._data_seconds, self._save_seconds = now, 0.0, 0.0
    self._pending = []
    self._writer.write(step, mean)
    self._progress.update(step, force=True, loss=mean["loss"], lr=mean["lr"],
                          data=f"{100 * mean['data_wait']:.0f}%")
    run_share = self._run_save_seconds / self._run_seconds if self._run_seconds else 0.0
    for kind, hint in (
        ("input", input_bound_hint(mean["data_wait"], self._num_workers)),
        ("checkpoint", checkpoint_bound_hint(run_share, self._checkpoint_every,
                                             self._eval_every))):
      if hint and kind not in self._hinted and jax.process_index() == 0:
        print(hint, flush=True)
        self._hinted.add(kind)
