"""Results tables: JSON for machines, Markdown for people, published numbers side by side."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from etils import epath
from ml_collections.config_flags import config_path

from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.files import write_text_whole
from vssjax.metrics.confusion import MIOU_CONVENTIONS
from vssjax.metrics.consistency import VC_CONVENTIONS

# The headline metrics, stored as fractions and shown in %: these (a keyframe method's mIoU of
# its keyframes and of its other frames too), and mVC_n and VEC_n of every window n of
# `eval.windows` (8 and 16 by default).
_FRAME_METRICS = ("mIoU", "mIoU_keyframes", "mIoU_non_key", "wIoU", "pixel_acc")
_WINDOW_METRIC = re.compile(r"(mVC|VEC)_(\d+)")


def is_percent(name: str) -> bool:
  """Whether metric `name` is a headline metric (a fraction shown in per cent)."""
  return name in (*_FRAME_METRICS, "TC") or bool(_WINDOW_METRIC.fullmatch(name))


def headline_metrics(names: Iterable[str]) -> list[str]:
  """The headline metrics among `names` in table order: mIoU (then a keyframe method's
  mIoU_keyframes, mIoU_non_key), wIoU, pixel accuracy, mVC_n and VEC_n by window (of every
  `eval.windows`), TC."""
  present = set(names)
  windows = {kind: sorted(int(match.group(2)) for match in map(_WINDOW_METRIC.fullmatch, present)
                          if match and match.group(1) == kind) for kind in ("mVC", "VEC")}
  return ([name for name in _FRAME_METRICS if name in present]
          + [f"{kind}_{n}" for kind in ("mVC", "VEC") for n in windows[kind]]
          + (["TC"] if "TC" in present else []))


def _is_na(value: Any) -> bool:
  """An n/a metric: None, or NaN (e.g. VSPW's mVC where every video is too short)."""
  return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, percent: bool) -> str:
  if _is_na(value):
    return "n/a"
  return f"{100 * value:.2f}" if percent else f"{value:.2f}"


def published_for(config: ConfigDict) -> tuple[ConfigDict | None, str]:
  """The published numbers a run of `config` compares with (None if none), and the line that
  says which it does not compare and why: an evaluation of the split's first `eval.max_videos`
  videos (a quick check), or a setting of `published.assumes` that the run overrode (another
  network than the config file's, as a B0 checkpoint converted with `--config.model.backbone=b0`
  into a B2 config; DCFM's P mode next to Table II's B-mode row), which leaves out the numbers it
  concerns (ETC's TC over every video: the TC only, its mIoU still compared;
  `configs_lib.set_published`)."""
  published = config.published
  if not len(published.metrics):
    return None, ""
  if config.eval.max_videos:
    return None, (f"Not compared with the published numbers ({published.source}): this run "
                  f"evaluated the split's first {config.eval.max_videos} videos "
                  "(eval.max_videos).")
  in_order = headline_metrics(published.metrics)  # then any other, as the config lists them
  in_order += [name for name in published.metrics if name not in in_order]
  left_out, reasons = [], []
  for field, value, *concerned in published.assumes:  # pairs concern every metric
    actual = config_path.get_value(field, config)
    names = [name for name in in_order if name not in left_out
             and (not concerned or _is_of(name, concerned[0]))]
    if actual != value and names:
      left_out += names
      reasons.append((names, f"for {field}={value!r}, this run has {actual!r}."))
  if not left_out:
    return published, ""
  if len(left_out) == len(published.metrics):
    return None, (f"Not compared with the published numbers ({published.source}): they are "
                  + " They are ".join(why for _, why in reasons))
  kept = ConfigDict(dict(source=published.source, assumes=published.assumes, metrics={
      name: value for name, value in published.metrics.items() if name not in left_out}))
  return kept, " ".join(
      f"{', '.join(names)}: not compared with the published "
      f"{'number' if len(names) == 1 else 'numbers'} ({published.source}), "
      f"{'it is' if len(names) == 1 else 'they are'} {why}" for names, why in reasons)


