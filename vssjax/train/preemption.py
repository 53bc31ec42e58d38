"""Preemption safety: SIGTERM (what schedulers and TPU maintenance send) stops training cleanly.

The handler only raises a flag; the train loop checks it between steps, writes a checkpoint (state
+ data iterator) and returns, so the next run resumes exactly there. With several processes the flag
is OR-ed across them, so every process stops at the same step and joins the same checkpoint.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopSignal:
  """Context manager: while active, `signals` (default SIGTERM only; SIGINT still raises
  KeyboardInterrupt) request a clean stop instead of killing."""

  def __init__(self, signals=(signal.SIGTERM,)):
    self._signals = signals
    self._requested = threading.Event()
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # handlers only install there
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    print(f"received signal {signum}: will checkpoint and stop after this step", flush=True)
    self._requested.set()

  def should_stop(self) -> bool:
    """True on every process once any process got the signal (a collective when multi-process)."""
    local = self._requested.is_set()
    if jax.process_count() == 1:
      return local
    return bool(np.any(multihost_utils.process_allgather(np.array([local]))))
