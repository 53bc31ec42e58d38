"""Host-side (numpy) evaluation metrics: confusion-matrix mIoU/fwIoU/accuracy, mVC_n and VEC_n."""

from vssjax.metrics.confusion import (ConfusionMatrix, check_labels, fwiou, miou_all_classes,
                                      miou_mmseg, miou_vspw, per_class_iou, pixel_accuracy)
from vssjax.metrics.consistency import VideoConsistency, window_stable

__all__ = [
    "ConfusionMatrix",
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