def _is_of(metric: str, names: Sequence[str]) -> bool:
  """Whether `metric` is one of `names`, a family among them naming each of its windows (mVC:
  mVC_8, mVC_16)."""
  window = _WINDOW_METRIC.fullmatch(metric)
  return metric in names or (window is not None and window.group(1) in names)


def markdown_table(results: dict[str, Any], published: ConfigDict | None = None,
                   not_compared: str = "") -> str:
  """One row per metric: measured, and where the config carries them, published and difference;
  `not_compared`, the line saying why a config's published numbers are left out."""
  metrics = published.metrics if published is not None else {}
  has_published = bool(len(metrics))
  header = "| metric | measured |" + (" published | difference |" if has_published else "")
  rule = "|---|---|" + ("---|---|" if has_published else "")
  rows = [header, rule]
  names = headline_metrics(results) + ["frames_per_s"]
  for name in names:
    percent = is_percent(name)
    row = f"| {_row_name(name)} | {_fmt(results.get(name), percent)} |"
    if has_published:
      if name in metrics:
        value = results.get(name)
        diff = (100 * value - metrics[name]) if percent and not _is_na(value) else None
        row += f" {metrics[name]:.2f} | {'n/a' if diff is None else f'{diff:+.2f}'} |"
      else:
        row += " – | – |"
    rows.append(row)
  table = "\n".join(rows) + _convention_notes(results)
  if has_published and published.source:
    table += f"\n\nPublished numbers: {published.source}."
  return table + (f"\n\n{not_compared}" if not_compared else "")


def _row_name(name: str) -> str:
  """A metric's row heading: its key, with '(%)' for those shown in per cent."""
  return f"{name} (%)" if is_percent(name) else name


def _convention_notes(results: dict[str, Any]) -> str:
  """Which averaging the mIoU and mVC rows use: published tables differ, so a number is only
  comparable to one of the same convention (vssjax/metrics/confusion.py, consistency.py); how
  many frame pairs the TC row rests on; and, where no pixel was labelled, why the rest is n/a."""
  notes = []
  if results.get("scored_pixels") == 0:  # say why every label metric is n/a
    notes.append("mIoU, wIoU, pixel_acc, mVC and VEC: n/a, the evaluated frames hold no labelled "
                 "pixel (a test split: VSPW's and Cityscapes' come without labels).")
  if "mIoU_convention" in results:
    name = results["mIoU_convention"]
    notes.append(f"mIoU: `{name}` convention, {MIOU_CONVENTIONS[name][1]}.")
  if "mVC_convention" in results:
    name = results["mVC_convention"]
    notes.append(f"mVC: `{name}` convention, {VC_CONVENTIONS[name]}.")
  if "TC_pairs" in results:  # a TC of no pair is n/a: say why rather than leave a bare n/a
    notes.append(_tc_note(results["TC_pairs"], results.get("TC_videos")))
  return "".join(f"\n\n{note}" for note in notes)


def _tc_note(pairs: int, videos: int | None) -> str:
  """How many frame pairs TC rests on or, with none, why: no video scored (every one
  eval.tc_video_list names lies beyond eval.max_videos; a list naming a video the split does not
  hold is refused before) or the scored videos' frames stand alone. `videos`: None in results
  written before TC_videos was counted."""
  if pairs:
    return f"TC: over {pairs} pairs of consecutive frames."
  if videos == 0:
    return ("TC: n/a, no evaluated video is one eval.tc_video_list names (eval.max_videos "
            "evaluates only the split's first videos).")
  return ("TC: n/a, the scored videos hold no pair of consecutive frames (one-frame videos: "
          "Cityscapes without leftImg8bit_sequence/, for one).")


