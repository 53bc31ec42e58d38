"""read_ahead: same items in order, the producer's errors at their place, no thread left behind."""
import threading
import time

import pytest

from data_pipelines.read_ahead import read_ahead


def _read_ahead_threads():
  return [t for t in threading.enumerate() if t.name == "read_ahead"]


def test_yields_every_item_in_order_from_another_thread():
  producers = []

  def items():
    for i in range(20):
      producers.append(threading.current_thread())
      yield i

  assert list(read_ahead(items(), depth=3)) == list(range(20))
  assert set(producers) == {producers[0]} and producers[0] is not threading.current_thread()
  assert not _read_ahead_threads()


def test_stays_at_most_depth_items_ahead():
  produced = []

  def items():
    for i in range(100):
      produced.append(i)
      yield i

  stream = read_ahead(items(), depth=3)
  assert next(stream) == 0
  deadline = time.monotonic() + 30.0
  while len(produced) < 5 and time.monotonic() < deadline:  # the producer runs ahead...
    time.sleep(0.01)
  time.sleep(0.2)  # ...until the buffer is full: 1..3 buffered and 4 produced, waiting for room
  assert produced == list(range(5))
  stream.close()


def test_producer_error_is_raised_in_the_consumer_after_the_items_before_it():
  def items():
    yield "a"
    yield "b"
    raise OSError("frame 2 of video x is unreadable")

  received = []
  with pytest.raises(OSError, match="frame 2 of video x"):
    for item in read_ahead(items(), depth=4):
      received.append(item)
  assert received == ["a", "b"]
  assert not _read_ahead_threads()


def test_consumer_leaving_early_stops_the_producer():
  def endless():
    i = 0
    while True:
      yield i
      i += 1

  for i in read_ahead(endless(), depth=2):
    if i == 5:
      break
  assert not _read_ahead_threads()


def test_rejects_a_depth_below_one():
  with pytest.raises(ValueError, match="depth"):
    list(read_ahead(iter([1]), depth=0))
