"""The command line as a user runs it: train, SIGTERM and resume, eval, infer, bad flags."""

import json
import pathlib
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

pytestmark = pytest.mark.slow
CONFIG = "configs/segformer/synthetic_mitb0.py:quick"


def _cli(workdir, data_dir, *args):
  return [sys.executable, "-m", "vssjax.main", f"--config={CONFIG}", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *args]


def _run(cmd):
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout


def test_sigterm_checkpoints_then_resume_eval_and_infer(tmp_path, synthetic_data_dir,
                                                        real_video_clip):
  workdir = tmp_path / "run"
  train = _cli(workdir, synthetic_data_dir, "--mode=train", "--config.train.steps=100000",
               "--config.train.checkpoint_every=100000")
  proc = subprocess.Popen(train, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:  # wait until training is under way, then ask it to stop
    lines.append(line)
    if line.startswith("train step 3/"):
      proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=300) == 0, "".join(lines)
  stopped = [l for l in lines if l.startswith("stopped at step")]
  assert stopped, "".join(lines)
  step = int(stopped[0].split()[3].rstrip(";"))
  assert (workdir / "checkpoints" / str(step) / "data_iter").is_dir()

  out = _run(_cli(workdir, synthetic_data_dir, "--mode=train", f"--config.train.steps={step + 1}"))
  assert f"resumed from {workdir / 'checkpoints'} at step {step}" in out
  assert "| mIoU (%) |" in out  # the results table is printed at the end
  steps = [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps[-1] == step + 1

  out = _run(_cli(workdir, synthetic_data_dir, "--mode=eval"))
  assert f"evaluating checkpoint of step {step + 1}" in out
  assert json.loads((workdir / "results.json").read_text())["step"] == step + 1

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
  assert capture.read()[0]

  # Real footage (vtest.avi, 768x576): one palette PNG per frame at the video's size.
  out = _run(_cli(workdir, synthetic_data_dir, "--mode=infer", f"--input={real_video_clip}"))
  labels = sorted((workdir / "infer" / "vtest30" / "labels").iterdir())
  assert len(labels) == 30 and Image.open(labels[-1]).size == (768, 576)
  overlay = cv2.VideoCapture(str(workdir / "infer" / "vtest30" / "overlay.mp4"))
  assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == 30


def test_misspelt_override_is_an_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "vssjax.main", f"--config={CONFIG}", f"--workdir={tmp_path}",
       "--config.trian.steps=3"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "trian" in result.stderr


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
