"""The train loop's log lines: means and rates of their steps, the divergence check, and the
input- and checkpoint-bound hints (the loop's own timings: tests/train/test_loop.py)."""
import types

import numpy as np
import pytest

from tests.conftest import FakeClock
from vssjax import configs_lib
from vssjax.errors import TrainingDiverged
from vssjax.train import log_lines


def test_a_log_line_averages_its_steps_metrics():
  """With `train.log_every` > 1 (every real config) a line is the mean over its steps, and its
  rate counts them all; the tests' log_every=1 cannot tell either from the last step's."""
  pending = [(1, {"loss": np.float32(1.0)}), (2, {"loss": np.float32(2.0)}),
             (3, {"loss": np.float32(6.0)})]
  summary = log_lines.summarize(pending, 6.0, 0.01, 1.5, 0.0)
  assert summary == {"loss": 3.0, "steps_per_s": 0.5, "lr": 0.01, "data_wait": 0.25,
                     "checkpoint_wait": 0.0}
  assert log_lines.summarize(pending, 6.0, 0.01, 1.5, 3.0)["checkpoint_wait"] == 0.5


def test_the_input_bound_line_suggests_more_workers_than_there_are():
  hint = log_lines.input_bound_hint
  assert hint(0.5, 0) is None and hint(0.1, 4) is None
  assert "--config.data.num_workers=8 " in hint(0.9, 4)
  assert "90% of the last log interval" in hint(0.9, 4)


@pytest.mark.parametrize("name", ["loss", "grad_norm", "param_norm"])
def test_a_non_finite_step_metric_stops_with_the_step_number(name):
  finite = {"loss": np.float32(1.0), "grad_norm": np.float32(2.0), "param_norm": np.float32(3.0)}
  pending = [(7, finite), (8, dict(finite, **{name: np.float32(np.inf)}))]
  with pytest.raises(TrainingDiverged, match=f"non-finite {name} inf at step 8"):
    log_lines.check_finite(pending)


def test_the_checkpoint_bound_line_names_the_setting_that_makes_the_saves():
  hint = log_lines.checkpoint_bound_hint
  assert hint(0.5, 2, 0) is None
  assert ("60% of the time since the first log line went to saving checkpoints "
          "(train.checkpoint_every=2); save less often, e.g. --config.train.checkpoint_every=20"
          ) in hint(0.6, 2, 0)
  # Evaluations every 10 steps save every 10: checkpoint_every=200 is not what to change.
  assert "(train.eval_every=10, each evaluation saving first); save less often, e.g. " \
         "--config.train.eval_every=100" in hint(0.6, 200, 10)
  assert "--config.train.checkpoint_every=20" in hint(0.6, 2, 10)


@pytest.mark.parametrize("checkpoint_every, bound", [(200, False), (25, True)])
def test_a_run_is_checkpoint_bound_by_its_saves_overall_not_in_one_interval(
    monkeypatch, capsys, checkpoint_every, bound):
  """25-step log lines of 0.4 s and 0.5 s saves: the line after a save every 200 steps spends 55%
  of its interval saving, the run 8% (the demo recipe on a GPU): not checkpoint-bound; a save at
  every line is."""
  clock = FakeClock()
  monkeypatch.setattr(log_lines, "time", clock)
  config = configs_lib.base_config()
  config.train.update(checkpoint_every=checkpoint_every, eval_every=0)
  written = []
  lines = log_lines.LogLines(types.SimpleNamespace(write=lambda step, m: written.append(m)),
                             types.SimpleNamespace(update=lambda *args, **kwargs: None),
                             lambda step: 0.1, config)
  for step in range(1, 401):
    lines.step(step, {"loss": np.float32(1.0)}, 0.0)
    clock.now += 0.016
    if step % 25 == 0:
      lines.write(step)
    if step % checkpoint_every == 0:
      clock.now += 0.5
      lines.saved(0.5)
  assert written[8]["checkpoint_wait"] == pytest.approx(0.5 / 0.9)  # the line of step 225
  assert ("train: checkpoint-bound: " in capsys.readouterr().out) == bound
