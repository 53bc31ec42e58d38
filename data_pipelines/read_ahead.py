"""Decoding frames in a background thread while the caller works on the ones before.

Evaluation and inference read a video frame by frame (JPEG/PNG decoding, a few ms per VSPW frame)
between dispatching predictions. OpenCV and numpy release the GIL while they decode, so a thread
that reads ahead takes that time off the loop that feeds the device.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often a blocked producer checks whether the consumer has gone


def read_ahead(items: Iterable[T], depth: int = 4) -> Iterator[T]:
  """Yields `items` in order, produced by a thread that stays at most `depth` items ahead (a few
  frames are enough to cover the jitter of decoding; a VSPW frame and label take ~1.6 MB).

  An exception raised while producing an item is raised here, in the consumer, at that item's
  place. Closing the returned generator early (a `break`, an error in the consumer) stops the
  thread before returning, so no thread outlives the loop that used it.
  """
  if depth < 1:
    raise ValueError(f"read_ahead depth must be >= 1, got {depth}")
  buffer: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()

  def put(entry) -> bool:
    while not stop.is_set():
      try:
        buffer.put(entry, timeout=_POLL_S)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in items:
        if not put((True, item)):
          return
      put((False, None))
    except BaseException as e:  # pylint: disable=broad-except  # re-raised in the consumer
      put((False, e))

  thread = threading.Thread(target=produce, name="read_ahead", daemon=True)
  thread.start()
  try:
    while True:
      is_item, value = buffer.get()
      if not is_item:
        if value is not None:
          raise value
        return
      yield value
  finally:
    stop.set()
    thread.join()
