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
  """`update(done, **fields)` prints `label done/total  rate unit/s  ETA ...  fields` now and then."""

  def __init__(self, label: str, total: int, unit: str, *, min_interval_s: float = 2.0):
    self.label, self.total, self.unit = label, total, unit
    self._min_interval_s = min_interval_s
    self._start_count = 0
    self._t0 = time.perf_counter()
    self._last_print = -float("inf")
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
    rate = self.rate(done)
    eta = (self.total - done) / rate if rate > 0 else float("nan")
    rate_text = f"{rate:.2f} {self.unit}/s" if rate > 0 else f"? {self.unit}/s"
    extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in fields.items())
    eta_text = format_seconds(eta) if eta == eta else "?"
    print(f"{self.label} {done}/{self.total}  {rate_text}  ETA {eta_text}  {extra}",
          flush=True, file=sys.stdout)