def _strict_json(value: Any) -> Any:
  """`value` with every non-finite float (a metric that is n/a: NaN) as None, i.e. JSON null:
  Python writes NaN as a bare `NaN`, which strict JSON parsers (JavaScript's, Go's) refuse."""
  if isinstance(value, dict):
    return {key: _strict_json(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_strict_json(item) for item in value]
  if isinstance(value, (float, np.floating)) and not math.isfinite(value):
    return None
  return value


def write_results(workdir: str | epath.Path, results: dict[str, Any], published=None,
                  not_compared: str = "") -> tuple[epath.Path, epath.Path, str]:
  """Writes `<workdir>/results.json` and `.md` (`markdown_table`'s); returns their paths and the
  Markdown table."""
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  json_path = workdir / "results.json"
  write_text_whole(json_path, json.dumps(_strict_json(results), indent=2, sort_keys=True,
                                         default=float, allow_nan=False))
  table = markdown_table(results, published, not_compared)
  md_path = workdir / "results.md"
  changes = "".join(f"- `{change}`\n" for change in results.get("config_changes", ()))
  data = ", ".join(str(results[key]) for key in ("data_source", "split") if key in results)
  write_text_whole(md_path, f"# Evaluation at step {results.get('step')}"
                   + (f" ({data})" if data else "") + f"\n\n{table}\n"
                   + (f"\n## Config changed since the checkpoint's record (recorded -> now)\n\n"
                      f"{changes}"
                      if changes else "")
                   + (f"\n## IoU per class\n\n{per_class_table(results)}\n"
                      if results.get("per_class_iou") else ""))
  return json_path, md_path, table


def per_class_table(results: dict[str, Any]) -> str:
  """The IoU of every class under its name (`class_names`, else its index): what the mean hides.
  A class neither in the ground truth nor predicted is n/a."""
  ious = results["per_class_iou"]
  names = results.get("class_names") or [str(index) for index in range(len(ious))]
  return "\n".join(["| class | IoU (%) |", "|---|---|"]
                   + [f"| {_cell(name)} | {_fmt(iou, True)} |" for name, iou in zip(names, ious)])


def read_labelled_results(spec: str, required: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
  """'LABEL=path/results.json' (a command-line argument naming one run) -> (label, its results);
  a spec or file that cannot be read, or that lacks frames/s or a `required` key, is a
  `SetupError` naming it. The label and the path may contain '=' (`lr=1e-3/results.json`): the
  split is the first that leaves a label and names a file, else the last."""
  splits = [(spec[:i], spec[i + 1:]) for i, char in enumerate(spec) if char == "="]
  label, path = next(((label, path) for label, path in splits if label and os.path.isfile(path)),
                     splits[-1] if splits else ("", ""))
  if not label:
    raise SetupError(f"expected LABEL=PATH (a results.json of --mode=eval), got {spec!r}")
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, ValueError) as error:
    raise SetupError(f"{label}: cannot read {path} as a results.json: {error}") from None
  if not isinstance(results, dict) or "frames_per_s" not in results:
    keys = sorted(results) if isinstance(results, dict) else type(results).__name__
    raise SetupError(f"{path} has no 'frames_per_s': is it a results.json? (keys: {keys})")
  missing = [key for key in required if key not in results]
  if missing:  # a results.json, of an evaluation that did not score it (TC without its flag)
    raise SetupError(f"{path} has no {missing[0]!r}: its evaluation did not score it (it has "
                     f"{', '.join(sorted(results))})")
  for key in ("frames_per_s", *headline_metrics(results)):  # what the tables and plot read
    value = results.get(key)
    if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
      raise SetupError(f"{path}: {key} is {value!r}, not a number (or null): is it a "
                       "results.json?")
  return label, results


def read_labelled_runs(specs: Sequence[str],
                       required: Sequence[str] = ()) -> list[tuple[str, dict[str, Any]]]:
  """Several `read_labelled_results` specs, one column or point each: a label given twice is a
  `SetupError` (two columns or points of one name, read as one run)."""
  runs, paths = [], {}
  for spec in specs:
    label, results = read_labelled_results(spec, required)
    path = spec[len(label) + 1:]
    if label in paths:
      raise SetupError(f"the label {label!r} names two runs ({paths[label]} and {path}): give "
                       "each its own")
    paths[label] = path
    runs.append((label, results))
  return runs


# What a run's metrics are of: runs that differ in any are set side by side with the row saying
# so, and no best value is marked (a VSPW mIoU over all classes against one over the classes
# present, or two datasets, do not rank).
_SETTING_ROWS = (("data", ("data_source", "split", "data_settings")),
                 ("mIoU convention", ("mIoU_convention",)),
                 ("mVC convention", ("mVC_convention",)))


def differing_settings(runs: Sequence[tuple[str, dict[str, Any]]]
                       ) -> list[tuple[str, list[str]]]:
  """The settings (`_SETTING_ROWS`) in which the (label, results) `runs` differ, each as (its
  title, every run's value): where there are any, their metrics do not rank. A setting that is a
  dict (`data_settings`: the synthetic generator's knobs) shows the entries that differ."""
  differing = []
  for title, keys in _SETTING_ROWS:
    settings = [" ".join(text for text in (_setting_text(results[key], key, runs)
                                           for key in keys if key in results) if text)
                or "–" for _, results in runs]
    if len(set(settings)) > 1:
      differing.append((title, settings))
  return differing


def _setting_text(value: Any, key: str, runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
  """A run's setting `key` as a row shows it; a dict's entries only where the runs differ."""
  if not isinstance(value, dict):
    return str(value)
  dicts = [results.get(key) or {} for _, results in runs]
  names = sorted({name for settings in dicts for name in settings})
  return " ".join(f"{name}={value.get(name)}" for name in names
                  if len({json.dumps(settings.get(name)) for settings in dicts}) > 1)


def comparison_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
  """Several runs side by side: one column per (label, results), one row per headline metric that
  any of them has, then frames/s; each row's best value in bold (all are higher-is-better) where
  two runs or more have one, unless the runs differ in data or convention (`differing_settings`),
  which rows above say then."""
  names = headline_metrics(name for _, results in runs for name in results)
  rows = ["| metric | " + " | ".join(_cell(label) for label, _ in runs) + " |",
          "|---|" + "---|" * len(runs)]
  differing = differing_settings(runs)
  rows += [f"| {title} | " + " | ".join(_cell(s) for s in settings) + " |"
           for title, settings in differing]
  ranked = not differing
  for name in names + ["frames_per_s"]:
    percent = is_percent(name)
    values = [results.get(name) for _, results in runs]
    known = [value for value in values if not _is_na(value)]
    best = _fmt(max(known), percent) if len(known) > 1 and ranked else None
    cells = [_fmt(value, percent) for value in values]
    cells = [f"**{cell}**" if cell == best else cell for cell in cells]  # ties as shown: all
    rows.append(f"| {_row_name(name)} | " + " | ".join(cells) + " |")
  return "\n".join(rows)


def _cell(text: str) -> str:
  """`text` as one Markdown table cell: a '|' in it would end the cell."""
  return str(text).replace("|", r"\|")


HISTORY = "eval_history.jsonl"


def append_history(workdir: str | epath.Path, results: dict[str, Any]) -> epath.Path:
  """Appends the scalar results (step, split, every metric; not the per-class or per-video lists)
  and the config changes since training as one JSON line to `<workdir>/eval_history.jsonl`:
  `results.json` holds the last evaluation only, and the periodic evaluations of a training run
  (`train.eval_every`) are its learning curve."""
  path = epath.Path(workdir) / HISTORY
  scalars = {key: value for key, value in results.items()
             if value is None or isinstance(value, (str, int, float, np.number))
             or key == "config_changes"}  # which evaluation of the checkpoint this line is
  with path.open("a") as history:
    history.write(json.dumps(_strict_json(scalars), sort_keys=True, default=float,
                             allow_nan=False) + "\n")
  return path
