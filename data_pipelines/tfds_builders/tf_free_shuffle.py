"""Lets TFDS's writer shuffle a split larger than its memory buffer without TensorFlow.

TFDS keeps a split's serialized records in memory until they pass 1 GB
(`tensorflow_datasets.core.shuffle.MAX_MEM_BUFFER_SIZE`), then spills them into temporary bucket
files through `tf.io.gfile`, importing TensorFlow, which this project does not install: VSPW's and
Cityscapes' train splits (tens of GB) failed there with "No module named 'tensorflow'". Those
bucket files are local temporary files, so the three `tf.io.gfile` calls the shuffler makes are
served here by plain file I/O (`etils.epath`); the record order and bytes are TFDS's own.
"""
from __future__ import annotations

import contextlib
import errno
import importlib.util
import types
from collections.abc import Iterator
from unittest import mock

from etils import epath
from tensorflow_datasets.core import shuffle


class _NeverRaised(Exception):
  """Stands in for `tf.errors.ResourceExhaustedError`, which the shuffler catches around a write:
  plain files report "too many open files" when they are opened (`_open`), not as that error."""


def _open(path, mode: str):
  """`tf.io.gfile.GFile(path, mode)`; on "too many open files" (the shuffler keeps up to 1000
  buckets open) raises the soft limit as TFDS does and tries once more."""
  try:
    return epath.Path(path).open(mode)
  except OSError as error:
    if error.errno != errno.EMFILE:
      raise
    shuffle._increase_open_files_limit()  # pylint: disable=protected-access
    return epath.Path(path).open(mode)


_TF_FOR_THE_SHUFFLER = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(
        GFile=_open,
        exists=lambda path: epath.Path(path).exists(),
        remove=lambda path: epath.Path(path).unlink())),
    errors=types.SimpleNamespace(ResourceExhaustedError=_NeverRaised))


@contextlib.contextmanager
def shuffler_without_tensorflow() -> Iterator[None]:
  """Within it, TFDS's shuffler spills to local files without TensorFlow (if TensorFlow is
  installed, TFDS keeps using it)."""
  if importlib.util.find_spec("tensorflow") is not None:
    yield
    return
  with mock.patch.object(shuffle, "tf", _TF_FOR_THE_SHUFFLER):
    yield
