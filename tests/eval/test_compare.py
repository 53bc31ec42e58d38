"""`python -m vssjax.eval.compare`: several results.json files as one Markdown table."""
import json
import subprocess
import sys

from tests.conftest import REPO
from vssjax.eval import report


def test_runs_side_by_side_with_each_rows_best_in_bold():
  segformer = {"mIoU": 0.5103, "wIoU": 0.7756, "mVC_8": None, "frames_per_s": 140.45}
  dcfm = {"mIoU": 0.4560, "wIoU": 0.77564, "mVC_8": 0.8308, "TC": 0.6, "frames_per_s": 370.4}
  table = report.comparison_table([("SegFormer", segformer), ("DCFM K=1 | B", dcfm)])
  assert table.splitlines() == [
      r"| metric | SegFormer | DCFM K=1 \| B |",
      "|---|---|---|",
      "| mIoU (%) | **51.03** | 45.60 |",
      "| wIoU (%) | **77.56** | **77.56** |",  # equal as shown: both
      "| mVC_8 (%) | n/a | 83.08 |",  # n/a is no value: one value, compared with none
      "| TC (%) | n/a | 60.00 |",  # a row for any metric one of the runs has
      "| frames_per_s | 140.45 | **370.40** |",
  ]
  # One run: nothing to compare, nothing in bold.
  assert "**" not in report.comparison_table([("SegFormer", segformer)])


def test_runs_of_other_data_or_conventions_are_said_so_and_not_ranked():
  """A DCFM run's all-classes mIoU, a SegFormer run's VSPW mIoU and a synthetic-set run were set
  side by side with a best value in bold, though results.json says what each is of."""
  vspw = dict(data_source="vspw", split="val", mIoU_convention="all_classes",
              mVC_convention="dcfm", mIoU=0.45, frames_per_s=10.0)
  same_data = dict(vspw, mIoU_convention="vspw", mVC_convention="vspw", mIoU=0.47)
  synthetic = dict(vspw, data_source="synthetic", mIoU=0.51)
  table = report.comparison_table([("DCFM", vspw), ("SegFormer", same_data),
                                   ("Synthetic", synthetic)])
  assert table.splitlines()[2:6] == [
      "| data | vspw val | vspw val | synthetic val |",
      "| mIoU convention | all_classes | vspw | all_classes |",
      "| mVC convention | dcfm | vspw | dcfm |",
      "| mIoU (%) | 45.00 | 47.00 | 51.00 |"]
  assert "**" not in table
  # The same data and conventions: no such row, and the best in bold.
  table = report.comparison_table([("DCFM", vspw), ("DCFM again", dict(vspw, mIoU=0.46))])
  assert table.splitlines()[2] == "| mIoU (%) | 45.00 | **46.00** |"


def test_runs_on_different_generated_sets_are_said_so_and_not_ranked():
  """Three methods' `:quick` configs evaluate synthetic sets of 6, 8 and 12 frames a video: their
  data row read 'synthetic val' alike, and the best values were marked."""
  knobs = dict(num_val_videos=2, num_frames=6, height=64, width=64)
  runs = [("SegFormer", dict(data_source="synthetic", split="val", data_settings=knobs,
                             mIoU=0.5, frames_per_s=9.0)),
          ("DTERN", dict(data_source="synthetic", split="val",
                         data_settings=dict(knobs, num_frames=12), mIoU=0.6, frames_per_s=4.0))]
  table = report.comparison_table(runs)
  assert table.splitlines()[2] == (
      "| data | synthetic val num_frames=6 | synthetic val num_frames=12 |")
  assert "**" not in table
  same = report.comparison_table([runs[0], ("again", dict(runs[0][1], mIoU=0.55))])
  assert "| data |" not in same and "| **55.00** |" in same
  # A real source's settings are {} (its root left out): the same data as an older results.json
  # without the field, not a difference.
  vspw = dict(data_source="vspw", split="val", mIoU=0.4, frames_per_s=1.0)
  assert report.differing_settings([("new", dict(vspw, data_settings={})), ("old", vspw)]) == []


def test_the_command_prints_and_writes_the_table(tmp_path):
  for name, miou in (("a", 0.4), ("b", 0.5)):
    (tmp_path / f"{name}.json").write_text(json.dumps({"mIoU": miou, "frames_per_s": 10.0}))
  out = tmp_path / "table.md"
  result = subprocess.run(
      [sys.executable, "-m", "vssjax.eval.compare", f"A=B={tmp_path / 'a.json'}",
       f"C={tmp_path / 'b.json'}", f"--out={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
  assert "| metric | A=B | C |" in result.stdout  # a label may hold '='; the path follows the last
  assert "| mIoU (%) | 40.00 | **50.00** |" in result.stdout
  assert out.read_text() == result.stdout
