"""The command line as a user runs it: train, Ctrl-C and resume, eval, infer, bad flags."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, logged_losses
from vssjax.errors import SetupError

pytestmark = pytest.mark.slow
CONFIG = "configs/segformer/synthetic_mitb0.py:quick"


def _cli(workdir, data_dir, *args):
  return [sys.executable, "-m", "vssjax.main", f"--config={CONFIG}", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *args]


# What Python's resource tracker prints at exit for shared memory left linked (Grain's workers hand
# over batches in shared memory).
LEAK_WARNING = "leaked shared_memory"


def _run(cmd):
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  assert LEAK_WARNING not in result.stderr, result.stderr
  return result.stdout


# A handler here is reset to the default in the child; an ignored SIGINT (as a background job's
# shell may leave it) would be inherited, and the run would never stop.
@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_ctrl_c_checkpoints_then_resume_eval_and_infer(tmp_path, synthetic_data_dir):
  """Ctrl-C as a terminal sends it, SIGINT to the run's process group, stops at a checkpoint
  (SIGTERM does the same: tests/train/test_preemption.py); the run resumes from there. Both runs
  load with two data workers, whose shared memory must not outlive them."""
  workdir = tmp_path / "run"
  workers = "--config.data.num_workers=2"  # a resume needs the count the checkpoint was saved with
  train = _cli(workdir, synthetic_data_dir, "--mode=train", "--config.train.steps=100000",
               "--config.train.checkpoint_every=100000", workers)
  proc = subprocess.Popen(train, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
  lines = []
  for line in proc.stdout:  # wait until training is under way, then press Ctrl-C
    lines.append(line)
    if line.startswith("train step 3/"):
      os.killpg(proc.pid, signal.SIGINT)
  # Ended by SIGINT, as an interrupted command: a shell loop running it stops too (status 130).
  assert proc.wait(timeout=300) == -signal.SIGINT, "".join(lines)
  assert any(l.startswith("Ctrl-C: will checkpoint and stop") for l in lines), "".join(lines)
  stopped = [l for l in lines if l.startswith("stopped at step")]
  assert stopped, "".join(lines)
  step = int(stopped[0].split()[3].rstrip(";"))
  assert lines[-1] == (f"interrupted during --mode=train; re-running it in {workdir} resumes "
                       f"from its last complete checkpoint, step {step}\n"), "".join(lines)
  assert (workdir / "checkpoints" / str(step) / "data_iter").is_dir()
  assert not any(LEAK_WARNING in l for l in lines), "".join(lines)

  out = _run(_cli(workdir, synthetic_data_dir, "--mode=train", f"--config.train.steps={step + 1}",
                  workers))
  assert f"resumed from {workdir / 'checkpoints'} at step {step}" in out
  assert "| mIoU (%) |" in out  # the results table is printed at the end
  assert max(logged_losses(workdir)) == step + 1

  out = _run(_cli(workdir, synthetic_data_dir, "--mode=eval"))
  assert f"evaluating checkpoint of step {step + 1}" in out
  assert json.loads((workdir / "results.json").read_text())["step"] == step + 1
  out = _run(_cli(workdir, synthetic_data_dir, "--mode=eval", f"--step={step}"))  # the earlier one
  assert f"evaluating checkpoint of step {step}" in out
  history = (workdir / "eval_history.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in history] == [step + 1, step + 1, step]

  frames = tmp_path / "frames"
  frames.mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    cv2.imwrite(str(frames / f"f{i}.png"), rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
  out = _run(_cli(workdir, synthetic_data_dir, "--mode=infer", f"--input={frames}"))
  labels = sorted((workdir / "infer" / "frames" / "labels").iterdir())
  assert [p.name for p in labels] == ["f0.png", "f1.png", "f2.png"]
  label = Image.open(labels[0])
  assert label.mode == "P" and label.size == (56, 40)
  assert np.asarray(label).max() < 10  # class ids of the synthetic set
  capture = cv2.VideoCapture(str(workdir / "infer" / "frames" / "overlay.mp4"))
  assert capture.read()[0]  # a video file's: tests/test_infer.py


# `vssjax.main` with one step of the run (`loop.<name>`) raising `error` where a real Ctrl-C lands
# wherever the run happens to be when it arrives.
_RUN_RAISING = """
from absl import app
from vssjax import command_line, main
from vssjax.train import loop

