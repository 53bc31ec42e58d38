"""The training loader's throughput (`python -m data_pipelines.bench`): what it counts, and the
command's lines."""
import subprocess
import sys

import numpy as np

from data_pipelines import bench, clip_sampling
from tests.conftest import REPO
from tests.data_pipelines import helpers


def test_measure_counts_the_clips_and_frames_of_the_timed_batches_only(tmp_path):
  cfg = helpers.data_config(tmp_path)  # batches of 4 clips
  sampler = clip_sampling.OffsetClipSampler((-2, -1, 0))
  result = bench.measure(cfg, sampler, num_workers=0, batches=3, warmup=2)
  assert result["seconds"] > 0
  np.testing.assert_allclose(result["clips_per_s"] * result["seconds"], 3 * 4)
  np.testing.assert_allclose(result["frames_per_s"] * result["seconds"], 3 * 4 * 3)
  assert cfg.num_workers == 0 and result.keys() == {"seconds", "clips_per_s", "frames_per_s"}


def test_the_command_prints_the_loader_and_a_line_per_worker_count(synthetic_data_dir):
  """... and leaves no worker's batch in shared memory at exit (Python's "leaked shared_memory
  objects" warning, which keeping the last timed batch past its iterator gave)."""
  run = subprocess.run(
      [sys.executable, "-m", "data_pipelines.bench",
       "--config=configs/segformer/synthetic_mitb0.py:quick",
       f"--config.data.data_dir={synthetic_data_dir}", "--batches=2", "--workers=0,2"],
      cwd=REPO, capture_output=True, text=True, check=True)
  assert "leaked" not in run.stderr, run.stderr
  # (Its lines, not those of the synthetic set's indexing, the first time it is read.)
  lines = [line for line in run.stdout.splitlines() if line.startswith("bench: ")]
  assert lines[0] == ("bench: source synthetic (arrayrecord), batch 4 clips x 1 frames at 48x48, "
                      "2 batches after 2 warm-up")
  assert [line.split(":")[1] for line in lines[1:]] == [" workers 0", " workers 2"]
  assert all(line.endswith(" s)") and " clips/s " in line for line in lines[1:])
