"""End to end on the synthetic ArrayRecord set: train, checkpoint, resume, evaluate, shard."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import REPO, logged_losses
from vssjax import parallel
from vssjax.errors import SetupError, TrainingDiverged
from vssjax.train import checkpoint, init_from, log_lines, loop
from vssjax.train.checkpoint import Checkpointer
from vssjax.train.preemption import StopSignal, stop_request_signal
from vssjax.train.optimizer import lr_schedule, make_optimizer

pytestmark = pytest.mark.slow


def _params(config, workdir):
  _, variables, step = loop.restore_for_eval(config, str(workdir))
  return step, variables


def test_interrupted_training_equals_uninterrupted_and_evaluates(quick_config, tmp_path, capsys):
  """A run stopped after 2 of 4 steps and resumed ends exactly where a straight run ends; both
  write their checkpoints, results and overlay video. `max_steps_this_run` counts this run's
  steps (a time-boxed job resumes with the same box), and each step logs its own learning rate."""
  quick_config.train.steps = 4
  quick_config.eval.max_videos = 1
  loop.train_and_evaluate(quick_config, str(tmp_path / "a"), max_steps_this_run=2)
  assert (tmp_path / "a" / "checkpoints" / "2").is_dir()
  _, halfway = _params(quick_config, tmp_path / "a")
  # The folder of a save that a killed run left unfinished goes, and is said to: one of a step that
  # the resumed run does not save again (it saves every 2 steps) stayed for good.
  unfinished = tmp_path / "a" / "checkpoints" / "3.orbax-checkpoint-tmp"
  (unfinished / "state").mkdir(parents=True)
  capsys.readouterr()
  loop.train_and_evaluate(quick_config, str(tmp_path / "a"), max_steps_this_run=2)
  assert not unfinished.exists()
  assert f"removed {unfinished}: a save that a stopped run left unfinished" in (
      capsys.readouterr().out)
  results = loop.train_and_evaluate(quick_config, str(tmp_path / "b"))
  step, interrupted = _params(quick_config, tmp_path / "a")
  _, straight = _params(quick_config, tmp_path / "b")
  assert step == 4 and sorted(logged_losses(tmp_path / "a")) == [1, 2, 3, 4]
  assert logged_losses(tmp_path / "a") == logged_losses(tmp_path / "b")
  jax.tree.map(np.testing.assert_array_equal, interrupted, straight)
  _, schedule = make_optimizer(quick_config.optim, 4, straight["params"])
  lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
  assert {r["step"]: r["lr"] for r in map(json.loads, lines)} == {
      step: pytest.approx(float(schedule(step - 1))) for step in (1, 2, 3, 4)}  # update step-1's
  # The comparison means something only if training moved the parameters.
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), halfway, straight))
  assert max(moved) > 0

  for name in ("mIoU", "wIoU", "pixel_acc", "frames_per_s"):
    assert np.isfinite(results[name]), name
  assert results["num_frames"] == 6  # quick: 1 val video x 6 frames, every frame predicted
  for run in ("a", "b"):
    assert (tmp_path / run / "results.json").exists() and (tmp_path / run / "results.md").exists()
    assert list((tmp_path / run).glob("overlay_*.mp4"))
  assert loop.evaluate_checkpoint(quick_config, str(tmp_path / "a"))["step"] == 4
  capsys.readouterr()
  # Training a finished workdir again says so, and evaluates its checkpoint once more.
  assert loop.train_and_evaluate(quick_config, str(tmp_path / "a"))["step"] == 4
  out = capsys.readouterr().out
  assert "training already complete (checkpoint at step 4, train.steps=4)" in out
  quick_config.train.steps = 3  # below the checkpoint's step: complete too, and evaluated
  assert loop.train_and_evaluate(quick_config, str(tmp_path / "a"))["step"] == 4
  # It trained nothing, so config.json still records what the checkpoint was trained with.
  assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["steps"] == 4
  assert not (tmp_path / "a" / "config.until_step4.json").exists()


@pytest.mark.parametrize("setting, expected", [
    ({"method.name": "segfromer"}, "unknown method.name 'segfromer'"),
    ({"model.backbone": "b9"}, "model.backbone='b9': SegFormer takes one of"),
    ({"data.batch_size": 0}, "data.batch_size=0: a batch needs at least one"),
    ({"train.steps": 0}, "train.steps=0: training needs at least one step"),
    ({"train.log_every": 0}, "train.log_every=0: must be at least 1"),
    ({"train.checkpoint_every": 0}, "train.checkpoint_every=0: must be at least"),
    ({"train.keep_checkpoints": 0}, "train.keep_checkpoints=0: must be at least"),
    ({"train.eval_every": -1}, "train.eval_every=-1: must be 0 (evaluate only"),
    ({"sharding_rules": ("kernel$", "fsdp")}, "sharding_rules: 'kernel$' is not a (regex, kind)"),
    ({"optim.accumulate_steps": 3}, "train.steps=2 is not a multiple of optim.accumulate_steps=3: "
     "an update takes 3 steps (micro-batches), and the last 2 would"),
    ({"optim.accumulate_steps": 0}, "optim.accumulate_steps=0: at least 1"),
    ({"eval.vc_convention": "DCFM"}, "config.eval: vc_convention must be one of"),
])
def test_a_bad_setting_is_refused_before_the_workdir_is_made(quick_config, tmp_path, setting,
                                                              expected):
  """Checked at set-up, the evaluation's settings too, not after training (the command line
  says it in one line: tests/test_main.py)."""
  quick_config.update_from_flattened_dict(setting)
  with pytest.raises(SetupError) as error:
    loop.train_and_evaluate(quick_config, str(tmp_path / "run"))
  assert expected in str(error.value)
  assert not (tmp_path / "run").exists()


def test_a_tc_video_list_naming_other_videos_is_refused_before_training(quick_config, tmp_path):
  """Found at the first evaluation, after training, it left TC n/a (or scored fewer videos)."""
  (tmp_path / "list.txt").write_text("synthetic_val_00000\nnosuchvideo\n")
  quick_config.eval.update(temporal_consistency=True, tc_video_list=str(tmp_path / "list.txt"))
  with pytest.raises(SetupError, match=r"names 1 of its 2 videos that .* \(nosuchvideo\)"):
    loop.train_and_evaluate(quick_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_one_device_equals_four_devices_whose_checkpoint_restores_split_over_fsdp(quick_config,
                                                                                  tmp_path):
  """Sharding the batch over 4 devices changes only the order of reductions. (Training with the
  kernels split too, 2 x 2 FSDP, takes the same steps: tests/test_multiprocess.py resumes a run
  so and compares it with one process on 4 devices.)

  Some parameters have a mathematically zero gradient (a bias before a BatchNorm): their gradient
  is rounding noise, which Adam's first steps turn into +-lr updates whatever its size. A larger
  Adam epsilon keeps that noise from being amplified, so the comparison tests the sharding.
  """
  assert jax.device_count() == 4  # set in conftest
  quick_config.train.steps = 4  # stop after 2 of 4: no evaluation needed here
  quick_config.optim.eps = 1e-4
  runs = {}
  for devices in (1, 4):
    quick_config.mesh.data = devices
    workdir = tmp_path / f"d{devices}"
    loop.train_and_evaluate(quick_config, str(workdir), max_steps_this_run=2)
    runs[devices] = (logged_losses(workdir), _params(quick_config, workdir)[1])
  np.testing.assert_allclose(list(runs[1][0].values()), list(runs[4][0].values()), atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), runs[1][1], runs[4][1])

  # The 4-device replicated checkpoint restores onto 2 x 2 devices with FSDP-sharded kernels.
  quick_config.mesh.update(data=2, fsdp=2)
  quick_config.sharding_rules = (("kernel$", "fsdp"),)
  _, resharded = _params(quick_config, tmp_path / "d4")
  specs = {str(x.sharding.spec) for x in jax.tree.leaves(resharded["params"])}
  assert any("fsdp" in spec for spec in specs)
  jax.tree.map(np.testing.assert_array_equal, resharded, runs[4][1])


def test_fsdp_rules_on_a_mesh_without_an_fsdp_axis_are_said_to_split_nothing(capsys):
  loop._check_sharding_rules((("kernel$", "fsdp"),), parallel.make_mesh())
  assert capsys.readouterr().out == (
      "note: sharding_rules split arrays over the fsdp axis, and mesh.fsdp=1: every array is "
      "whole on each device (--config.mesh.fsdp=N splits them over N)\n")
  loop._check_sharding_rules((("kernel$", "fsdp"),), parallel.make_mesh(-1, 2))
  loop._check_sharding_rules((("kernel$", "replicate"),), parallel.make_mesh())
  assert capsys.readouterr().out == ""


def test_processes_compile_the_first_step_and_meet_before_running_it(monkeypatch):
  """Two processes on one CPU machine died at their first step, 2 runs in 4, with Gloo's
  DEADLINE_EXCEEDED: one had compiled the step 30 s before the other, and its collectives gave up.
  Each compiles, then waits at the barrier; the step's call reuses that compilation."""
  events = []
  monkeypatch.setattr(loop.ocp.multihost, "get_barrier_sync_fn",
                      lambda: lambda key, timeout_ms: events.append(f"barrier {key} {timeout_ms}"))
  listening = [True]
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, seconds, **kwargs: listening[0] and event.endswith("backend_compile_duration")
      and events.append("compiled"))
  try:
    step = jax.jit(lambda x, n: x * n + 1.0)
    loop._compile_on_every_process(step, (np.float32(2.0), 3), 7)
    result = step(np.float32(2.0), 3)
    events.append("called")
  finally:
    listening[0] = False
  assert events == ["compiled", "barrier vssjax_training_step_compiled_from_step_7 3600000",
                    "called"]
  assert float(result) == 7.0


