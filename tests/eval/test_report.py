"""Results tables: percent formatting, published numbers and their differences."""

import json
import re

import numpy as np
import pytest

from tests.conftest import load_config
from vssjax import configs_lib
from vssjax.errors import SetupError
from vssjax.eval import report


def test_markdown_with_published_numbers(tmp_path):
  published = configs_lib.base_config().published
  published.source = "paper, Table 1"
  published.metrics = {"mIoU": 40.0}
  results = {"step": 5, "mIoU": 0.4123, "wIoU": 0.5, "pixel_acc": 0.9, "mVC_8": float("nan"),
             "frames_per_s": 12.345}
  json_path, md_path, table = report.write_results(tmp_path, results, published)
  assert "| mIoU (%) | 41.23 | 40.00 | +1.23 |" in table
  assert "| wIoU (%) | 50.00 | – | – |" in table
  assert "| mVC_8 (%) | n/a |" in table
  assert "| frames_per_s | 12.35 |" in table
  assert "paper, Table 1" in md_path.read_text()
  assert json.loads(json_path.read_text())["mIoU"] == 0.4123


def test_a_published_metric_measured_as_na_has_no_difference():
  # VSPW's mVC of videos of <= 16 frames is NaN (skipped): the difference was printed '+nan'.
  published = configs_lib.base_config().published
  published.metrics = {"mVC_8": 86.0, "mVC_16": 81.2}
  table = report.markdown_table({"mVC_8": float("nan"), "mVC_16": None, "frames_per_s": 1.0},
                                published)
  assert "| mVC_8 (%) | n/a | 86.00 | n/a |" in table
  assert "| mVC_16 (%) | n/a | 81.20 | n/a |" in table
  assert "nan" not in table

def test_results_json_is_strict_json_with_null_for_na(tmp_path):
  """An n/a metric (NaN) is JSON null: Python's bare NaN is refused by strict parsers."""
  results = {"step": 1, "mIoU": 0.5, "mVC_8": float("nan"), "TC": np.float32("nan"),
             "per_class_iou": [0.5, float("nan")]}
  json_path, _, _ = report.write_results(tmp_path, results)

  def refuse(constant):
    raise ValueError(f"non-standard JSON constant {constant}")

  written = json.loads(json_path.read_text(), parse_constant=refuse)
  assert written == {"step": 1, "mIoU": 0.5, "mVC_8": None, "TC": None,
                     "per_class_iou": [0.5, None]}


def test_markdown_without_published_numbers():
  table = report.markdown_table({"mIoU": 0.5, "frames_per_s": 1.0},
                                configs_lib.base_config().published)
  assert table.splitlines()[0] == "| metric | measured |"


def test_markdown_names_the_conventions_of_mIoU_and_mVC():
  """DCFM's all-classes mIoU and VSPW's differ on the same predictions: the table says which."""
  results = {"mIoU": 0.5, "mIoU_convention": "all_classes", "mVC_8": 0.9,
             "mVC_convention": "dcfm", "frames_per_s": 1.0}
  table = report.markdown_table(results, configs_lib.base_config().published)
  assert "mIoU: `all_classes` convention, mean over all classes" in table
  assert "mVC: `dcfm` convention, windows without ground-truth-stable pixels count 0" in table
  results.update(mIoU_convention="vspw", mVC_convention="vspw")
  table = report.markdown_table(results, configs_lib.base_config().published)
  assert "mIoU: `vspw` convention, mean over the classes present in the ground truth" in table
  assert "videos of <= 16 frames skipped" in table


def test_markdown_says_how_many_frame_pairs_tc_rests_on_and_why_it_is_na():
  published = configs_lib.base_config().published
  table = report.markdown_table({"TC": 0.61, "TC_pairs": 3348, "frames_per_s": 1.0}, published)
  assert "| TC (%) | 61.00 |" in table and "TC: over 3348 pairs of consecutive frames." in table
  table = report.markdown_table({"TC": float("nan"), "TC_pairs": 0, "frames_per_s": 1.0},
                                published)
  assert "| TC (%) | n/a |" in table
  assert "TC: n/a, the scored videos hold no pair of consecutive frames" in table
  # No video scored at all (eval.tc_video_list's all beyond eval.max_videos): not one-frame ones.
  table = report.markdown_table({"TC": float("nan"), "TC_pairs": 0, "TC_videos": 0,
                                 "frames_per_s": 1.0}, published)
  assert "TC: n/a, no evaluated video is one eval.tc_video_list names" in table
  assert "one-frame" not in table
  table = report.markdown_table({"TC": float("nan"), "TC_pairs": 0, "TC_videos": 3,
                                 "frames_per_s": 1.0}, published)
  assert "TC: n/a, the scored videos hold no pair of consecutive frames (one-frame" in table


