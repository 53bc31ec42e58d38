"""Confusion matrix and its metrics against values counted by hand on a 3x3 frame."""

import numpy as np
import pytest

from vssjax.metrics import confusion
from vssjax.metrics.confusion import ConfusionMatrix

# 5 classes; class 3 is predicted but never in the GT, class 4 appears nowhere; one ignored pixel.
GT = np.array([[0, 0, 1],
               [1, 2, 255],
               [2, 2, 0]])
PRED = np.array([[0, 1, 1],
                 [1, 3, 0],
                 [2, 0, 0]])
# Rows = GT, cols = prediction, counted pixel by pixel (the ignored pixel is not counted).
EXPECTED_MATRIX = np.array([[2, 1, 0, 0, 0],
                            [0, 2, 0, 0, 0],
                            [1, 0, 1, 1, 0],
                            [0, 0, 0, 0, 0],
                            [0, 0, 0, 0, 0]])
# IoU_c = TP / (GT_c + Pred_c - TP): 2/(3+3-2), 2/(2+3-2), 1/(3+1-1), 0/(0+1-0), undefined.
EXPECTED_IOU = [1 / 2, 2 / 3, 1 / 3, 0.0, np.nan]


def _filled():
  matrix = ConfusionMatrix(5)
  matrix.update(GT, PRED)
  return matrix


def test_matrix_counts_non_ignored_pixels():
  matrix = _filled().matrix
  assert matrix.dtype == np.int64
  np.testing.assert_array_equal(matrix, EXPECTED_MATRIX)


def test_per_class_iou():
  np.testing.assert_allclose(confusion.per_class_iou(EXPECTED_MATRIX), EXPECTED_IOU)


def test_miou_conventions_differ_on_class_predicted_but_absent_from_gt():
  summary = _filled().summary()
  assert summary["mIoU_vspw"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 3) / 3)  # classes in GT
  assert summary["mIoU_mmseg"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 3 + 0) / 4)  # union > 0
  assert summary["mIoU_all_classes"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 3 + 0 + 0) / 5)


def test_fwiou_and_pixel_accuracy():
  summary = _filled().summary()
  # GT frequencies 3/8, 2/8, 3/8 weight IoUs 1/2, 2/3, 1/3.
  assert summary["fwIoU"] == pytest.approx(3 / 8 * 1 / 2 + 2 / 8 * 2 / 3 + 3 / 8 * 1 / 3)
  assert summary["pixel_acc"] == pytest.approx(5 / 8)


def test_fwiou_weights_by_ground_truth_not_prediction_frequency():
  """The matrix above has the same GT and predicted class frequencies where it matters, so it
  cannot tell the two weightings apart; this one's rows (GT: 4, 1) and columns (predicted: 3, 2)
  differ: IoUs 3/4 and 1/2, weighted 4/5 and 1/5 (weighted by prediction: 0.65)."""
  assert confusion.fwiou(np.array([[3, 1], [0, 1]])) == pytest.approx(4 / 5 * 3 / 4 + 1 / 5 / 2)


def test_empty_matrix_gives_nan_except_all_classes_mean():
  summary = ConfusionMatrix(3).summary()
  assert np.isnan([summary[k] for k in ("mIoU_vspw", "mIoU_mmseg", "fwIoU", "pixel_acc")]).all()
  assert summary["mIoU_all_classes"] == 0.0


def test_custom_ignore_label():
  gt = np.where(GT == 255, 7, GT)
  matrix = ConfusionMatrix(5, ignore_label=7)
  matrix.update(gt, PRED)
  np.testing.assert_array_equal(matrix.matrix, EXPECTED_MATRIX)
  with pytest.raises(ValueError, match=r"\[255\]"):
    matrix.update(GT, PRED)


def test_ignore_label_must_not_be_a_class():
  with pytest.raises(ValueError, match="valid class id"):
    ConfusionMatrix(5, ignore_label=4)


@pytest.mark.parametrize("gt_change, pred_change, message", [
    ({(0, 0): 9, (0, 1): 5, (2, 2): 9}, {}, r"GT has values \[5, 9\] outside \[0, 5\)"),
    ({(0, 0): -1}, {}, r"GT has values \[-1\]"),
    ({}, {(1, 1): 5}, r"prediction has values \[5\] outside \[0, 5\)"),
    ({}, {(1, 2): -3}, r"prediction has values \[-3\]"),  # even where the GT is ignored
])
def test_out_of_range_labels_raise_with_values(gt_change, pred_change, message):
  gt, pred = GT.copy(), PRED.copy()
  for where, value in gt_change.items():
    gt[where] = value
  for where, value in pred_change.items():
    pred[where] = value
  matrix = ConfusionMatrix(5)
  with pytest.raises(ValueError, match=message):
    matrix.update(gt, pred)
  assert matrix.matrix.sum() == 0


def test_shape_and_dtype_errors():
  matrix = ConfusionMatrix(5)
  with pytest.raises(ValueError, match="shape"):
    matrix.update(GT, PRED[:2])
  with pytest.raises(ValueError, match="integer"):
    matrix.update(GT, PRED.astype(np.float32))


def test_batched_update_and_merge_equal_single_accumulation():
  rng = np.random.default_rng(0)
  gts = rng.choice([0, 1, 2, 3, 255], size=(4, 6, 7))
  preds = rng.integers(0, 4, size=(4, 6, 7))
  single = ConfusionMatrix(4)
  for gt, pred in zip(gts, preds):
    single.update(gt, pred)
  batched = ConfusionMatrix(4)
  batched.update(gts, preds)
  first, second = ConfusionMatrix(4), ConfusionMatrix(4)
  first.update(gts[:1], preds[:1])
  second.update(gts[1:], preds[1:])
  first += second
  np.testing.assert_array_equal(batched.matrix, single.matrix)
  np.testing.assert_array_equal(first.matrix, single.matrix)
  assert first.summary() == single.summary()


def test_merge_rejects_other_configuration():
  with pytest.raises(ValueError, match="cannot merge"):
    ConfusionMatrix(4).merge(ConfusionMatrix(5))


def test_error_message_lists_at_most_ten_values():
  gt = np.arange(100, 115).reshape(3, 5)
  with pytest.raises(ValueError, match=r"\[100, 101, .*, 109 and 5 more\]"):
    ConfusionMatrix(5).update(gt, np.zeros_like(gt))
