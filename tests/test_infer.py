"""`--mode=infer`'s input reading and label PNGs (the whole mode runs in tests/test_main.py)."""

import cv2
import numpy as np
from PIL import Image

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


def test_label_pngs_hold_the_class_ids_and_show_the_palette_colours(tmp_path):
  """Each frame's PNG reads back as class ids and shows the dataset's colours in any viewer."""
  palette = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70]], np.uint8)
  labels = np.array([[0, 1], [2, 255]], np.int32)
  infer.save_palette_png(tmp_path / "f.png", labels, palette)
  image = Image.open(tmp_path / "f.png")
  np.testing.assert_array_equal(np.asarray(image), labels)
  np.testing.assert_array_equal(np.asarray(image.convert("RGB")),
                                [[[128, 64, 128], [244, 35, 232]], [[70, 70, 70], [0, 0, 0]]])
