"""Host-side optical flow: OpenCV DIS (default) or Farneback, cached per frame pair, and `.flo` I/O.

Convention, used by the data pipeline's `flow` batch key and by every consumer: `flow(a, b)` is the
backward flow that brings frame `a` onto frame `b`. For a pixel p = (x, y) of frame b, the same
scene point sits at p + flow[y, x] in frame a, so `b ~= sample(a, p + flow)` (backward warping, as
ETC's temporal loss and the TC metric need). Arrays are float32 [H, W, 2] holding (dx, dy) pixels.
In a clip batch, `flow[:, i]` is flow(frame i, frame i+1): it warps each frame onto the next one,
so the last field warps the last reference onto the target.
"""
from __future__ import annotations

import collections
import os

import cv2
import numpy as np

from vssjax.errors import SetupError
from vssjax.files import write_whole

FLO_MAGIC = 202021.25  # Middlebury `.flo` header tag ("PIEH" as float32 little-endian).
METHODS = ("dis", "farneback")
# OpenCV's DIS refuses frames under 12 pixels a side and, worse, kills the process (a segfault,
# no message) on many under 16 pixels high (12x48, 15x48, ...); Farneback takes any size.
DIS_MIN_SIDE = 16


def write_flo(path: str, flow: np.ndarray) -> None:
  """Middlebury `.flo`: 'PIEH', int32 width, int32 height, then float32 (u, v) rows."""
  flow = np.asarray(flow, np.float32)
  if flow.ndim != 3 or flow.shape[2] != 2:
    raise ValueError(f"flow must be [H, W, 2], got {flow.shape}")
  with open(path, "wb") as f:
    np.array([FLO_MAGIC], "<f4").tofile(f)
    np.array([flow.shape[1], flow.shape[0]], "<i4").tofile(f)
    flow.astype("<f4").tofile(f)


def read_flo(path: str) -> np.ndarray:
  """Reads a Middlebury `.flo` file into float32 [H, W, 2]; raises naming the file if malformed."""
  with open(path, "rb") as f:
    header = f.read(12)
    if len(header) < 12 or np.frombuffer(header[:4], "<f4")[0] != FLO_MAGIC:
      raise ValueError(f"{path}: not a .flo file (bad magic number)")
    width, height = np.frombuffer(header[4:], "<i4")
    data = np.frombuffer(f.read(), "<f4")
  if data.size != width * height * 2:
    raise ValueError(f"{path}: holds {data.size} floats, expected {width}x{height}x2")
  return data.reshape(height, width, 2).astype(np.float32)


def _gray(rgb: np.ndarray) -> np.ndarray:
  return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _same_size(flow: np.ndarray, frame: np.ndarray, source: str, hint: str) -> np.ndarray:
  """`flow` when it is the frame's size; a reused key of another frame size is an error."""
  if flow.shape[:2] != frame.shape[:2]:
    raise ValueError(f"{source}: flow of size {flow.shape[:2]} for frames of size "
                     f"{frame.shape[:2]}; {hint}")
  return flow


class FlowProvider:
  """Computes flow(a, b) on the host and caches it per frame pair.

  The in-memory cache keeps the last `memory_items` pairs: enough for the pairs of a video that
  several evaluation passes (or the clips of a batch) share, and bounded, since a 1024x2048 field
  is 16 MiB and each Grain worker has its own cache. With `cache_dir`, fields are also stored as
  `<cache_dir>/<key>.<method>.flo` and survive restarts. Keys are chosen by the caller, e.g.
  "<video>/<frame a>-<frame b>", so a cache directory belongs to one dataset: a stored field whose
  size differs from the frames' is an error, not a silent reuse.
  """

  def __init__(self, method: str = "dis", cache_dir: str = "", memory_items: int = 64):
    if method not in METHODS:
      raise SetupError(f"unknown flow method {method!r}; expected one of {METHODS}")
    self.method = method
    self._cache_dir = os.path.expanduser(cache_dir)
    self._memory: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    self._memory_items = memory_items
    self._dis = None

  def compute(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """flow(a, b) for uint8 RGB frames [H, W, 3], without caching."""
    if a.shape != b.shape:
      raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    if self.method == "dis" and min(a.shape[:2]) < DIS_MIN_SIDE:
      raise ValueError(f"frames of {a.shape[0]}x{a.shape[1]} are too small for DIS flow (OpenCV's "
                       f"needs {DIS_MIN_SIDE} pixels a side, and crashes on some smaller ones): "
                       "use the 'farneback' flow method (eval.tc_flow.method, data.flow.method)")
    # OpenCV's calc(prev, next) returns f with prev(p) ~= next(p + f): prev = b, next = a.
    prev, nxt = _gray(b), _gray(a)
    if self.method == "dis":
      if self._dis is None:  # Created lazily: OpenCV objects do not pickle into Grain workers.
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
      flow = self._dis.calc(prev, nxt, None)
    else:
      flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5, levels=3, winsize=15,
                                          iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    return flow.astype(np.float32)

  def __call__(self, a: np.ndarray, b: np.ndarray, key: str | None = None) -> np.ndarray:
    """flow(a, b), from the cache when `key` was computed before."""
    if key is None:
      return self.compute(a, b)
    if key in self._memory:
      self._memory.move_to_end(key)
      return _same_size(self._memory[key], a, f"the flow kept in memory as {key!r}",
                        "do two videos share a name?")
    path = os.path.join(self._cache_dir, f"{key}.{self.method}.flo") if self._cache_dir else ""
    if path and os.path.exists(path):
      flow = _same_size(read_flo(path), a, path, "is this flow cache directory another dataset's "
                        "(or another frame size's)?")
    else:
      flow = self.compute(a, b)
      if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Whole: workers and hosts sharing the cache never read half a field.
        write_whole(path, lambda provisional: write_flo(str(provisional), flow))
    self._memory[key] = flow
    if len(self._memory) > self._memory_items:
      self._memory.popitem(last=False)
    return flow

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_dis"] = None
    return state