def test_a_run_that_waits_for_its_batches_says_so_once_with_what_to_change(
    quick_config, tmp_path, monkeypatch, capsys, skipping_clock):
  """Each log line has the share of its interval the loop spent waiting for batches (the device
  computes the dispatched steps meanwhile); past half of it, one line says the run is input-bound
  and how to load in parallel."""
  to_global = parallel.to_global

  def slow_batches(batch, mesh):
    skipping_clock.sleep(1.0)  # the quick model's step takes a few ms (~0.1 s on a loaded machine)
    return to_global(batch, mesh)

  monkeypatch.setattr(parallel, "to_global", slow_batches)
  # steps=4: test_interrupted_training_...'s program, compiled once; no checkpoint before step 3
  # (a save's time in its interval is no wait for data).
  quick_config.train.update(steps=4, checkpoint_every=4)
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=3)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert all(0.0 <= record["data_wait"] <= 1.0 for record in records)
  assert records[-1]["data_wait"] > 0.5, records
  out = capsys.readouterr().out
  assert out.count("train: input-bound: ") == 1, out
  assert "(data.num_workers=0); more worker processes" in out
  assert "--config.data.num_workers=2 (a run resumes only" in out
  assert re.search(r"train step 3/4 .* data \d+%", out), out


def test_a_run_that_waits_for_its_checkpoints_says_so_once_with_what_to_change(
    quick_config, tmp_path, monkeypatch, capsys, skipping_clock):
  """A `:quick` config (a save every 2 steps) run for many more steps trained at 1.8 steps/s
  instead of 50-67 with Orbax's warnings as the only clue: `checkpoint_wait` is the share of the
  interval spent in saves, and past half one line says which setting to change."""
  save = Checkpointer.save

  def slow_save(self, *args, **kwargs):
    skipping_clock.sleep(1.0)
    return save(self, *args, **kwargs)

  monkeypatch.setattr(Checkpointer, "save", slow_save)
  quick_config.train.update(steps=4, checkpoint_every=1)  # the program of the tests above
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=3)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert records[0]["checkpoint_wait"] == 0.0  # no save before step 1's line
  assert records[-1]["checkpoint_wait"] > 0.5, records  # step 2's save, in step 3's interval
  out = capsys.readouterr().out
  assert out.count("train: checkpoint-bound: ") == 1, out
  assert ("(train.checkpoint_every=1); save less often, e.g. "
          "--config.train.checkpoint_every=10") in out