def test_markdown_says_why_the_label_metrics_of_an_unlabelled_split_are_na():
  published = configs_lib.base_config().published
  unlabelled = {"mIoU": float("nan"), "scored_pixels": 0, "frames_per_s": 1.0}
  assert "evaluated frames hold no labelled pixel" in report.markdown_table(unlabelled, published)
  labelled = {"mIoU": 0.5, "scored_pixels": 12, "frames_per_s": 1.0}
  assert "labelled pixel" not in report.markdown_table(labelled, published)


def test_each_evaluation_appends_its_scalars_to_the_history(tmp_path):
  """results.json holds the last evaluation; eval_history.jsonl one strict-JSON line per
  evaluation, without the per-class list."""
  for step, miou in ((2, 0.25), (4, float("nan"))):
    report.append_history(tmp_path, {"step": step, "split": "val", "mIoU": miou,
                                     "per_class_iou": [0.5, None], "num_frames": np.int64(12)})
  lines = (tmp_path / "eval_history.jsonl").read_text().splitlines()
  assert [json.loads(line) for line in lines] == [
      {"step": 2, "split": "val", "mIoU": 0.25, "num_frames": 12},
      {"step": 4, "split": "val", "mIoU": None, "num_frames": 12}]


def test_results_md_lists_the_iou_of_every_class_by_name(tmp_path):
  results = {"step": 3, "mIoU": 0.5, "per_class_iou": [0.25, None, 0.75],
             "class_names": ["road", "sky", "car|truck"]}
  report.write_results(tmp_path, results)
  text = (tmp_path / "results.md").read_text()
  assert "## IoU per class\n\n| class | IoU (%) |\n|---|---|\n| road | 25.00 |\n| sky | n/a |\n"\
         "| car\\|truck | 75.00 |\n" in text
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["class_names"] == ["road", "sky", "car|truck"]


def test_results_md_names_the_data_it_scored(tmp_path):
  """A real dataset's config with `:quick` evaluates on the synthetic set: the page says so."""
  report.write_results(tmp_path, {"step": 2, "data_source": "synthetic", "split": "val",
                                  "mIoU": 0.5})
  assert (tmp_path / "results.md").read_text().startswith(
      "# Evaluation at step 2 (synthetic, val)\n")


def test_a_labelled_results_path_may_hold_an_equals_sign(tmp_path):
  """Run folders are often named after settings (`lr=1e-3/`): the split between label and path
  is the one that names a file, and a label may hold '=' too."""
  path = tmp_path / "lr=1e-3" / "results.json"
  path.parent.mkdir()
  path.write_text(json.dumps({"frames_per_s": 2.0}))
  assert report.read_labelled_results(f"A={path}") == ("A", {"frames_per_s": 2.0})
  assert report.read_labelled_results(f"K=2={path}")[0] == "K=2"


def test_a_label_given_twice_is_refused(tmp_path):
  """`compare A=a.json A=b.json` printed two columns headed A, and the plot two points."""
  for name in ("a", "b"):
    (tmp_path / f"{name}.json").write_text(json.dumps({"frames_per_s": 2.0}))
  runs = report.read_labelled_runs([f"A={tmp_path}/a.json", f"B={tmp_path}/b.json"])
  assert [label for label, _ in runs] == ["A", "B"]
  with pytest.raises(SetupError, match=rf"^the label 'A' names two runs \({tmp_path}/a\.json "
                                       rf"and {tmp_path}/b\.json\): give each its own$"):
    report.read_labelled_runs([f"A={tmp_path}/a.json", f"A={tmp_path}/b.json"])


@pytest.mark.parametrize("value, said", [("51.0", r"'51\.0'"), (True, "True")])
def test_a_results_json_whose_metric_is_not_a_number_is_named(tmp_path, value, said):
  """`compare` ended in a ValueError from its number format, the plot called the value n/a (a
  JSON `true`, a Python int, would be plotted as 100%)."""
  path = tmp_path / "results.json"
  path.write_text(json.dumps({"frames_per_s": 2.0, "mIoU": value}))
  with pytest.raises(SetupError, match=rf"results\.json: mIoU is {said}, not a number \(or null\)"):
    report.read_labelled_results(f"A={path}")


def _dcfm_vspw(arg=None):
  return load_config("configs/dcfm/vspw_mitb2.py", arg)


def test_published_numbers_follow_the_dcfm_mode_and_keyframe_interval():
  """Table II's rows are B mode, Table IX's P-mode row is K = 2 only."""
  published, _ = report.published_for(_dcfm_vspw())
  assert dict(published.metrics)["mIoU"] == 44.8 and "Table II" in published.source
  published, _ = report.published_for(_dcfm_vspw("mode=P"))
  assert dict(published.metrics) == {"mIoU": 44.5} and "Table IX (P mode)" in published.source
  assert report.published_for(_dcfm_vspw("mode=P,k=6")) == (None, "")


