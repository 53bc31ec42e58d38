"""Preemption safety: SIGTERM (what schedulers and TPU maintenance send) stops training cleanly,
and so does a first Ctrl-C (SIGINT) in a single-process run.

The train loop asks `should_stop(step)` after every step; once it is true it writes a checkpoint
(state + data iterator) and returns, so the next run resumes exactly there. A request during a
periodic evaluation (one process) ends it at its next video and the run at its step, checkpointed
before the evaluation began.

One process: a Python handler raises a flag; for SIGINT it then puts back Python's own handler,
so a second Ctrl-C raises KeyboardInterrupt at once (a stuck step stays interruptible). Several
processes: every process must stop at the same step, but asking the others every step (a
collective) would block each step's dispatch until the step before it had finished on the device.
JAX's preemption service does it without that: the coordination service catches SIGTERM on any
process, agrees in the background on the first step every process can still reach, and
`reached_preemption_sync_point(step)` is a local lookup that is true at that step only. It does
not watch SIGINT, which there still raises KeyboardInterrupt. The service counts steps from its
own 0: a notice before the first lookup picks step 1, so it is asked with the count of this run's
steps (1, 2, ...), not the train step, which a resumed run starts past 1; Orbax, which would ask
it with the train step at every save, is kept from asking (`checkpoint._LoopDecidesPreemption`).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils

from vssjax.errors import SetupError

# The signal of the last stop request this process honoured: `vssjax.main` ends a stopped run
# as that signal would have (`stop_request_signal`).
_requested_by: int | None = None


def stop_request_signal() -> int | None:
  """The signal that asked the last `StopSignal` of this process to stop (SIGTERM for a preemption
  notice that several processes agreed on), or None when none did."""
  return _requested_by


class StopSignal:
  """Context manager: while active, SIGTERM and (one process) a first Ctrl-C request a clean stop
  instead of killing; a second Ctrl-C raises KeyboardInterrupt."""

  def __init__(self):
    self._requested = threading.Event()
    self._previous: dict[int, Any] = {}
    self._multiprocess = jax.process_count() > 1
    self._first_step: int | None = None  # the first step asked about, for the service's count

  def __enter__(self):
    global _requested_by
    _requested_by = None
    if self._multiprocess:
      if not jax.distributed.is_initialized():
        raise SetupError(
            f"{jax.process_count()} processes run this training without JAX's distributed "
            "runtime, whose preemption service stops them together on SIGTERM (without it, "
            "SIGTERM ends them with the steps since the last checkpoint lost): pass "
            "--distributed=on")
      if not jax.config.jax_enable_preemption_service:
        raise RuntimeError(
            "multi-process training stops on SIGTERM through JAX's preemption service; do not "
            "turn off jax_enable_preemption_service")
    elif threading.current_thread() is threading.main_thread():  # handlers only install there
      self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
      # Only where Ctrl-C would raise KeyboardInterrupt: an ignored SIGINT (a background job)
      # stays ignored.
      if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    global _requested_by
    _requested_by = signum
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, self._previous[signal.SIGINT])  # the second one interrupts
      print("Ctrl-C: will checkpoint and stop after this step (Ctrl-C again to abort at once, "
            "losing the steps since the last checkpoint)", flush=True)
    else:
      print(f"received signal {signum}: will checkpoint and stop after this step", flush=True)
    self._requested.set()

  def requested_here(self) -> bool:
    """True once this process was asked to stop, where it alone decides (one process): a periodic
    evaluation, whose step is already checkpointed, is cut short at its next video. Several
    processes agree on a step instead (`should_stop`), so this is False there."""
    return not self._multiprocess and self._requested.is_set()

  def should_stop(self, step: int) -> bool:
    """True once a stop was requested; with several processes, at the same `step` on every one.

    Multi-process, every process must call this at every step, from the same first step.
    """
    if not self._multiprocess:
      return self.requested_here()
    if self._first_step is None:
      self._first_step = step
    if multihost_utils.reached_preemption_sync_point(step - self._first_step + 1):
      global _requested_by
      _requested_by = signal.SIGTERM  # what the coordination service watches
      print(f"preemption notice: every process checkpoints and stops at step {step}", flush=True)
      return True
    return False