def test_a_log_lines_rate_leaves_out_a_periodic_evaluation(quick_config, tmp_path, monkeypatch,
                                                           skipping_clock):
  def slow_evaluation(*args, **kwargs):
    skipping_clock.sleep(3.0)
    return {}

  monkeypatch.setattr(loop, "evaluate", slow_evaluation)
  quick_config.train.update(steps=4, eval_every=2)
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=3)
  rates = [record["steps_per_s"] for record in
           map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())]
  assert rates[2] > 1 / 3, rates  # step 3 itself takes well under 3 s


def test_a_log_lines_rate_leaves_out_the_wait_for_earlier_steps(quick_config, tmp_path,
                                                                   monkeypatch, capsys,
                                                                   skipping_clock):
  """A line's steps/s runs from the previous line's fetch of its metrics, which waits for those
  steps (the first one's compile included): a 3 s wait for step 1 counts in step 1's rate, not in
  step 2's (metrics.jsonl measured it from before that wait). The first step is announced, after
  the data's source."""
  fetch = log_lines.check_finite

  def slow_first_fetch(pending):
    if pending[0][0] == 1:
      skipping_clock.sleep(3.0)
    return fetch(pending)

  monkeypatch.setattr(log_lines, "check_finite", slow_first_fetch)
  quick_config.train.steps = 4  # test_interrupted_training_...'s program: compiled once
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=2)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  rates = [record["steps_per_s"] for record in map(json.loads, lines)]
  assert rates[0] < 1 / 3 < rates[1], rates  # step 2 itself takes well under 3 s
  out = capsys.readouterr().out
  assert "train: compiling the training step, then steps 1..2" in out
  # The data it reads is named too: a `:quick` suffix swaps in the synthetic set.
  assert "data: synthetic (training on train, evaluating on val)\n" in out


def test_profile_steps_trace_the_loops_steps_and_table_the_train_step(quick_config, tmp_path,
                                                                       capsys):
  """`train.profile_steps` traces those of the run's steps (the range clipped to the run) and
  tables the train step program's ops, named by their JAX source."""
  quick_config.train.steps = 4  # test_interrupted_training_...'s program: compiled once
  quick_config.train.profile_steps = (2, 9)
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=2)
  out = capsys.readouterr().out
  assert "profiling steps 2..2" in out and "trace of 1 step ->" in out
  assert list((tmp_path / "profile" / "train" / "process_0").rglob("*.xplane.pb"))
  table = (tmp_path / "profile" / "train_step.md").read_text()
  sources = [line for line in table.splitlines() if "`jit(step)/" in line]
  assert len(sources) >= 10 and any("SegFormer" in line for line in sources), table


def test_a_resume_with_changed_settings_lists_them_and_keeps_the_earlier_record(quick_config,
                                                                              tmp_path, capsys):
  quick_config.train.steps = 4  # test_interrupted_training_...'s program: compiled once
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=1)
  quick_config.train.log_every = 2
  capsys.readouterr()
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=1)
  out = capsys.readouterr().out
  assert "resuming at step 1 with changed config field (the record" in out
  assert "  train.log_every: 1 -> 2" in out
  assert json.loads((tmp_path / "config.until_step1.json").read_text())["train"]["log_every"] == 1
  assert json.loads((tmp_path / "config.json").read_text())["train"]["log_every"] == 2
  # A resume at step 2 with log_every 5, killed before its next checkpoint: its config.json
  # describes no checkpoint, and the next resume's changes are those since step 2's record.
  record = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.until_step2.json").write_text(json.dumps(record))
  (tmp_path / "config.json").write_text(json.dumps({**record, "train": {**record["train"],
                                                                        "log_every": 5}}))
  quick_config.train.log_every = 3
  quick_config.train.steps = 8  # the schedule's length is the program's argument: no recompile
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=1)
  out = capsys.readouterr().out
  assert "resuming at step 2 with changed config fields" in out
  assert "  train.log_every: 2 -> 3" in out
  now, then = (float(lr_schedule(quick_config.optim, steps, quick_config.optim.lr)(2))
               for steps in (8, 4))
  assert now > then  # the poly schedule's rate at step 3 over 8 steps, against over 4
  assert (f"train.steps 4 -> 8: the learning-rate schedule runs over 8 steps now, step 3 at lr "
          f"{now:.4g} (at {then:.4g} over 4)") in out


def _diverge_at_step_1(monkeypatch):
  """Makes the loop's train step report a NaN loss at step 1."""
  make_train_step = loop.step_lib.make_train_step

  def diverging_at_step_1(*args, **kwargs):
    train_step = make_train_step(*args, **kwargs)

    def step(state, batch, total_steps):
      first = int(state.step) == 0  # read before the step donates the state
      new_state, metrics = train_step(state, batch, total_steps)
      if first:
        metrics = dict(metrics, loss=metrics["loss"] * np.nan)
      return new_state, metrics
    return step

  monkeypatch.setattr(loop.step_lib, "make_train_step", diverging_at_step_1)


def test_no_checkpoint_holds_a_diverged_step_between_log_lines(quick_config, tmp_path,
                                                               monkeypatch):
  """Checkpoints every 2 steps, log lines every 4: step 1's non-finite loss stops the run before
  the step-2 checkpoint, which would otherwise be saved unchecked (resuming from it repeats the
  divergence forever)."""
  _diverge_at_step_1(monkeypatch)
  quick_config.train.update(steps=4, log_every=4, checkpoint_every=2)
  with pytest.raises(TrainingDiverged, match="non-finite loss nan at step 1"):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_abstract_state_is_the_fresh_one_without_initialising(quick_config, monkeypatch):
  """What eval and resume restore into: the fresh state's shapes, dtypes and shardings, with the
  initialisation program neither compiled nor run."""
  mesh = loop.parallel.make_mesh(data=-1, fsdp=2)
  quick_config.sharding_rules = (("kernel$", "fsdp"),)
  method = loop.get_method(quick_config)
  fresh, sharding, _, _ = loop.create_state(quick_config, method, mesh)
  jitted = []
  real_jit = jax.jit
  monkeypatch.setattr(jax, "jit",
                      lambda fun, **kwargs: jitted.append(fun) or real_jit(fun, **kwargs))
  abstract, abstract_sharding, _, _ = loop.create_state(quick_config, method, mesh, abstract=True)
  assert not jitted
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
  assert jax.tree.structure(abstract) == jax.tree.structure(fresh)
  for a, f, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(fresh),
                     jax.tree.leaves(abstract_sharding)):
    assert (a.shape, a.dtype, a.sharding) == (f.shape, f.dtype, f.sharding) and a.sharding == s
  assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(abstract))


