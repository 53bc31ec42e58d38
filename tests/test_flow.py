"""Tests for vssjax.flow: the .flo format, the flow convention, and the per-pair cache."""
import os
import pickle

import cv2
import numpy as np
import pytest

from vssjax import flow as flow_lib


def test_flo_round_trip_and_header(tmp_path):
  field = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
  path = str(tmp_path / "a.flo")
  flow_lib.write_flo(path, field)
  raw = open(path, "rb").read()
  assert raw[:4] == b"PIEH" and np.frombuffer(raw[4:12], "<i4").tolist() == [5, 3]
  assert len(raw) == 12 + 3 * 5 * 2 * 4
  np.testing.assert_array_equal(flow_lib.read_flo(path), field)
  (tmp_path / "bad.flo").write_bytes(b"nope" + raw[4:])
  with pytest.raises(ValueError, match="bad.flo: not a .flo file"):
    flow_lib.read_flo(str(tmp_path / "bad.flo"))
  (tmp_path / "short.flo").write_bytes(raw[:-4])
  with pytest.raises(ValueError, match="short.flo: holds 29 floats"):
    flow_lib.read_flo(str(tmp_path / "short.flo"))


def _textured_pair(shift=(3, -2)):
  """Frame b is frame a moved by `shift` = (dx, dy): b(p) = a(p - shift)."""
  rng = np.random.default_rng(1)
  big = rng.integers(0, 255, (40, 40), dtype=np.uint8)
  big = cv2.GaussianBlur(cv2.resize(big, (160, 160), interpolation=cv2.INTER_CUBIC), (5, 5), 0)
  a = big[40:104, 40:104]
  b = big[40 - shift[1]:104 - shift[1], 40 - shift[0]:104 - shift[0]]
  return np.repeat(a[..., None], 3, -1), np.repeat(b[..., None], 3, -1)


@pytest.mark.parametrize("method", flow_lib.METHODS)
def test_flow_convention_on_a_known_shift(method):
  a, b = _textured_pair((3, -2))
  field = flow_lib.FlowProvider(method).compute(a, b)
  # b(p) = a(p - shift): the point of b at p sits at p + flow in a, so flow = -shift.
  np.testing.assert_allclose(np.median(field[16:48, 16:48].reshape(-1, 2), 0), [-3, 2], atol=0.3)


@pytest.mark.parametrize("hw", [(8, 10), (12, 48)])
def test_dis_refuses_frames_too_small_for_it_and_farneback_takes_them(hw):
  """OpenCV's DIS raises on 8x10 frames and kills the process on 12x48 ones (a segfault): the
  provider refuses both with a ValueError saying what to use instead, which the evaluator and
  infer report naming the video and frame pair."""
  frame = np.random.default_rng(0).integers(0, 255, hw + (3,), np.uint8)
  too_small = rf"frames of {hw[0]}x{hw[1]} are too small for DIS .*'farneback'"
  with pytest.raises(ValueError, match=too_small):
    flow_lib.FlowProvider("dis").compute(frame, frame)
  assert flow_lib.FlowProvider("farneback").compute(frame, frame).shape == hw + (2,)


@pytest.mark.parametrize("hw", [(16, 48), (48, 16)])
def test_dis_takes_frames_of_its_smallest_side(hw):
  """16 pixels a side is the smallest DIS runs on (not refused: a 16-pixel-high strip of footage
  keeps DIS, the default TC flow)."""
  frame = np.random.default_rng(0).integers(0, 255, hw + (3,), np.uint8)
  assert flow_lib.FlowProvider("dis").compute(frame, np.roll(frame, 1, 1)).shape == hw + (2,)


def test_cache_in_memory_and_on_disk(tmp_path):
  a, b = _textured_pair()
  provider = flow_lib.FlowProvider("dis", cache_dir=str(tmp_path))
  first = provider(a, b, key="vid/0-1")
  assert os.path.exists(tmp_path / "vid" / "0-1.dis.flo")
  assert provider(np.zeros_like(a), np.zeros_like(b), key="vid/0-1") is first  # Memory hit.
  fresh = flow_lib.FlowProvider("dis", cache_dir=str(tmp_path))
  np.testing.assert_array_equal(fresh(np.zeros_like(a), np.zeros_like(b), key="vid/0-1"), first)
  with pytest.raises(ValueError, match="unknown flow method"):
    flow_lib.FlowProvider("raft")


def test_a_cached_field_of_another_frame_size_is_an_error(tmp_path):
  a, b = _textured_pair()
  flow_lib.FlowProvider("dis", cache_dir=str(tmp_path))(a, b, key="vid/0-1")
  smaller = lambda frame: np.ascontiguousarray(frame[::2, ::2])
  with pytest.raises(ValueError, match=r"0-1\.dis\.flo: flow of size .* another dataset"):
    flow_lib.FlowProvider("dis", cache_dir=str(tmp_path))(smaller(a), smaller(b), key="vid/0-1")
  assert [p.name for p in (tmp_path / "vid").iterdir()] == ["0-1.dis.flo"]  # no partial left


def test_a_key_kept_in_memory_for_frames_of_another_size_is_an_error():
  """Two videos of one name give the same keys: the second must not score with the first's
  flow."""
  a, b = _textured_pair()
  provider = flow_lib.FlowProvider("farneback")
  provider(a, b, key="clip/0-1")
  smaller = lambda frame: np.ascontiguousarray(frame[::2, ::2])
  with pytest.raises(ValueError, match=r"kept in memory as 'clip/0-1': flow of size .* share a"):
    provider(smaller(a), smaller(b), key="clip/0-1")


def test_the_memory_cache_is_bounded():
  a, b = _textured_pair()
  provider = flow_lib.FlowProvider("farneback", memory_items=2)
  first = provider(a, b, key="0-1")
  provider(a, b, key="1-2")
  assert provider(a, b, key="0-1") is first  # still held
  provider(a, b, key="2-3")
  provider(a, b, key="3-4")
  assert provider(a, b, key="0-1") is not first  # evicted, computed again


def test_a_cache_hit_renews_the_pair():
  """The memory cache evicts the least recently used pair, not the oldest inserted: a pair that
  evaluation passes keep reading stays."""
  a, b = _textured_pair()
  provider = flow_lib.FlowProvider("farneback", memory_items=2)
  first = provider(a, b, key="0-1")
  provider(a, b, key="1-2")
  assert provider(a, b, key="0-1") is first  # used again: now the most recent
  provider(a, b, key="2-3")  # evicts 1-2
  assert provider(a, b, key="0-1") is first


def test_a_used_provider_pickles_into_workers():
  """Grain pickles the provider into each worker, possibly after it has computed flow: the lazily
  created OpenCV DIS object (which does not pickle) is left out and recreated there."""
  a, b = _textured_pair()
  provider = flow_lib.FlowProvider("dis")
  field = provider.compute(a, b)
  copy = pickle.loads(pickle.dumps(provider))
  np.testing.assert_array_equal(copy.compute(a, b), field)


def test_a_cached_field_whose_write_fails_leaves_no_file(tmp_path, monkeypatch):
  """The cache's provisional file stayed beside the field's name when the write failed."""
  def half_written(path, flow):
    with open(path, "wb") as f:
      f.write(b"PIEH")
    raise OSError("disk full")

  monkeypatch.setattr(flow_lib, "write_flo", half_written)
  a, b = _textured_pair()
  with pytest.raises(OSError, match="disk full"):
    flow_lib.FlowProvider("dis", cache_dir=str(tmp_path))(a, b, key="vid/0-1")
  assert list((tmp_path / "vid").iterdir()) == []
