"""Which signals stop a single-process training run cleanly (the multi-process path, through JAX's
preemption service, is tests/test_multiprocess.py)."""

import signal

import jax
import pytest

from vssjax.errors import SetupError
from vssjax.train.preemption import StopSignal, stop_request_signal


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_first_ctrl_c_stops_cleanly_and_the_second_interrupts(capsys):
  with StopSignal() as stop:
    assert not stop.should_stop(1)
    try:
      signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:  # as a failure, not the end of the pytest session
      pytest.fail("the first Ctrl-C interrupted instead of requesting a stop")
    assert stop.should_stop(2) and stop_request_signal() == signal.SIGINT
    assert "Ctrl-C again to abort at once" in capsys.readouterr().out
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_sigterm_stops_cleanly_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGTERM)
  with StopSignal() as stop:
    assert not stop.requested_here() and stop_request_signal() is None  # none from before
    signal.raise_signal(signal.SIGTERM)
    assert stop.requested_here()  # what a periodic evaluation asks before each video
    assert stop.should_stop(1) and stop_request_signal() == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_ctrl_c_stays_ignored():
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with StopSignal() as stop:
      assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
      signal.raise_signal(signal.SIGINT)
      assert not stop.should_stop(1)
  finally:
    signal.signal(signal.SIGINT, previous)


def test_several_processes_without_the_distributed_runtime_are_refused(monkeypatch):
  """A TPU pod slice's workers run as several processes even where the runtime was not started;
  there is then no preemption service, and SIGTERM killed them without a checkpoint."""
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  with pytest.raises(SetupError, match="2 processes run this training without JAX's distributed "
                     "runtime.*pass --distributed=on"):
    with StopSignal():
      pass
