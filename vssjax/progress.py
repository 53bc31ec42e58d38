"""Progress lines for long loops (training steps, evaluation videos, inference frames).

Plain prints with rate and ETA, throttled, so logs stay readable in a terminal and in a batch job's
output file alike. Only process 0 prints.
"""

from __future__ import annotations

import sys
import time

import jax


def format_seconds(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
  """`update(done, **fields)` prints `label done/total  rate unit/s  ETA ...  fields` now and then.

  An `estimated` total (a video's frame count as its container declares it, which a truncated or
  corrupt file does not reach) shows as `~total`, and as `?` once `done` passes it; `finish` then
  prints the count done as the total.
  """

  def __init__(self, label: str, total: int, unit: str, *, min_interval_s: float = 2.0,
               estimated: bool = False):
    self.label, self.total, self.unit = label, total, unit
    self.estimated = estimated
    self._min_interval_s = min_interval_s
    self._start_count = 0
    self._t0 = time.perf_counter()
    self._last_print = -float("inf")
    self._last_line: tuple = ()  # (done, total, estimated) of the last line printed
    self._first_update = True
    self.enabled = jax.process_index() == 0

  def rate(self, done: int) -> float:
    elapsed = time.perf_counter() - self._t0
    return (done - self._start_count) / elapsed if elapsed > 0 else 0.0

  def update(self, done: int, *, force: bool = False, **fields) -> None:
    now = time.perf_counter()
    if self._first_update:
      # The first unit of work usually includes compilation: measure the rate from here on.
      self._first_update = False
      self._t0, self._start_count = now, done
    if not self.enabled or (not force and now - self._last_print < self._min_interval_s):
      return
    self._last_print = now
    self._last_line = (done, self.total, self.estimated)
    rate = self.rate(done)
    known = not self.estimated or 0 < done <= self.total
    eta = (self.total - done) / rate if rate > 0 and known else float("nan")
    total_text = (f"~{self.total}" if self.estimated else str(self.total)) if known else "?"
    rate_text = f"{rate:.2f} {self.unit}/s" if rate > 0 else f"? {self.unit}/s"
    extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in fields.items())
    eta_text = format_seconds(eta) if eta == eta else "?"
    print(f"{self.label} {done}/{total_text}  {rate_text}  ETA {eta_text}  {extra}",
          flush=True, file=sys.stdout)

  def finish(self, done: int) -> None:
    """The last line, once the work is over: `done` is then the total, an estimated one
    corrected. Not printed again where the throttle let that very line through already."""
    self.total, self.estimated = done, False
    if self._last_line != (done, done, False):
      self.update(done, force=True)
