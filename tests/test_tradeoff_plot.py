"""The accuracy-vs-speed plot: reads results.json files and places faster/better runs right/up."""

import json

import pytest
from PIL import Image, ImageDraw

from vssjax import tradeoff_plot
from vssjax.errors import SetupError

NAN = float("nan")


def _results(tmp_path, name, fps, miou):
  path = tmp_path / f"{name}.json"
  path.write_text(json.dumps({"frames_per_s": fps, "mIoU": miou}))
  return str(path)


def test_points_are_placed_by_speed_and_accuracy(tmp_path):
  points = tradeoff_plot.read_points(
      [f"{label}={_results(tmp_path, str(i), fps, miou)}" for i, (label, fps, miou) in enumerate(
          [("SegFormer", 100.0, 0.50), ("DCFM K=1", 40.0, 0.52), ("DCFM K=6", 160.0, 0.47)])],
      "mIoU")
  assert points[0] == ("SegFormer", 100.0, 50.0)  # results.json stores fractions; plotted in %
  out = tmp_path / "plot.png"
  where = tradeoff_plot.plot(points, str(out))
  assert Image.open(out).size == (900, 560)
  assert where["DCFM K=1"][0] < where["SegFormer"][0] < where["DCFM K=6"][0]  # faster: right
  assert where["DCFM K=1"][1] < where["SegFormer"][1] < where["DCFM K=6"][1]  # better: up


def test_runs_of_other_data_are_said_not_to_rank(tmp_path, capsys):
  """As `vssjax.eval.compare` sets them apart: a synthetic run's point beside a Cityscapes run's
  was drawn without a word."""
  runs = []
  for name, source in (("a", "synthetic"), ("b", "cityscapes")):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"frames_per_s": 1.0, "mIoU": 0.5, "data_source": source,
                                "split": "val"}))
    runs.append(f"{name.upper()}={path}")
  assert len(tradeoff_plot.read_points(runs, "mIoU")) == 2
  assert capsys.readouterr().out == ("note: these runs differ in data (A: synthetic val, B: "
                                     "cityscapes val): their points do not rank\n")
  tradeoff_plot.read_points([runs[0], runs[0].replace("A=", "A2=")], "mIoU")
  assert not capsys.readouterr().out


def test_the_accuracy_axis_starts_no_lower_than_zero():
  assert tradeoff_plot.accuracy_ticks([0.4, 3.5])[0] == 0.0
  assert tradeoff_plot.accuracy_ticks([44.8, 51.0])[0] == 42.0  # a point of margin below


def test_what_cannot_be_plotted_is_named(tmp_path):
  """A user's mistake: one `SetupError` line naming the spec or file, not a traceback."""
  # A results.json of an evaluation without TC: said so, not doubted to be one.
  with pytest.raises(SetupError, match=r"y\.json has no 'TC': its evaluation did not score it "
                     r"\(it has frames_per_s, mIoU\)"):
    tradeoff_plot.read_points([f"x={_results(tmp_path, 'y', 1.0, 2.0)}"], "TC")
  (tmp_path / "z.json").write_text('{"mIoU": 0.5}')
  with pytest.raises(SetupError, match=r"z\.json has no 'frames_per_s': is it a results\.json\?"):
    tradeoff_plot.read_points([f"x={tmp_path / 'z.json'}"], "mIoU")
  with pytest.raises(SetupError, match="expected LABEL=PATH"):
    tradeoff_plot.read_points([str(tmp_path / "y.json")], "mIoU")
  with pytest.raises(SetupError, match=r"x: cannot read .*missing\.json as a results\.json"):
    tradeoff_plot.read_points([f"x={tmp_path / 'missing.json'}"], "mIoU")
  # A metric the evaluation could not compute (mVC of videos too short: NaN) is no point.
  short = tmp_path / "short.json"
  short.write_text(json.dumps({"frames_per_s": 1.0, "mIoU": 0.5, "mVC_8": None, "VEC_8": NAN}))
  with pytest.raises(SetupError, match=r"mVC_8 None at 1\.0 frames/s cannot be plotted"):
    tradeoff_plot.read_points([f"x={short}"], "mVC_8")
  with pytest.raises(SetupError, match=r"VEC_8 nan at 1\.0 frames/s"):  # results.json before null
    tradeoff_plot.read_points([f"x={short}"], "VEC_8")


def test_labels_of_close_points_do_not_overlap():
  draw = ImageDraw.Draw(Image.new("RGB", (200, 200), "white"))
  taken = []
  first = tradeoff_plot._label_spot(draw, "DCFM K=1", 100, 100, taken)
  second = tradeoff_plot._label_spot(draw, "DCFM K=2", 104, 99, taken)  # 6 frames/s apart
  assert first == (108, 86)  # up-right of its point when the space is free
  assert not tradeoff_plot._overlaps(*taken)
  assert second[1] > first[1]  # moved down, below the first label


def test_labels_clear_the_other_points():
  """ETC's baseline and distillation runs: 11 frames/s and 0.25 mIoU apart, so the baseline's
  label, up-right of its point, covered the distillation's dot. Labels keep the points' order."""
  draw = ImageDraw.Draw(Image.new("RGB", (200, 200), "white"))
  positions = {"ETC baseline": (100, 100), "ETC +distill": (112, 95)}
  spots = tradeoff_plot._label_spots(draw, positions)
  assert spots["ETC baseline"] != (108, 86)  # its free-space spot covers the other dot
  assert spots["ETC +distill"][1] < spots["ETC baseline"][1]  # the higher point's label is higher
  for label, spot in spots.items():
    box = draw.textbbox(spot, label)
    assert not any(tradeoff_plot._overlaps(box, tradeoff_plot._dot_box(*point))
                   for point in positions.values())


def test_every_percent_metric_is_plotted_in_percent_like_miou(tmp_path):
  """`--metric=TC` reads a fraction like mIoU does: a TC of 0.8 is drawn at 80 %, not at 0.8."""
  path = tmp_path / "tc.json"
  path.write_text(json.dumps({"frames_per_s": 10.0, "mIoU": 0.5, "TC": 0.8}))
  assert tradeoff_plot.read_points([f"K=1={path}"], "TC") == [("K=1", 10.0, 80.0)]