def raising(*args, **kwargs):
  raise {error}

setattr(loop, {name!r}, raising)
app.run(main.main, flags_parser=command_line.parse_config_flags)
"""


def _run_raising(tmp_path, mode, name, error):
  if mode == "eval":  # a workdir to evaluate, whose restore raises
    (tmp_path / "run").mkdir()
  return subprocess.run(
      [sys.executable, "-c", _RUN_RAISING.format(name=name, error=error), f"--config={CONFIG}",
       f"--workdir={tmp_path / 'run'}", f"--mode={mode}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("mode, name, expected", [
    ("train", "make_train_loader", "interrupted during --mode=train; re-running it in {workdir} "
     "starts afresh: it holds no complete checkpoint\n"),
    ("eval", "restore_for_eval", "interrupted during --mode=eval\n"),
])
def test_ctrl_c_outside_the_training_steps_ends_the_run_with_one_line(tmp_path, mode, name,
                                                                      expected):
  """While the run sets up (its data loader, here) or restores a checkpoint, where `StopSignal`
  does not stop it cleanly: the line instead of a traceback, and the process still ends by SIGINT
  (status 130 in a shell), so a script running it stops too."""
  result = _run_raising(tmp_path, mode, name, "KeyboardInterrupt")
  assert result.returncode == -signal.SIGINT, result.stderr
  assert result.stderr == expected.format(workdir=tmp_path / "run")


def test_a_training_stopped_on_request_ends_as_the_signal_would_have():
  """Status 0 said the run completed: a shell loop went on to its next run after a Ctrl-C, and a
  scheduler (a Kubernetes Job) would not run a preempted job again to resume it."""
  from vssjax import main  # pylint: disable=g-import-not-at-top  (its flags: this test only)
  with pytest.raises(KeyboardInterrupt):
    main.end_as_stopped(signal.SIGINT)
  with pytest.raises(SystemExit) as ended:
    main.end_as_stopped(signal.SIGTERM)
  assert ended.value.code == 143
  main.end_as_stopped(None)


def test_a_ctrl_c_in_training_names_the_last_complete_checkpoint(monkeypatch):
  """A re-run resumes from the newest complete checkpoint: the line names that step, not the
  oldest one the workdir keeps."""
  from vssjax import main  # pylint: disable=g-import-not-at-top  (its flags: this test only)
  from vssjax.train import checkpoint  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(checkpoint, "complete_steps", lambda workdir: [4, 8, 12])
  assert main._interrupted("train", "/w/run") == (  # pylint: disable=protected-access
      "interrupted during --mode=train; re-running it in /w/run resumes from its last complete "
      "checkpoint, step 12")


def test_an_error_keeps_its_traceback_after_the_ctrl_c_line_is_set_up(tmp_path):
  result = _run_raising(tmp_path, "eval", "restore_for_eval", "RuntimeError('a bug')")
  assert result.returncode == 1
  assert "Traceback (most recent call last)" in result.stderr
  assert result.stderr.endswith("RuntimeError: a bug\n")


_BENCH_SAYING_PREALLOCATE = """
import os
from absl import app
from vssjax import bench, command_line, main

