"""Host-side (numpy) evaluation metrics: confusion-matrix mIoU/fwIoU/accuracy, mVC_n, VEC_n, TC."""

from vssjax.metrics.confusion import (ConfusionMatrix, check_labels, fwiou, miou_all_classes,
                                      miou_mmseg, miou_vspw, per_class_iou, pixel_accuracy)
from vssjax.metrics.consistency import VideoConsistency, window_stable
from vssjax.metrics.temporal_consistency import TemporalConsistency

__all__ = [
    "ConfusionMatrix",
    "TemporalConsistency",
    "VideoConsistency",
    "check_labels",
    "fwiou",
    "miou_all_classes",
    "miou_mmseg",
    "miou_vspw",
    "per_class_iou",
    "pixel_accuracy",
    "window_stable",
]
