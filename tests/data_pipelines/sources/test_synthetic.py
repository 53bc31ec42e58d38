"""Tests for the procedural synthetic video source."""
import numpy as np

from data_pipelines.sources import synthetic
from tests.data_pipelines import helpers


def _arrays(video):
  return (np.stack([f.image for f in video.frames]), np.stack([f.label for f in video.frames]))


def test_shapes_dtypes_and_names():
  source = synthetic.SyntheticVideoSource(**helpers.TINY)
  videos = source.videos("train")
  assert len(videos) == 8 and len(source.videos("val")) == 2
  frames, labels = _arrays(videos[3])
  assert frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8
  assert labels.shape == (6, 32, 32)
  assert videos[3].name == "synthetic_train_00003"
  assert videos[3].frames[2].frame_id == "synthetic_train_00003/0002"
  assert source.num_classes == len(source.class_names) == len(source.palette) >= 8


def test_deterministic_from_seed_and_splits_disjoint():
  a = _arrays(synthetic.SyntheticVideoSource(**helpers.TINY).videos("train")[1])
  b = _arrays(synthetic.SyntheticVideoSource(**helpers.TINY).videos("train")[1])
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  other_seed = _arrays(synthetic.SyntheticVideoSource(**{**helpers.TINY, "seed": 1}
                                                      ).videos("train")[1])
  val = _arrays(synthetic.SyntheticVideoSource(**helpers.TINY).videos("val")[1])
  assert not np.array_equal(a[0], other_seed[0])
  assert not np.array_equal(a[0], val[0])


def test_classes_small_objects_and_ignore_present():
  videos = synthetic.SyntheticVideoSource(**helpers.TINY).videos("train")
  labels = np.stack([_arrays(videos[i])[1] for i in range(len(videos))])  # [V, T, H, W]
  present = set(np.unique(labels).tolist())
  assert present <= set(range(synthetic.SKY, synthetic.SIGN + 1)) | {255}
  assert len(present - {255}) >= 8
  assert 255 in present
  # Small objects: balls cover a few pixels of a frame (< 2 %) where they appear.
  ball_pixels = (labels == synthetic.BALL).sum(axis=(2, 3)).ravel()
  assert ((ball_pixels > 0) & (ball_pixels < 0.02 * 32 * 32)).sum() >= 5


def test_frames_change_over_time_and_labels_follow():
  frames, labels = _arrays(synthetic.SyntheticVideoSource(**helpers.TINY).videos("train")[0])
  assert not np.array_equal(labels[0], labels[-1])  # Camera pan / moving objects.
  assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 5


def test_colour_alone_does_not_identify_a_class():
  """Per-video colours vary: one class's mean colour spreads widely across videos."""
  videos = synthetic.SyntheticVideoSource(**{**helpers.TINY, "num_train_videos": 8}
                                          ).videos("train")
  sky_means = []
  for i in range(len(videos)):
    frames, labels = _arrays(videos[i])
    if (labels == synthetic.SKY).any():
      sky_means.append(frames[labels == synthetic.SKY].mean(axis=0))
  assert np.ptp(np.array(sky_means), axis=0).max() > 40
