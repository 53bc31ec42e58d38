"""Training metrics: one JSON line per log step in `workdir/metrics.jsonl` (+ TensorBoard if
present).

Process 0 writes; the other processes' writers do nothing. TensorBoard is optional: when
`tensorboardX` is installed, the same scalars also go to `workdir/tensorboard`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jax
from etils import epath

from vssjax.files import write_text_whole


def drop_lines_after_step(path: epath.Path, step: int) -> int:
  """Removes from the JSON-lines file `path` the lines of steps after `step`, and a line cut short:
  a run resuming from the checkpoint of `step` trains (and evaluates) those steps again, and
  their lines from the run that was killed before its next checkpoint would otherwise appear
  twice (a curve that jumps back: 1 2 3 4 3 4 5 6), or not parse. Returns how many it removed."""
  if not path.exists():
    return 0
  logged = path.read_text()
  lines = logged.splitlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):  # cut short by a kill mid-write
      pass
  text = "".join(line + "\n" for line in kept)
  if text != logged:
    write_text_whole(path, text)  # a kill mid-rewrite would lose the log
  return len(lines) - len(kept)


class MetricWriter:
  """Appends each log step's scalars to `metrics.jsonl` and, if installed, TensorBoard.

  `starts_after_step`: the step the run starts from (the checkpoint's when resumed, 0 when fresh).
  TensorBoard is told to hide what an earlier run logged after it (a purge step in the new event
  file), as `drop_lines_after_step` removes those lines from metrics.jsonl: otherwise TensorBoard
  draws both the killed run's and this run's values for the steps trained again.
  """

  def __init__(self, workdir: str | epath.Path, starts_after_step: int | None = None):
    self._enabled = jax.process_index() == 0
    self._path = epath.Path(workdir) / "metrics.jsonl"
    self._tensorboard = None
    if self._enabled:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        purge_step = None if starts_after_step is None else starts_after_step + 1
        self._tensorboard = SummaryWriter(str(epath.Path(workdir) / "tensorboard"),
                                          purge_step=purge_step)
      except ImportError:
        pass

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self._enabled:
      return
    record = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in scalars.items()}}
    with self._path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tensorboard is not None:
      for name, value in scalars.items():
        self._tensorboard.add_scalar(name, float(value), int(step))

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
