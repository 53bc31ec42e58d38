r"""Accuracy vs speed scatter plot (PNG) of evaluated runs, like the papers' trade-off figures.

  python -m vssjax.tradeoff_plot --out=docs/img/tradeoff_synthetic.png \
      "SegFormer=/tmp/cmp/segformer/results.json" "DCFM K=2=/tmp/cmp/dcfm_k2.json" ...

Each point is one `results.json` written by `--mode=eval` (or training's final evaluation): its
`mIoU` (or `--metric`) against the evaluator's measured `frames_per_s` (wall time of reading,
predicting and scoring the frames, mVC/VEC/TC included, the first video excluded: README,
Metrics). Drawn with Pillow, so plotting needs no extra dependency. Points of the same
label prefix before a space (e.g. "DCFM K=1", "DCFM K=2") share a colour and are joined by a line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from absl import app, flags
from PIL import Image, ImageDraw

from vssjax.command_line import user_errors_in_one_line
from vssjax.errors import SetupError
from vssjax.eval.report import differing_settings, is_percent, read_labelled_runs

_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
            (140, 86, 75), (227, 119, 194), (23, 190, 207))
_SIZE = (900, 560)
_MARGIN = (80, 40, 30, 60)  # left, top, right, bottom
_DOT = 5  # radius of a point's dot, pixels


def read_points(specs: Sequence[str], metric: str) -> list[tuple[str, float, float]]:
  """'label=path/results.json' specs -> their (label, frames/s, metric); a spec, file or value
  that cannot be plotted is a `SetupError` naming it. Runs of other data or metric conventions
  (`vssjax.eval.compare` sets them apart, unranked) are said: one plot drew them unawares."""
  runs = read_labelled_runs(specs, required=(metric,))
  for title, settings in differing_settings(runs):
    print(f"note: these runs differ in {title} ("
          + ", ".join(f"{label}: {setting}" for (label, _), setting in zip(runs, settings))
          + "): their points do not rank", flush=True)
  return [_point(label, results, metric) for label, results in runs]


def _point(label: str, results: dict, metric: str) -> tuple[str, float, float]:
  scale = 100.0 if is_percent(metric) else 1.0  # stored as fractions
  fps, value = results["frames_per_s"], results[metric]
  numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (fps, value))
  if not numbers or not math.isfinite(fps * value):  # null: n/a (older results.json: NaN)
    raise SetupError(f"{label}: {metric} {value} at {fps} frames/s cannot be plotted (n/a: the "
                     f"evaluation could not compute it)")
  return label, float(fps), scale * float(value)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
  step = 10 ** math.floor(math.log10(max(high - low, 1e-9) / count))
  for multiple in (1, 2, 5, 10):
    if (high - low) / (step * multiple) <= count:
      step *= multiple
      break
  first = math.floor(low / step) * step
  return [first + i * step for i in range(int((high - first) / step) + 2)]


def accuracy_ticks(values: Sequence[float]) -> list[float]:
  """The accuracy axis's ticks (%): a point of margin each way, none below 0 (scores near 0 drew
  an axis from -2 %)."""
  return _nice_ticks(max(min(values) - 1.0, 0.0), max(values) + 1.0)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_spot(draw: ImageDraw.ImageDraw, label: str, px: int, py: int,
                taken: list[tuple[int, int, int, int]]) -> tuple[int, int]:
  """Where `label` goes next to its point (px, py): up-right, or moved down a line at a time
  until it clears what `taken` holds, the labels already drawn and every point's dot (close
  points, e.g. DCFM at K=1 and K=2)."""
  y = py - 14
  while True:
    box = draw.textbbox((px + 8, y), label)
    if not any(_overlaps(box, other) for other in taken) or y > py + 60:
      taken.append(box)
      return px + 8, y
    y = max(y + 1, max(o[3] for o in taken if _overlaps(box, o)) + 2)


def _dot_box(px: int, py: int) -> tuple[int, int, int, int]:
  return px - _DOT, py - _DOT, px + _DOT, py + _DOT


def _label_spots(draw: ImageDraw.ImageDraw, positions: dict[str, tuple[int, int]]
                 ) -> dict[str, tuple[int, int]]:
  """Each label's spot (`_label_spot`), clear of every point's dot and of the labels placed before
  it, placed from the top point down: labels pushed down by a close point's stay in the points'
  vertical order."""
  taken = [_dot_box(px, py) for px, py in positions.values()]
  top_down = sorted(positions.items(), key=lambda item: (item[1][1], item[1][0]))
  return {label: _label_spot(draw, label, px, py, taken) for label, (px, py) in top_down}


def plot(points: Sequence[tuple[str, float, float]], path: str, *, metric: str = "mIoU",
         title: str = "") -> dict[str, tuple[int, int]]:
  """Writes the PNG; returns each label's pixel position (for tests and captions)."""
  if not points:
    raise ValueError("nothing to plot")
  xs, ys = [p[1] for p in points], [p[2] for p in points]
  x_ticks = _nice_ticks(0.0, max(xs) * 1.1)
  y_ticks = accuracy_ticks(ys)
  left, top, right, bottom = _MARGIN
  width, height = _SIZE
  to_px = lambda x, y: (
      round(left + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (width - left - right)),
      round(height - bottom - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])
            * (height - top - bottom)))
  image = Image.new("RGB", _SIZE, "white")
  draw = ImageDraw.Draw(image)
  draw.rectangle((left, top, width - right, height - bottom), outline="black")
  for x in x_ticks:
    px, _ = to_px(x, y_ticks[0])
    draw.line((px, height - bottom, px, height - bottom + 5), fill="black")
    draw.text((px - 10, height - bottom + 8), f"{x:g}", fill="black")
  for y in y_ticks:
    _, py = to_px(x_ticks[0], y)
    draw.line((left - 5, py, left, py), fill="black")
    draw.text((left - 45, py - 6), f"{y:g}", fill="black")
  draw.text((width // 2 - 60, height - 25), "frames/s (measured)", fill="black")
  draw.text((10, top - 30), f"{metric} (%)", fill="black")
  if title:
    draw.text((width // 2 - 4 * len(title), 10), title, fill="black")
  families = list(dict.fromkeys(label.split(" ")[0] for label, _, _ in points))
  positions = {label: to_px(x, y) for label, x, y in points}
  spots = _label_spots(draw, positions)
  for label, _, _ in points:
    family = label.split(" ")[0]
    colour = _COLOURS[families.index(family) % len(_COLOURS)]
    px, py = positions[label]
    same = [to_px(px_, py_) for l, px_, py_ in points if l.split(" ")[0] == family]
    if len(same) > 1:
      draw.line(sorted(same), fill=colour, width=1)
    draw.ellipse(_dot_box(px, py), fill=colour)
    draw.text(spots[label], label, fill=colour)
  try:
    image.save(path)
  except (OSError, ValueError) as error:  # ValueError: a suffix Pillow writes no image format for
    raise SetupError(f"{path}: cannot write the plot: {error}") from None
  return positions


@user_errors_in_one_line
def main(argv):
  out, metric = flags.FLAGS.out, flags.FLAGS.metric
  if not out or len(argv) < 2:
    raise app.UsageError("usage: python -m vssjax.tradeoff_plot --out=PNG LABEL=results.json ...")
  points = read_points(argv[1:], metric)
  plot(points, out, metric=metric, title=flags.FLAGS.title)
  print(f"wrote {out} ({len(points)} point{'s' if len(points) > 1 else ''})")


if __name__ == "__main__":
  # Defined here, not at import: other CLIs define flags of the same names in the same process.
  flags.DEFINE_string("out", None, "PNG file to write.")
  flags.DEFINE_string("metric", "mIoU", "Accuracy key of results.json (y axis).")
  flags.DEFINE_string("title", "", "Plot title.")
  app.run(main)