bench.run = lambda *args: print("preallocate", os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"))
app.run(main.main, flags_parser=command_line.parse_config_flags)
"""


def test_bench_leaves_the_device_memory_jax_does_not_use_to_torch(tmp_path):
  """`--mode=bench` times the PyTorch reference in the same process, on the same device: JAX's
  up-front reservation of 75% of a GPU would leave torch the rest (its rows failed or ran
  squeezed); `bench_suite` set it, a plain `--mode=bench` did not."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
  result = subprocess.run([sys.executable, "-c", _BENCH_SAYING_PREALLOCATE, f"--config={CONFIG}",
                           f"--workdir={tmp_path}", "--mode=bench"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert "preallocate false" in result.stdout, result.stdout + result.stderr


def _one_line_error(args, env=None) -> str:
  """Runs `vssjax.main` with `args`, expecting it to fail with one line on stderr (no traceback)."""
  result = subprocess.run([sys.executable, "-m", "vssjax.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1, result.stdout + result.stderr
  assert len(result.stderr.splitlines()) == 1, result.stderr
  return result.stderr


@pytest.mark.parametrize("override, expected", [
    ("--config.trian.steps=3", "--config.trian.steps: the config has no field trian; did you "
     "mean train?"),
    ("--config.train.stepz=3", "--config.train.stepz: the config has no field train.stepz; did "
     "you mean train.steps?"),
    ("-config.train.stepz=3", "--config.train.stepz: the config has no field train.stepz"),
])
def test_misspelt_override_is_a_one_line_error(tmp_path, override, expected):
  assert expected in _one_line_error([f"--config={CONFIG}", f"--workdir={tmp_path}", override])


@pytest.mark.parametrize("flag, expected", [
    # absl's two lines, "FATAL Flags parsing error: ..." and a usage hint, without the field's type.
    ("--config.train.steps=five", "error: flag --config.train.steps=five: invalid literal for "
     "int() with base 10: 'five': config.train.steps is an int (the config has 2)"),
    ("--config.optim.lr=1e-3x", "could not convert string to float: '1e-3x': config.optim.lr is a "
     "float (the config has 0.001)"),
    ("--mode=tran", "error: flag --mode=tran: value should be one of <train|eval|infer|bench> "
     "(--helpfull lists the flags)"),
    # ml_collections keeps it as a string: a TypeError traceback from the model before.
    ("--config.model.backbone_overrides.depths=(1,a)", "error: --config.model.backbone_overrides"
     ".depths=('(1,a)',): text in a tuple of numbers (the config has (1, 1, 1, 1)); write numbers, "
     "e.g. --config.model.backbone_overrides.depths='(1,1,1,1)'"),
    # A field whose default is () (as the real configs' depths) or holds tuples (param_groups).
    ("--config.data.train_transform.crop_scale_range=(0.5,a)", "error: --config.data."
     "train_transform.crop_scale_range=(0.5,a): not a tuple Python can read (the config has ()); "
     'quote any text in it, e.g. --config.data.train_transform.crop_scale_range="(0.5,\'a\')"'),
    ("--config.optim.param_groups=((head,10.0,1.0),)", "error: --config.optim.param_groups="
     "((head,10.0,1.0),): not a tuple Python can read (the config has (('pos_block', "),
    ("--config.sharding_rules=((kernel,fsdp),)", "e.g. --config.sharding_rules="
     "\"(('kernel','fsdp'),)\""),  # the user's own value quoted, not a tuple of numbers
    # ... but not where quoting its words does not make it Python ('-kernel' -> -'kernel').
    ("--config.sharding_rules=((-kernel,fsdp),)", "(the config has ()); quote any text in it "
     "('text')"),
])
def test_a_flag_value_that_cannot_be_parsed_is_a_one_line_error(tmp_path, flag, expected):
  assert expected in _one_line_error([f"--config={CONFIG}", f"--workdir={tmp_path}", flag])


def test_missing_config_file_is_a_one_line_error(tmp_path):
  """ml_collections would defer it to the config's first use, deep in the run (or in the parsing
  of an override); and the workdir is not created."""
  for extra in ([], ["--config.train.steps=3"]):
    error = _one_line_error(["--config=configs/segformer/nonexistent.py:quick",
                             f"--workdir={tmp_path / 'run'}", *extra])
    assert "--config=configs/segformer/nonexistent.py:quick: no such file" in error
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config, expected", [
    ("configs/segformer", "--config=configs/segformer: a directory; name a config file in it"),
    ("README.md", "README.md is not a config file: configs are Python files"),
    # A module of the package ran its own code: absl's DuplicateFlagError traceback.
    ("data_pipelines/bench.py", "data_pipelines/bench.py is not a config file: it defines no "
     "get_config(arg)"),
    ("vssjax/configs_lib.py", "vssjax/configs_lib.py is not a config file: it defines no "),
])
def test_a_config_path_that_is_no_config_file_is_a_one_line_error(tmp_path, config, expected):
  assert expected in _one_line_error([f"--config={config}", f"--workdir={tmp_path / 'run'}"])
  assert not (tmp_path / "run").exists()


def test_bad_config_argument_is_a_one_line_error(tmp_path):
  error = _one_line_error(["--config=configs/segformer/synthetic_mitb0.py:quik",
                           f"--workdir={tmp_path / 'run'}"])
  assert ("--config=configs/segformer/synthetic_mitb0.py:quik: unknown config argument 'quik'; "
          "known: ['full_width', 'quick']") in error


@pytest.mark.parametrize("mode, extra, expected", [
    ("eval", [], "error: the workdir WORKDIR does not exist: name the workdir of a training run "
     "or of `python -m vssjax.convert`"),
    ("eval", ["--step=5"], "error: the workdir WORKDIR does not exist"),
    ("infer", ["--input=/nonexistent/clip.mp4"], "--input /nonexistent/clip.mp4 does not exist"),
    # --step picks infer's checkpoint too: accepted, and the input is checked next.
    ("infer", ["--input=/nonexistent/clip.mp4", "--step=5"],
     "--input /nonexistent/clip.mp4 does not exist"),
    ("infer", [], "error: --mode=infer needs --input=VIDEO_OR_FRAME_DIR"),  # not after the usage
    # The one line alone: FFmpeg's own ("moov atom not found") came first.
    ("infer", ["--input=CORRUPT"], "error: --input CORRUPT: OpenCV cannot open this video"),
    ("eval", ["--input=clip.mp4"], "error: --input is read by --mode=infer only, not --mode=eval"),
    ("train", ["--step=2"], "error: --step picks the checkpoint of --mode=eval or infer, not "),
])
def test_eval_or_infer_without_what_they_read_is_a_one_line_error(tmp_path, mode, extra, expected):
  corrupt = tmp_path / "clip.mp4"
  corrupt.write_bytes(b"\0" * 64)
  extra = [arg.replace("CORRUPT", str(corrupt)) for arg in extra]
  error = _one_line_error([f"--config={CONFIG}", f"--workdir={tmp_path / 'run'}", f"--mode={mode}",
                           *extra])
  expected = expected.replace("WORKDIR", str(tmp_path / "run"))
  assert expected.replace("CORRUPT", str(corrupt)) in error


def test_evaluating_an_empty_workdir_says_how_to_fill_it(tmp_path):
  error = _one_line_error([f"--config={CONFIG}", f"--workdir={tmp_path}", "--mode=eval"])
  assert error == (f"error: no checkpoint in {tmp_path}/checkpoints; train first (--mode=train) "
                   "or convert PyTorch weights into it (python -m vssjax.convert)\n")


@pytest.mark.parametrize("config, extra, expected", [
    (CONFIG, ["--config.data.batch_size=0"], "data.batch_size=0: a batch needs at least one"),
    (CONFIG, ["eval"], "unexpected arguments ['eval']: every setting is a --flag=value "),
    (CONFIG, ["--mode=bench", "--config.bench.dtypes=('fp16',)"], "bench.dtypes: ['fp16'] not"),
    ("configs/dcfm/synthetic_mitb0.py:quick,k=two", [], "config argument k='two': not a int"),
    ("configs/dcfm/synthetic_mitb0.py:quick,mode=X", [], "DCFM mode must be 'B' or 'P'"),
])
def test_a_bad_config_value_is_a_one_line_error_before_anything_runs(tmp_path, config, extra,
                                                                     expected):
  """Checked at set-up, in one line, and no workdir is made: the command line's own checks, the
  config file's arguments, and one of the run's (the others, and that they come before
  training: tests/train/test_loop.py)."""
  error = _one_line_error([f"--config={config}", f"--workdir={tmp_path / 'run'}", *extra])
  assert expected in error
  assert not (tmp_path / "run").exists()


def test_a_missing_init_checkpoint_is_said_with_the_setting_that_names_it(tmp_path,
                                                                            synthetic_data_dir):
  result = subprocess.run(
      _cli(tmp_path / "run", synthetic_data_dir, "--config.init.torch_checkpoint=/nowhere/m.pth"),
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1 and result.stderr.splitlines() == [
      "error: /nowhere/m.pth: no such file or directory",
      "(the checkpoint of init.torch_checkpoint='/nowhere/m.pth')"], result.stderr


def test_bad_data_is_a_one_line_error_naming_the_file(tmp_path):
  """A `DataError` (the dataset's copy, not the code, is wrong) ends the run with its message."""
  missing = tmp_path / "vtest_pseudo"
  error = _one_line_error(["--config=configs/segformer/vtest_pseudo_mitb0.py:root=" + str(missing),
                           f"--workdir={tmp_path / 'run'}", "--config.data.backend=files"])
  assert error.startswith(f"error: {missing / 'train'}: missing")


def test_distributed_on_without_a_cluster_names_the_variables_to_set(tmp_path):
  cluster = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_", "OMPI_",
             "TPU_")
  env = {k: v for k, v in os.environ.items() if not k.startswith(cluster)}
  error = _one_line_error([f"--config={CONFIG}", f"--workdir={tmp_path}", "--distributed=on"], env)
  assert "--distributed=on: JAX found no cluster to join" in error
  assert "JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID" in error


def test_compilation_cache_defaults_to_the_flag_unless_the_environment_chose(tmp_path):
  """The CLI's persistent compilation cache: the flag's directory (user-expanded) when
  JAX_COMPILATION_CACHE_DIR is unset, the environment's otherwise, none for ''."""
  import jax  # pylint: disable=g-import-not-at-top
  from vssjax import main  # pylint: disable=g-import-not-at-top

  chosen = jax.config.jax_compilation_cache_dir
  assert chosen  # the test session's, from JAX_COMPILATION_CACHE_DIR (conftest)
  try:
    main.use_compilation_cache(str(tmp_path / "flag"))
    assert jax.config.jax_compilation_cache_dir == chosen
    jax.config.update("jax_compilation_cache_dir", None)
    main.use_compilation_cache("")
    assert jax.config.jax_compilation_cache_dir is None
    main.use_compilation_cache("~/some/cache")
    assert jax.config.jax_compilation_cache_dir == str(
        pathlib.Path.home() / "some/cache" / f"jax-{jax.__version__}")
  finally:
    jax.config.update("jax_compilation_cache_dir", chosen)


def test_a_run_out_of_device_memory_ends_with_one_line(tmp_path):
  result = _run_raising(tmp_path, "train", "make_train_loader", "__import__('jax').errors."
                        "JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 9 bytes.')")
  assert result.returncode == 1
  assert result.stderr.startswith("error: --mode=train ran out of device memory "
                                  "(RESOURCE_EXHAUSTED: Out of memory allocating 9 bytes.); lower "
                                  "--config.data.batch_size"), result.stderr
  assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_resource_exhausted_that_is_not_memory_keeps_its_traceback():
  """Only XLA running out of device memory is the settings' fault: another exhausted resource
  (or an error that merely mentions memory) is not told to lower the batch size."""
  from vssjax import main  # pylint: disable=g-import-not-at-top  (its flags: this test only)

  for message in ("RESOURCE_EXHAUSTED: too many open files", "INTERNAL: memory mapping failed"):
    with pytest.raises(jax.errors.JaxRuntimeError, match=message):
      with main.out_of_memory_in_one_line("train"):
        raise jax.errors.JaxRuntimeError(message)


def test_running_out_of_device_memory_is_a_one_line_error_naming_what_to_lower():
  """XLA's out-of-memory error (XLA:CPU's words; XLA:GPU's say "Out of memory while trying to
  allocate") becomes the one-line error with the settings to lower; another runtime error keeps
  its traceback."""
  import jax  # pylint: disable=g-import-not-at-top
  from vssjax import main  # pylint: disable=g-import-not-at-top

  oom = jax.errors.JaxRuntimeError(
      "RESOURCE_EXHAUSTED: Out of memory allocating 44483521984 bytes.\nin program jit_step")
  with pytest.raises(SetupError) as info:
    with main.out_of_memory_in_one_line("bench"):
      raise oom
  assert str(info.value).startswith(
      "--mode=bench ran out of device memory (RESOURCE_EXHAUSTED: Out of memory allocating "
      "44483521984 bytes.); lower --config.bench.batch_sizes")
  assert "--config.bench.train_step=False" in str(info.value) and "jit_step" not in str(info.value)
  assert info.value.__cause__ is oom
  for mode, setting in (("train", "--config.data.train_transform.crop_size"),
                        ("train", "--config.model.remat=nothing_saveable"),
                        ("eval", "--config.data.eval_transform.scale"),
                        ("infer", "--config.data.eval_transform.slide_crop")):
    with pytest.raises(SetupError, match=f"^--mode={mode} ran out of device memory.*{setting}"):
      with main.out_of_memory_in_one_line(mode):
        raise oom
  other = jax.errors.JaxRuntimeError("INTERNAL: cuDNN failed to initialize")
  with pytest.raises(jax.errors.JaxRuntimeError, match="cuDNN"):
    with main.out_of_memory_in_one_line("train"):
      raise other