def test_a_checkpoint_of_another_config_is_named_as_such_and_its_config_json_kept(quick_config,
                                                                                 tmp_path, capsys):
  """Resuming or evaluating with a config whose arrays do not fit the checkpoint: one error that
  lists the differing config fields (not Orbax's tree diff), and config.json still records what
  was trained. So does resuming with another Grain worker count, batch size (the iterator counts
  batches), seed (the epochs' video order), accumulation (the optimizer counts updates of k
  steps) or epoch (the iterator's position is one in a permutation of its items). A restore error of another kind is not disguised as
  one."""
  quick_config.train.steps = 4  # test_interrupted_training_...'s program: compiled once
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=1)
  recorded = (tmp_path / "config.json").read_text()
  quick_config.model.decoder_dim = 16
  for run in (loop.train_and_evaluate, loop.evaluate_checkpoint):
    with pytest.raises(SetupError, match=r"(?s)checkpoints \(step 1\) was written with a "
                       r"different config: .*\n  model\.decoder_dim: 32 -> 16\n.*new --workdir"):
      run(quick_config, str(tmp_path))
  assert (tmp_path / "config.json").read_text() == recorded

  quick_config.model.decoder_dim = 32
  quick_config.data.num_workers = 2  # Grain's error named neither the workdir nor the fix
  with pytest.raises(SetupError, match=r"checkpointed with data\.num_workers=0 .* rerun with "
                     r"--config\.data\.num_workers=0"):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  quick_config.data.num_workers = 0
  quick_config.data.batch_size *= 2  # resumed at sample 1 * 8 instead of 1 * 4: 4 skipped
  with pytest.raises(SetupError, match=r"checkpointed with data\.batch_size=4 .* resume at "
                     r"another sample, repeating or skipping data\. Rerun with "
                     r"--config\.data\.batch_size=4"):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  quick_config.data.batch_size //= 2
  quick_config.seed += 1  # the epoch's video order is drawn from the seed
  with pytest.raises(SetupError, match=r"checkpointed with seed=0 .* repeat some of this epoch's "
                     r"videos and skip others\. Rerun with --config\.seed=0"):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  quick_config.seed -= 1
  quick_config.optim.accumulate_steps = 2  # the schedule counts updates of k steps
  with pytest.raises(SetupError, match=r"optimizer state of .* checkpointed with optim\."
                     r"accumulate_steps=1 .* Rerun with --config\.optim\.accumulate_steps=1, or "
                     r"train in a new --workdir"):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  quick_config.optim.accumulate_steps = 1
  quick_config.data.train_epoch = "frames"  # the saved position counts items of another epoch
  with pytest.raises(SetupError, match=r"step 1 in .* was saved over a training epoch of 8 videos, "
                     r"digest \w{16}, and this run's epoch is \d+ labelled frames of 8 videos, "
                     r"digest \w{16}: its position would resume at other clips"):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  quick_config.data.train_epoch = "videos"
  state_file = tmp_path / "checkpoints" / "1" / "data_iter" / "process_0-of-1.json"
  saved = state_file.read_text()
  state_file.write_text(saved[:20])  # cut short
  with pytest.raises(SetupError, match=r"checkpoint of step 1 .* cannot be read"):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  earlier = json.loads(saved)  # as a vssjax before the epoch's record saved it: it resumes
  earlier["sampler"] = earlier["sampler"].split("; epoch of ")[0] + ")"
  state_file.write_text(json.dumps(earlier))
  capsys.readouterr()
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=1)
  assert ("was saved by a vssjax that did not record its training epoch (before 2026-12-08): "
          "resumed without checking") in capsys.readouterr().out
  resumed = json.loads((tmp_path / "checkpoints" / "2" / "data_iter" / "process_0-of-1.json")
                       .read_text())
  assert resumed["last_seen_indices"] == {"0": earlier["last_seen_indices"]["0"] + 1}

  def unrelated(*args, **kwargs):  # pylint: disable=unused-argument
    raise ValueError("unreadable checkpoint")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(Checkpointer, "restore", unrelated)
    with pytest.raises(ValueError, match="unreadable checkpoint") as error:
      loop.evaluate_checkpoint(quick_config, str(tmp_path))
  assert not isinstance(error.value, SetupError)


def test_evaluating_a_workdir_it_cannot_write_is_refused_before_the_restore(quick_config,
                                                                           tmp_path, monkeypatch):
  """`--mode=eval` writes its results into the workdir: one shared read-only (simulated: root
  writes anywhere) was a traceback after the first video's predictions."""
  restores = []
  monkeypatch.setattr(loop, "restore_for_eval", lambda *args: restores.append(1))
  monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path))
  with pytest.raises(SetupError, match=rf"^{tmp_path} is not writable, and the evaluation's "
                     "results are written there"):
    loop.evaluate_checkpoint(quick_config, str(tmp_path))
  assert not restores


@pytest.mark.parametrize("field, value, message", [
    ("devices", 99, r"eval.devices=99: 0 \(every local accelerator"),
    ("max_videos", -1, r"eval.max_videos=-1: 0 \(every video\)"),
])
def test_evaluating_with_a_bad_eval_setting_is_refused_before_the_restore(
    quick_config, tmp_path, monkeypatch, field, value, message):
  """As training checks them before its first step: a restore takes minutes for a large model."""
  restores = []
  monkeypatch.setattr(loop, "restore_for_eval", lambda *args: restores.append(1))
  quick_config.eval[field] = value
  with pytest.raises(SetupError, match=message):
    loop.evaluate_checkpoint(quick_config, str(tmp_path))
  assert not restores