@pytest.mark.parametrize("path", ["configs/dcfm/cityscapes_mitb1.py",
                                    "configs/dcfm/camvid_r50.py"])
def test_every_dcfm_config_with_published_numbers_says_which_mode_and_k_they_are_for(path):
  config = load_config(path)
  assert report.published_for(config)[0] is not None
  config.model.common_dim = 64  # ResNet's 1x1 conv to the common feature
  assert report.published_for(config)[0] is None
  config = load_config(path)
  config.method.mode = "P"
  assert report.published_for(config)[0] is None


@pytest.mark.parametrize("field, value, why", [
    ("method.mode", "P", r"they are for method.mode='B', this run has 'P'\."),
    ("method.keyframe_interval", 6, r"they are for method.keyframe_interval=2, this run has 6\."),
    ("eval.max_videos", 3, r"this run evaluated the split's first 3 videos \(eval.max_videos\)\."),
    ("eval.max_videos", 1, r"this run evaluated the split's first 1 videos \(eval.max_videos\)\."),
])
def test_a_run_the_published_numbers_are_not_for_says_so_instead(tmp_path, field, value, why):
  """`--config.method.mode=P` on the B-mode config showed Table II's 44.8 as its published mIoU;
  a quick check of a few videos was set against the whole split's numbers."""
  config = _dcfm_vspw()
  section, name = field.split(".")
  config[section][name] = value
  published, not_compared = report.published_for(config)
  assert published is None
  assert re.fullmatch(r"Not compared with the published numbers \(DCFM paper .*Table II, VSPW "
                      r"val, K = 2\): " + why, not_compared), not_compared
  _, md_path, table = report.write_results(tmp_path, {"mIoU": 0.4, "frames_per_s": 1.0},
                                           published, not_compared)
  assert table.splitlines()[0] == "| metric | measured |" and table.endswith(not_compared)
  assert not_compared in md_path.read_text()


@pytest.mark.parametrize("path", [
    "configs/segformer/vspw_mitb2.py", "configs/segformer/cityscapes_mitb0.py",
    "configs/dcfm/vspw_mitb2.py", "configs/dcfm/camvid_r50.py", "configs/sdcpc/vspw_mitb5.py",
    "configs/etc/cityscapes_psp18_distill.py", "configs/etc/camvid_mobilenet.py"])
@pytest.mark.parametrize("field, value", [
    ("model.backbone", "b3"), ("model.decoder_dim", 768), ("data.num_classes", 150),
    ("model.backbone_overrides.depths", (1, 1, 1, 1))])
def test_another_network_than_the_config_files_is_not_compared_with_its_numbers(path, field,
                                                                                  value):
  """A MiT-B0 checkpoint converted with the B2 config and `--config.model.backbone=b0` (as the
  converter's size hint allows) was shown against B2's published row, 0.15 next to 43.90."""
  config = load_config(path)
  assert report.published_for(config)[0] is not None
  section, *middle, name = field.split(".")
  target = config[section]
  for part in middle:
    target = target[part]
  with config.unlocked():
    target[name] = value
  published, not_compared = report.published_for(config)
  assert published is None
  assert f"they are for {field}=" in not_compared and f"this run has {value!r}" in not_compared


@pytest.mark.parametrize("field, value", [
    ("data.eval_split", "train"), ("data.eval_transform.scale", (128, 64)),
    ("data.eval_transform.slide_crop", (512, 512)), ("data.source", "synthetic")])
def test_another_test_protocol_is_not_compared_with_the_published_numbers(field, value):
  """A Cityscapes run scored on its train split, or at a quarter of the test scale, was set
  against the val numbers."""
  config = load_config("configs/segformer/cityscapes_mitb0.py")
  assert report.published_for(config)[0] is not None
  section, *middle, name = field.split(".")
  target = config[section]
  for part in middle:
    target = target[part]
  target[name] = value
  published, not_compared = report.published_for(config)
  assert published is None and f"they are for {field}=" in not_compared, not_compared


def test_etc_tc_over_every_video_leaves_out_the_valsam_tc_only(tmp_path):
  """The published TC is over ETC's 108 valsam snippets; `eval.tc_video_list=` scores them all,
  which made the published mIoU (of every frame either way) disappear with it."""
  config = load_config("configs/etc/cityscapes_psp18_distill.py")
  config.eval.tc_video_list = ""
  published, not_compared = report.published_for(config)
  assert dict(published.metrics) == {"mIoU": 73.06}
  assert re.fullmatch(r"TC: not compared with the published number \(ETC .*\), it is for "
                      r"eval.tc_video_list='cityscapes_valsam.txt', this run has ''\.",
                      not_compared), not_compared
  _, _, table = report.write_results(tmp_path, {"mIoU": 0.7, "TC": 0.6, "frames_per_s": 1.0},
                                     published, not_compared)
  assert "| mIoU (%) | 70.00 | 73.06 | -3.06 |" in table and "| TC (%) | 60.00 | – | – |" in table
  assert table.endswith(not_compared)


