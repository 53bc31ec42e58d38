"""The host-side benchmark runs the real evaluator against its simulated device."""
import logging
import subprocess
import sys

import pytest

from tests.conftest import REPO, load_config
from vssjax.eval import host_bench


def test_host_bench_reports_frames_per_s_no_faster_than_its_device(caplog):
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.backend = "files"
  config.data.synthetic.update(num_frames=20, num_val_videos=3)
  config.eval.overlay_video = False
  caplog.set_level(logging.INFO, logger="absl")
  rows = host_bench.run(config, [0.0, 20.0])
  # Its table is the output: no dict of each evaluation's (simulated) metrics logged beside it.
  assert "eval results" not in caplog.text
  assert [row["device_ms"] for row in rows] == [0.0, 20.0]
  assert all(row["num_frames"] == 60 and row["frames_per_s"] > 0 for row in rows)
  # Every timed frame waits 20 ms on the one simulated device, whatever the host does.
  assert rows[1]["frames_per_s"] <= 1000 / 20


def test_the_table_has_no_device_bound_for_no_device_time(capsys):
  """The command's default --device_ms=0,5,10 starts at 0 ms: its row says "-" for the bound,
  where 1000 / 0 would end the command after all its evaluations ran."""
  host_bench.print_table([dict(device_ms=0.0, frames_per_s=812.34, wall_s=1.5),
                          dict(device_ms=5.0, frames_per_s=180.0, wall_s=3.25)])
  assert capsys.readouterr().out.splitlines()[2:] == ["| 0 | 812.3 | - | 1.50 |",
                                                      "| 5 | 180.0 | 200.0 | 3.25 |"]


@pytest.mark.parametrize("args, said", [
    ([], "error: --config is required: the config whose evaluation's host side is timed"),
    (["--config=configs/segformer/synthetic_mitb0.py:quick", "--device_ms=-5"],
     "error: --device_ms=-5: one or more device times per frame, in ms, each 0 or more"),
    (["--config=configs/segformer/synthetic_mitb0.py:quick", "--device_ms=0,nan"],
     "error: --device_ms=0,nan: one or more device times per frame"),
])
def test_the_command_says_a_missing_config_or_a_negative_device_time_in_one_line(args, said):
  """No --config was an AttributeError's traceback; --device_ms=-5 printed -200 frames/s."""
  run = subprocess.run([sys.executable, "-m", "vssjax.eval.host_bench", *args], cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=False)
  assert run.returncode == 1, run.stderr[-2000:]
  assert run.stderr.strip().splitlines()[-1].startswith(said), run.stderr[-2000:]
