"""Confusion-matrix segmentation metrics: mIoU in three conventions, fwIoU and pixel accuracy.

The matrix is int64 ``[NC, NC]`` with rows = ground truth and columns = prediction, accumulated
over every evaluated pixel of every frame (one dataset-wide matrix, never an average of per-frame
scores). Ignored pixels (GT == ``ignore_label``) never enter it.

Published tables disagree on how to average per-class IoU, so each convention gets its own name:

* ``miou_vspw`` -- the VSPW toolkit ``Evaluator``: mean over the classes *present in the GT*
  (row sum > 0); a class that is predicted but never in the GT is left out. The VSPW
  ``VC_perclip.py`` / DTERN dev ``IOU_perclip.py`` scripts average this way (hence the per-class
  mean inside VEC_n), but feed their Evaluator only the videos of more than 16 frames (and
  ``IOU_perclip.py`` only frames with a prediction file), so the mIoU they print (the dev DTERN
  comment's 40.6, specs/dtern.md §12) covers fewer frames than this one, which scores every
  evaluated frame.
* ``miou_mmseg`` -- mmseg ``mean_iou``: nanmean over classes whose union (GT or prediction) is
  non-empty; a class predicted but absent from the GT counts as IoU 0. This is what mmseg-based
  code (SegFormer, CFFM, MRCFA, DTERN's ``tools/test.py``) prints; which of the two the DTERN
  paper's mIoU column uses is unverified (specs/dtern.md §9.1, §13).
* ``miou_all_classes`` -- DCFM's metric code: mean over *all* NC classes, a class with an empty
  union counting as 0 (specs/dcfm.md §7). Used by the DCFM tables (its Table II mIoU column).

All three agree when every class occurs in the GT; ``MIOU_CONVENTIONS`` names them for the
evaluator's ``eval.miou_convention``, which picks the one reported as "mIoU". ``fwiou`` is the
frequency-weighted IoU ("wIoU" of the DCFM tables, "FWIoU" of the VSPW Evaluator): sum_c f_c IoU_c
with f_c the GT pixel frequency of class c.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_pipelines.sources.base import IGNORE_LABEL

_MAX_VALUES_REPORTED = 10


def _out_of_range_values(values: np.ndarray) -> str:
  """Lists the distinct offending values (at most a few) so the error can be acted on."""
  found = np.unique(values)
  shown = ", ".join(str(v) for v in found[:_MAX_VALUES_REPORTED])
  hidden = found.size - _MAX_VALUES_REPORTED
  return f"[{shown} and {hidden} more]" if hidden > 0 else f"[{shown}]"


def check_labels(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int) -> None:
  """Rejects label maps that would silently corrupt a confusion matrix.

  An unknown class id in either map would index outside the matrix (or, through gt*NC+pred, land
  in another class's cell), so it is an error rather than something to mask away.

  Args:
    gt: integer ground-truth labels, any shape.
    pred: integer predicted labels, same shape as ``gt``.
    num_classes: valid class ids are ``0 .. num_classes - 1``.
    ignore_label: the one extra value allowed in ``gt``.

  Raises:
    ValueError: shapes differ, a map is not integer-typed, or values are out of range; the message
      lists the values found (callers add the file or video name).
  """
  if gt.shape != pred.shape:
    raise ValueError(f"GT shape {gt.shape} != prediction shape {pred.shape}")
  for name, labels in (("GT", gt), ("prediction", pred)):
    if not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"{name} labels must be an integer array, got dtype {labels.dtype}")
  bad_gt = ((gt < 0) | (gt >= num_classes)) & (gt != ignore_label)
  if bad_gt.any():
    raise ValueError(
        f"GT has values {_out_of_range_values(gt[bad_gt])} outside [0, {num_classes}) "
        f"that are not the ignore label {ignore_label}")
  if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
    bad_pred = (pred < 0) | (pred >= num_classes)
    raise ValueError(
        f"prediction has values {_out_of_range_values(pred[bad_pred])} "
        f"outside [0, {num_classes})")


class ConfusionMatrix:
  """Streaming int64 confusion matrix (rows = GT, cols = prediction) with exact merging.

  Attributes:
    num_classes: NC.
    ignore_label: GT value excluded from the matrix.
    matrix: int64 ``[NC, NC]`` pixel counts.
  """

  def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL):
    if 0 <= ignore_label < num_classes:
      raise ValueError(f"ignore_label {ignore_label} is a valid class id for {num_classes} classes")
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self.matrix = np.zeros((num_classes, num_classes), np.int64)

  def update(self, gt: np.ndarray, pred: np.ndarray, *, checked: bool = False) -> None:
    """Adds every non-ignored pixel of one or many frames (any shape, same for both).

    `checked`: the caller has already passed these labels through `check_labels` (or derived
    them from labels that did), so the check is skipped.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if not checked:
      check_labels(gt, pred, self.num_classes, self.ignore_label)
    # Ignored pixels go to one extra bin, dropped after counting, and the cells are built in place
    # in bincount's own index type (which it would otherwise copy to): 1.85 ms for a 480x853 VSPW
    # frame, against 2.94 ms selecting the kept pixels. The evaluator does this every frame.
    cells_total = self.num_classes**2
    cells = gt.astype(np.intp)
    cells *= self.num_classes
    cells += pred  # < NC^2 where gt is not ignored
    np.putmask(cells, gt == self.ignore_label, cells_total)
    counts = np.bincount(cells.ravel(), minlength=cells_total + 1)[:cells_total]
    self.matrix += counts.reshape(self.num_classes, self.num_classes)

  def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
    """Adds another accumulator's counts (e.g. from another process); returns self."""
    if (other.num_classes, other.ignore_label) != (self.num_classes, self.ignore_label):
      raise ValueError(
          f"cannot merge ConfusionMatrix(num_classes={other.num_classes}, "
          f"ignore_label={other.ignore_label}) into ConfusionMatrix("
          f"num_classes={self.num_classes}, ignore_label={self.ignore_label})")
    self.matrix += other.matrix
    return self

  def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
    return self.merge(other)

  def summary(self) -> dict[str, float]:
    """All scalar metrics of the matrix, as fractions in [0, 1] (nan when undefined)."""
    return {
        **miou_by_convention(self.matrix),
        "fwIoU": fwiou(self.matrix),
        "pixel_acc": pixel_accuracy(self.matrix),
    }


def _gt_pixels(matrix: np.ndarray) -> np.ndarray:
  return matrix.sum(axis=1)


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
  """IoU_c = TP / (GT_c + Pred_c - TP); nan for a class with an empty union."""
  tp = np.diag(matrix).astype(np.float64)
  union = _gt_pixels(matrix) + matrix.sum(axis=0) - np.diag(matrix)
  iou = np.full(matrix.shape[0], np.nan)
  np.divide(tp, union, out=iou, where=union > 0)
  return iou


def miou_vspw(matrix: np.ndarray) -> float:
  """VSPW Evaluator mIoU: mean IoU over classes present in the GT (nan if the GT is empty)."""
  present = _gt_pixels(matrix) > 0
  if not present.any():
    return float("nan")
  return float(per_class_iou(matrix)[present].mean())


def miou_mmseg(matrix: np.ndarray) -> float:
  """mmseg mIoU: mean IoU over classes with a non-empty union (GT or prediction)."""
  iou = per_class_iou(matrix)
  defined = ~np.isnan(iou)
  if not defined.any():
    return float("nan")
  return float(iou[defined].mean())


def miou_all_classes(matrix: np.ndarray) -> float:
  """DCFM mIoU: mean over all NC classes, a class with an empty union counting as 0."""
  return float(np.nan_to_num(per_class_iou(matrix), nan=0.0).mean())


# Name -> (function, what it averages over): the choices of `eval.miou_convention`, the note under
# a results table.
MIOU_CONVENTIONS: dict[str, tuple[Callable[[np.ndarray], float], str]] = {
    "vspw": (miou_vspw, "mean over the classes present in the ground truth"),
    "mmseg": (miou_mmseg, "mean over the classes in the ground truth or the prediction"),
    "all_classes": (miou_all_classes, "mean over all classes, a class absent from both counting 0"),
}


def miou_by_convention(matrix: np.ndarray) -> dict[str, float]:
  """``mIoU_<name>`` for every convention of ``MIOU_CONVENTIONS``."""
  return {f"mIoU_{name}": fn(matrix) for name, (fn, _) in MIOU_CONVENTIONS.items()}


def fwiou(matrix: np.ndarray) -> float:
  """Frequency-weighted IoU: sum_c f_c IoU_c, f_c = GT pixels of c / all GT pixels."""
  gt_pixels = _gt_pixels(matrix)
  total = gt_pixels.sum()
  if total == 0:
    return float("nan")
  present = gt_pixels > 0
  return float((gt_pixels[present] / total * per_class_iou(matrix)[present]).sum())


def pixel_accuracy(matrix: np.ndarray) -> float:
  """Fraction of non-ignored pixels predicted correctly (nan if there are none)."""
  total = matrix.sum()
  if total == 0:
    return float("nan")
  return float(np.trace(matrix) / total)