def test_another_convention_leaves_out_the_numbers_it_scores():
  """DCFM's tables average the mIoU over all 124 classes and count empty mVC windows 0: a run
  scored by VSPW's rules (`eval.miou_convention=vspw`) set its mIoU against theirs."""
  config = _dcfm_vspw()
  config.eval.miou_convention = "vspw"
  published, not_compared = report.published_for(config)
  assert dict(published.metrics) == {"wIoU": 64.2, "mVC_8": 88.1, "mVC_16": 83.5}
  assert not_compared.startswith("mIoU: not compared with the published number (DCFM paper")
  assert not_compared.endswith("it is for eval.miou_convention='all_classes', this run has 'vspw'.")
  config.eval.vc_convention = "vspw"
  published, not_compared = report.published_for(config)
  assert dict(published.metrics) == {"wIoU": 64.2}
  assert "mVC_8, mVC_16: not compared with the published numbers (DCFM" in not_compared
  assert "they are for eval.vc_convention='dcfm', this run has 'vspw'." in not_compared
  config.published.metrics = {"mIoU": 44.8}
  published, not_compared = report.published_for(config)
  assert published is None and not_compared.endswith(
      "they are for eval.miou_convention='all_classes', this run has 'vspw'.")


def test_consistency_of_other_windows_is_in_the_tables():
  """`eval.windows=(4, 32)` scored mVC_4 and mVC_32, which the tables (a fixed list of the 8- and
  16-frame names) left out without a word."""
  results = {"mIoU": 0.5, "mVC_32": 0.7, "mVC_4": 0.9, "VEC_4": 0.4, "TC": 0.6,
             "frames_per_s": 3.0}
  table = report.markdown_table(results)
  assert [line.split(" | ")[0] for line in table.splitlines()[2:7]] == [
      "| mIoU (%)", "| mVC_4 (%)", "| mVC_32 (%)", "| VEC_4 (%)", "| TC (%)"]
  assert "| mVC_4 (%) | 90.00 |" in table
  compared = report.comparison_table([("A", results), ("B", {**results, "mVC_4": 0.8})])
  assert "| mVC_4 (%) | **90.00** | 80.00 |" in compared


def test_a_results_json_without_frames_per_s_is_refused_naming_it(tmp_path):
  """A file that is not an eval's results.json (no frames/s) would be compared as if it were,
  its frames/s row a bare n/a instead of an error naming what is missing."""
  path = tmp_path / "results.json"
  path.write_text(json.dumps({"mIoU": 0.5}))
  with pytest.raises(SetupError, match=r"has no 'frames_per_s'"):
    report.read_labelled_results(f"A={path}")


def test_an_infinite_metric_is_written_as_null_not_refused(tmp_path):
  """An inf (a rate over zero seconds, say) is n/a as NaN is: without it results.json and the
  history line would not be written at all (strict JSON has no Infinity)."""
  results = {"step": 1, "mIoU": 0.5, "frames_per_s": float("inf"), "TC": np.float32("-inf")}
  json_path, _, _ = report.write_results(tmp_path, results)
  assert json.loads(json_path.read_text()) == {"step": 1, "mIoU": 0.5, "frames_per_s": None,
                                               "TC": None}
  history = report.append_history(tmp_path, results)
  assert json.loads(history.read_text()) == {"step": 1, "mIoU": 0.5, "frames_per_s": None,
                                             "TC": None}


def test_tc_over_a_single_pair_is_reported_not_called_na():
  """A two-frame video gives TC one pair: the note must count it, not claim there is none."""
  table = report.markdown_table({"TC": 0.75, "TC_pairs": 1, "frames_per_s": 1.0},
                                configs_lib.base_config().published)
  assert "TC: over 1 pairs of consecutive frames." in table
  assert "TC: n/a" not in table


def test_a_metric_already_none_stays_in_the_history_as_null(tmp_path):
  """A metric the evaluator left None (n/a) would vanish from eval_history.jsonl, its column
  missing from that evaluation's line rather than null."""
  path = report.append_history(tmp_path, {"step": 3, "mIoU": 0.5, "mVC_8": None})
  assert json.loads(path.read_text()) == {"step": 3, "mIoU": 0.5, "mVC_8": None}
