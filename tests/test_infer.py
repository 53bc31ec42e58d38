"""`--mode=infer`'s input reading (the whole mode runs in tests/test_main.py)."""

import cv2
import numpy as np

from vssjax import infer


def test_a_frame_folder_with_label_maps_beside_its_frames_reads_the_frames_only(tmp_path):
  """`python -m data_pipelines.make_vtest_pseudo` writes `<frame>_label.png` beside each frame:
  inferring on such a folder predicts its frames, not twice as many "frames"."""
  for t in range(2):
    cv2.imwrite(str(tmp_path / f"{t:06d}.jpg"), np.full((6, 8, 3), 50 * t, np.uint8))
    cv2.imwrite(str(tmp_path / f"{t:06d}_label.png"), np.zeros((6, 8), np.uint8))
  total, frames = infer.read_frames(str(tmp_path))
  frames = list(frames)
  assert total == 2 and [name for name, _ in frames] == ["000000", "000001"]
  assert all(frame.shape == (6, 8, 3) for _, frame in frames)