def test_a_checkpoint_evaluates_with_another_optimizer(quick_config, tmp_path):
  """`--mode=eval` and `--mode=infer` restore the model's variables alone: a config that changes
  the optimizer's state (gradient accumulation wraps it) still reads the trained weights."""
  mesh = loop.parallel.mesh_from_config(quick_config)
  state, _, _, _ = loop.create_state(quick_config, loop.get_method(quick_config), mesh)
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(0, state, force=True)
  quick_config.optim.accumulate_steps = 2
  _, variables, step = loop.restore_for_eval(quick_config, str(tmp_path))
  assert step == 0
  jax.tree.map(np.testing.assert_array_equal, variables, state.variables)


def test_training_in_a_converted_workdir_says_to_fine_tune_from_a_new_one(quick_config, tmp_path):
  """`vssjax.convert` saves the train state alone: no data iterator to resume training with."""
  mesh = loop.parallel.mesh_from_config(quick_config)
  state, _, _, _ = loop.create_state(quick_config, loop.get_method(quick_config), mesh)
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(0, state, force=True)
  with pytest.raises(SetupError, match=r"holds converted weights .*--mode=eval or --mode=infer\. "
                     r"To fine-tune .* new --workdir with --config\.init\.workdir="
                     rf"{tmp_path} --config\.init\.config=<the config file it was converted "
                     r"with> \(or init\.torch_checkpoint="):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_an_evaluation_split_that_cannot_be_read_stops_training_before_it_starts(quick_config,
                                                                                   tmp_path):
  """Not after the whole training, at its first evaluation."""
  quick_config.data.eval_split = "test"  # the synthetic set has none
  with pytest.raises(SetupError, match=r"source 'synthetic' has splits \('train', 'val'\), not "
                     r"'test'"):
    loop.train_and_evaluate(quick_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_pytorch_weights_that_cannot_be_read_stop_training_before_the_state_compiles(
    quick_config, tmp_path, monkeypatch):
  """`init.torch_checkpoint` is read before the initialisation compiles (minutes for a large
  model), so a wrong path is said at once."""
  def compile_state(*args, **kwargs):
    raise AssertionError("the state was initialised before the weights were read")

  monkeypatch.setattr(loop, "create_state", compile_state)
  quick_config.init.torch_checkpoint = str(tmp_path / "mit_b0.pth")
  with pytest.raises(SetupError, match=r"mit_b0\.pth: no such file or directory"):
    loop.train_and_evaluate(quick_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # made for the run, then removed again


def test_fixed_variables_that_cannot_be_read_stop_training_before_the_state_compiles(
    quick_config, tmp_path, monkeypatch):
  """The method's `fixed_variables` (ETC's teacher: an error when none is given) are read before
  the initialisation compiles too."""
  def compile_state(*args, **kwargs):
    raise AssertionError("the state was initialised before the fixed variables were read")

  def no_teacher(self):
    raise SetupError("ETC distillation needs the trained teacher")

  monkeypatch.setattr(loop, "create_state", compile_state)
  monkeypatch.setattr(type(loop.get_method(quick_config)), "fixed_variables", no_teacher)
  with pytest.raises(SetupError, match="needs the trained teacher"):
    loop.train_and_evaluate(quick_config, str(tmp_path / "run"))

class _Started(Exception):
  """Raised by a spy once the initial state is built, so that the run stops before compiling."""


def test_a_run_starts_from_the_variables_of_another_that_init_take_selects(quick_config, tmp_path,
                                                                          monkeypatch, capsys):
  """`init.workdir` + `init.config`: the backbone of a trained SegFormer goes into a model whose
  head is of another width; `init.take` '.*' would take the head too, which does not fit, and
  the error says how to leave it out. The run to start from was trained with an override of its
  file (as a checkpoint converted with `model.decoder_dim=768`): its record restores it, where
  the file alone was refused as "written with a different config"."""
  file_dim = quick_config.model.decoder_dim
  quick_config.model.decoder_dim = 24
  loop.train_and_evaluate(quick_config, str(tmp_path / "trained"))
  _, trained = _params(quick_config, tmp_path / "trained")
  quick_config.model.decoder_dim = 16
  quick_config.init.update(workdir=str(tmp_path / "trained"),
                           config=str(REPO / "configs/segformer/synthetic_mitb0.py") + ":quick")
  capsys.readouterr()
  with pytest.raises(SetupError,
                     match=r"decode_head/.*: converted shape .* != model shape") as error:
    loop.train_and_evaluate(quick_config, str(tmp_path / "all"))
  assert "a narrower init.take leaves out what differs" in error.value.__notes__[-1]
  said = capsys.readouterr().out
  assert "init.config holds others (init.config -> record):\n" in said
  assert f"\n  model.decoder_dim: {file_dim} -> 24\n" in said

  started = {}

  def spy(*args, **kwargs):
    started["state"] = state_with_variables(*args, **kwargs)
    raise _Started

  state_with_variables = init_from.state_with_variables
  monkeypatch.setattr(init_from, "state_with_variables", spy)
  quick_config.init.take = "^params/backbone/"
  with pytest.raises(_Started):
    loop.train_and_evaluate(quick_config, str(tmp_path / "backbone"))
  out = capsys.readouterr().out
  assert re.search(rf"init: (\d+) of the \d+ arrays of step 2 of {re.escape(str(tmp_path))}", out)
  assert "kept the fresh initialisation of batch_stats/decode_head, params/decode_head\n" in out
  state = started["state"]
  assert int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal, state.params["backbone"],
               trained["params"]["backbone"])
  assert state.params["decode_head"]["linear_fuse"]["conv"]["kernel"].shape[-1] == 16


def test_init_take_is_searched_in_each_path_and_one_taking_nothing_is_refused(quick_config,
                                                                               tmp_path):
  """`init.take` is searched in each '/'-joined path (docs/reproducing.md): 'backbone/' takes the
  backbone, not nothing. One that takes nothing would start the run from scratch while it is
  meant to fine-tune: refused. A run that cannot be read is named by init.workdir/config."""
  mesh = loop.parallel.mesh_from_config(quick_config)
  state, _, _, _ = loop.create_state(quick_config, loop.get_method(quick_config), mesh)
  with contextlib.closing(Checkpointer(str(tmp_path / "run"), async_save=False)) as checkpointer:
    checkpointer.save(0, state, force=True)
  init = quick_config.init
  init.update(workdir=str(tmp_path / "run"), take="backbone/",
              config=str(REPO / "configs/segformer/synthetic_mitb0.py") + ":quick")
  taken = traverse_util.flatten_dict(loop._variables_of_run(init), sep="/")
  every = traverse_util.flatten_dict(jax.device_get(state.variables), sep="/")
  assert sorted(taken) == sorted(p for p in every if p.startswith("params/backbone/"))
  jax.tree.map(np.testing.assert_array_equal, taken, {p: every[p] for p in taken})
  init.take = "^decoder/"
  with pytest.raises(SetupError, match=r"init.take='\^decoder/' matches none of the variables "
                                       r"of step 0 of .*, whose '/'-joined paths are as "
                                       r"'batch_stats/"):
    loop._variables_of_run(init)
  init.workdir = str(tmp_path)  # a folder without checkpoints
  with pytest.raises(SetupError, match="no checkpoint in") as raised:
    loop._variables_of_run(init)
  assert raised.value.__notes__[-1] == (f"(the run to start from: init.workdir={str(tmp_path)!r}, "
                                        f"init.config={init.config!r})")


@pytest.mark.parametrize("init, message", [
    (dict(workdir="/runs/a"), r"init.workdir='/runs/a' needs init.config, the config file"),
    (dict(config="c.py"), r"init.config='c.py' is set without init.workdir"),
    (dict(workdir="/runs/a", config="c.py", torch_checkpoint="m.pth"),
     r"init.workdir and init.torch_checkpoint are both set"),
    (dict(workdir="/runs/a", config="c.py", take="(backbone"),
     r"init.take='\(backbone' is not a regular expression"),
    (dict(workdir="/nowhere/run", config=str(REPO / "configs/segformer/synthetic_mitb0.py")),
     r"/nowhere/run"),
])
def test_a_run_to_start_from_that_cannot_be_read_stops_training_before_the_state_compiles(
    quick_config, tmp_path, monkeypatch, init, message):
  def compile_state(*args, **kwargs):
    raise AssertionError("the state was initialised before the run to start from was read")

  monkeypatch.setattr(loop, "create_state", compile_state)
  quick_config.init.update(init)
  with pytest.raises(SetupError, match=message):
    loop.train_and_evaluate(quick_config, str(tmp_path / "run"))


def test_an_init_returning_the_parameters_alone_is_one_error_naming_it(quick_config):
  """It was a KeyError: 'params' out of the loop."""
  method = loop.get_method(quick_config)
  method.init = lambda rng, batch: type(method).init(method, rng, batch)["params"]
  with pytest.raises(SetupError, match=r"^SegFormerMethod.init returned a dict of \[.*\]: it "
                     "returns the module's variables as a dict of collections"):
    loop.create_state(quick_config, method, parallel.make_mesh())


def test_an_init_that_reads_the_batchs_values_is_pointed_to_the_shapes_only_rule(quick_config):
  """JAX's ConcretizationTypeError names neither the method nor the rule it broke."""
  method = loop.get_method(quick_config)
  method.init = lambda rng, batch: (float(batch["frames"].mean()),
                                    type(method).init(method, rng, batch))[1]
  with pytest.raises(jax.errors.ConcretizationTypeError) as error:
    loop.create_state(quick_config, method, parallel.make_mesh())
  assert error.value.__notes__[-1] == (
      "(in SegFormerMethod.init, traced on shapes alone: it must depend on the batch's shapes "
      "only, docs/extending.md)")


def test_fixed_variables_that_do_not_fit_the_model_are_named_so(quick_config, tmp_path,
                                                                monkeypatch):
  """The mismatch spoke of "converted" variables alone: a method's own `fixed_variables` of the
  wrong shape (a teacher of another width) were not named."""
  method_class = type(loop.get_method(quick_config))
  monkeypatch.setattr(method_class, "fixed_variables",
                      lambda self: {"params": {"decode_head": {"linear_pred": {
                          "kernel": np.zeros((1, 1, 32, 5), np.float32)}}}})
  with pytest.raises(SetupError, match=r"linear_pred/kernel: converted shape \(1, 1, 32, 5\) != "
                     r"model shape") as error:
    loop.train_and_evaluate(quick_config, str(tmp_path / "run"))
  assert error.value.__notes__ == [
      f"(swapped in: {method_class.__name__}.fixed_variables()'s ['params'])"]


def test_evaluating_a_workdir_that_does_not_exist_does_not_create_it(quick_config, tmp_path,
                                                                     monkeypatch):
  """... and says so first: a typo under a folder of runs this user cannot write (simulated: root
  writes everywhere) was told to copy the workdir it named."""
  monkeypatch.setattr(os, "access", lambda path, mode: False)
  with pytest.raises(SetupError, match="missing does not exist: name the workdir of a training"):
    loop.evaluate_checkpoint(quick_config, str(tmp_path / "missing"))
  assert not (tmp_path / "missing").exists()
  (tmp_path / "a_file").write_text("")
  with pytest.raises(SetupError, match="a_file is a file: name the workdir of a training"):
    loop.evaluate_checkpoint(quick_config, str(tmp_path / "a_file"))


def test_the_batch_spec_checks_the_crop_size_that_evaluations_restore_with(quick_config):
  """--mode=eval reads the train state's shapes from the crop size without the loader's checks:
  a crop size of three numbers was a bare "too many values to unpack" there."""
  quick_config.data.train_transform.crop_size = (64, 64, 3)
  with pytest.raises(SetupError, match=r"data\.train_transform\.crop_size=\(64, 64, 3\): two "
                     r"whole numbers"):
    loop.batch_spec(quick_config)


def test_periodic_evaluations_make_a_history_and_any_kept_checkpoint_evaluates(quick_config,
                                                                                 tmp_path):
  """`train.eval_every` evaluates during training (results.json then holds the last one only, so
  each also goes to eval_history.jsonl); its step is checkpointed first, whatever
  `checkpoint_every` says (a preemption during the evaluation would otherwise lose the steps since
  the last checkpoint); an earlier kept checkpoint evaluates by its step, and a step that was not
  kept is named with those that were."""
  quick_config.train.update(steps=4, eval_every=2, checkpoint_every=100)
  loop.train_and_evaluate(quick_config, str(tmp_path))
  history = [json.loads(line) for line in
             (tmp_path / "eval_history.jsonl").read_text().splitlines()]
  assert [record["step"] for record in history] == [2, 4]
  assert all(0 <= record["mIoU"] <= 1 for record in history)
  results = loop.evaluate_checkpoint(quick_config, str(tmp_path), step=2)
  assert results["step"] == 2 and results["mIoU"] == pytest.approx(history[0]["mIoU"])
  assert "config_changes" not in results
  with pytest.raises(SetupError, match=r"no checkpoint of step 3 in .*; it holds steps 2, 4"):
    loop.evaluate_checkpoint(quick_config, str(tmp_path), step=3)


def test_an_evaluation_with_other_settings_than_the_training_says_and_records_them(
    quick_config, tmp_path, capsys):
  """`--mode=eval` of a DCFM workdir with `:k=6` (docs/results.md) wrote results that read as the
  trained k=2's: the changed fields are printed and kept in results.json, results.md and the
  history line; so too where a complete training is run again only to evaluate."""
  quick_config.train.update(steps=1, checkpoint_every=1)
  loop.train_and_evaluate(quick_config, str(tmp_path))
  quick_config.eval.max_videos = 1
  for run in (loop.evaluate_checkpoint, loop.train_and_evaluate):
    results = run(quick_config, str(tmp_path))
    assert results["config_changes"] == ["eval.max_videos: 0 -> 1"]
    assert "predicting with config fields that differ from the checkpoint's record " in (
        capsys.readouterr().out)
    assert "- `eval.max_videos: 0 -> 1`" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["config_changes"] == [
        "eval.max_videos: 0 -> 1"]
    last = (tmp_path / "eval_history.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["config_changes"] == ["eval.max_videos: 0 -> 1"]


def test_sigterm_during_a_periodic_evaluation_cuts_it_short_and_stops_at_its_step(
    quick_config, tmp_path, monkeypatch, capsys):
  """The evaluation took its minutes to the end, then the run trained one more step before
  stopping, beyond a scheduler's grace period: now the evaluation ends at its next video and the
  run at its step, checkpointed before the evaluation began."""
  evaluate = loop.evaluate

  def preempted_evaluate(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return evaluate(*args, **kwargs)

  monkeypatch.setattr(loop, "evaluate", preempted_evaluate)
  # No log line at step 2 but the one the stop writes: its steps are not lost from the curve.
  quick_config.train.update(steps=4, eval_every=2, checkpoint_every=100, log_every=4)
  assert loop.train_and_evaluate(quick_config, str(tmp_path)) is None
  out = capsys.readouterr().out
  assert "eval[val] of step 2 cut short by the stop request after 0 of" in out
  assert "step 2's evaluation was cut short: --mode=eval --step=2 evaluates it" in out
  assert "stopped at step 2 on request" in out
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    assert checkpointer.all_steps() == [2]
  assert list(logged_losses(tmp_path)) == [2]
  assert not (tmp_path / "eval_history.jsonl").exists()


def test_an_earlier_checkpoint_is_compared_with_the_config_it_was_trained_with(
    quick_config, tmp_path, capsys):
  """Step 1 trained with train.steps=1, step 2 after a resume with 2 and eval.max_videos=1
  (config.until_step1.json keeps the first): an evaluation of step 1 with step 1's settings
  changed nothing, which config.json alone said it did. A config.json that cannot be parsed is
  said, and the evaluation runs."""
  quick_config.train.update(steps=1, checkpoint_every=1)
  loop.train_and_evaluate(quick_config, str(tmp_path))
  quick_config.train.steps, quick_config.eval.max_videos = 2, 1
  loop.train_and_evaluate(quick_config, str(tmp_path))
  quick_config.train.steps, quick_config.eval.max_videos = 1, 0
  assert "config_changes" not in loop.evaluate_checkpoint(quick_config, str(tmp_path), step=1)
  assert loop.evaluate_checkpoint(quick_config, str(tmp_path), step=2)["config_changes"] == [
      "eval.max_videos: 1 -> 0"]  # not train.steps, which no prediction reads
  (tmp_path / "config.json").write_text('{"train": ')  # cut short
  capsys.readouterr()
  assert loop.evaluate_checkpoint(quick_config, str(tmp_path), step=2)["step"] == 2
  assert "config.json cannot be parsed" in capsys.readouterr().out


@pytest.mark.parametrize("steps, stop", [(4, 3), (2, 2)])
def test_a_stop_request_after_a_steps_check_stops_at_the_first_step_saved(
    quick_config, tmp_path, monkeypatch, capsys, steps, stop):
  """A SIGTERM between step 2's stop check and its end: where step 2 saves nothing, the run
  stopped there with no checkpoint of it (a re-run resumed from an earlier one, or none); it
  stops at step 3. Where step 2 is the last, saved, the run stops without the final evaluation,
  which its re-run makes."""
  should_stop = StopSignal.should_stop

  def signalled_after_the_check(self, step):
    answer = should_stop(self, step)
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return answer

  monkeypatch.setattr(StopSignal, "should_stop", signalled_after_the_check)
  quick_config.train.update(steps=steps, checkpoint_every=100)
  assert loop.train_and_evaluate(quick_config, str(tmp_path)) is None
  assert f"stopped at step {stop} on request; checkpoint saved" in capsys.readouterr().out
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    assert checkpointer.all_steps() == [stop]
  assert not (tmp_path / "results.json").exists()


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_a_ctrl_c_while_the_last_save_completes_lets_it_complete_and_stops_at_its_step(
    quick_config, tmp_path, monkeypatch, capsys):
  """The run waited for its last (asynchronous) save with Python's own handler back: a Ctrl-C
  then aborted the save inside Orbax (its tracebacks; the steps since the save before lost). Now
  the save completes, and the run stops at its step without the final evaluation, as a Ctrl-C
  during the step would have."""
  wait_until_saved, interrupted = Checkpointer.wait_until_saved, []

  def ctrl_c_while_waiting(self):
    if not interrupted:
      interrupted.append(True)
      signal.raise_signal(signal.SIGINT)
    wait_until_saved(self)

  monkeypatch.setattr(Checkpointer, "wait_until_saved", ctrl_c_while_waiting)
  quick_config.train.update(steps=2, checkpoint_every=100)
  assert loop.train_and_evaluate(quick_config, str(tmp_path)) is None
  assert interrupted and stop_request_signal() == signal.SIGINT
  assert "stopped at step 2 on request; checkpoint saved" in capsys.readouterr().out
  assert checkpoint.complete_steps(str(tmp_path)) == [2]
  assert not (tmp_path / "results.json").exists()


def test_the_workdir_stays_locked_through_the_final_evaluation(quick_config, tmp_path,
                                                               monkeypatch):
  """A second training run (a requeued job) started during the first's final evaluation found
  the lock free and the training complete, and evaluated alongside, both writing the results."""
  second_run = []

  def evaluate(*args, **kwargs):
    second_run.append(subprocess.run(
        [sys.executable, "-c", "import sys; from vssjax.train import workdir\n"
         "with workdir.workdir_lock(sys.argv[1]): pass", str(tmp_path)],
        capture_output=True, text=True, check=False))
    return {}

  monkeypatch.setattr(loop, "evaluate", evaluate)
  quick_config.train.update(steps=1, checkpoint_every=1)
  loop.train_and_evaluate(quick_config, str(tmp_path))
  [result] = second_run
  assert result.returncode == 1 and "another training run" in result.stderr, result.stderr


def test_no_evaluation_scores_a_diverged_step_between_log_lines(quick_config, tmp_path,
                                                                monkeypatch):
  """Evaluations every 2 steps, log lines and checkpoints every 4: step 1's non-finite loss stops
  the run before the step-2 evaluation would write the diverged parameters' scores into
  results.json and eval_history.jsonl."""
  _diverge_at_step_1(monkeypatch)
  quick_config.train.update(steps=4, log_every=4, checkpoint_every=4, eval_every=2)
  with pytest.raises(TrainingDiverged, match="non-finite loss nan at step 1"):
    loop.train_and_evaluate(quick_config, str(tmp_path))
  assert not (tmp_path / "eval_history.jsonl").exists()
  assert not (tmp_path / "results.json").exists()


class _RecordingSummaryWriter:
  """tensorboardX.SummaryWriter's interface, keeping what it was given (tensorboardX is optional
  and not a test dependency)."""
  made: list["_RecordingSummaryWriter"] = []

  def __init__(self, logdir, purge_step=None):
    self.logdir, self.purge_step, self.scalars = logdir, purge_step, []
    self.made.append(self)

  def add_scalar(self, name, value, step):
    self.scalars.append((name, value, step))

  def close(self):
    pass


def test_a_resume_drops_the_log_lines_of_the_steps_it_trains_again(quick_config, tmp_path,
                                                                   monkeypatch, capsys):
  """A run killed (kill -9, an OOM) after its last checkpoint has logged, and maybe evaluated,
  steps that the resume trains again: metrics.jsonl read 1 2 3 4 3 4 and eval_history.jsonl held
  step 3 twice. A line cut short by the kill is dropped too (it would not parse). TensorBoard
  is told to hide the killed run's values from step 3 on (its purge step). So does a fresh start
  after a run killed before its first checkpoint (it read 1 2 1 2). Each run says what it
  dropped, and a resume from an evaluation step whose evaluation the history lacks (a run killed
  during it, after saving its step) says how to make it."""
  monkeypatch.setitem(sys.modules, "tensorboardX",
                      types.SimpleNamespace(SummaryWriter=_RecordingSummaryWriter))
  monkeypatch.setattr(_RecordingSummaryWriter, "made", [])
  quick_config.train.steps = 4  # test_interrupted_training_...'s program: compiled once
  quick_config.train.eval_every = 2
  quick_config.eval.max_videos = 1
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "lo')
  loop.train_and_evaluate(quick_config, str(tmp_path), max_steps_this_run=2)
  assert "metrics.jsonl: 2 lines logged after step 0 dropped" in capsys.readouterr().out
  assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
      1, 2]
  (tmp_path / "eval_history.jsonl").write_text("")  # killed during step 2's evaluation
  for log in ("metrics.jsonl", "eval_history.jsonl"):  # what the killed run wrote after step 2
    with (tmp_path / log).open("a") as f:
      f.write('{"step": 3, "loss": 9.0}\n{"step": 4, "lo')
  loop.train_and_evaluate(quick_config, str(tmp_path))
  said = capsys.readouterr().out
  for log in ("metrics.jsonl", "eval_history.jsonl"):
    assert f"{log}: 2 lines logged after step 2 dropped: this run starts from step 2" in said
  assert ("step 2 is an evaluation step (train.eval_every=2) that eval_history.jsonl has no "
          "evaluation of: --mode=eval --step=2 makes it") in said
  assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
      1, 2, 3, 4]
  assert 9.0 not in logged_losses(tmp_path).values()
  history = (tmp_path / "eval_history.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in history] == [4]
  assert [w.purge_step for w in _RecordingSummaryWriter.made] == [1, 3]
  assert {step for _, _, step in _RecordingSummaryWriter.made[1].scalars} == {3, 4}
