"""Reads PyTorch-world checkpoint files into a flat `dict[str, np.ndarray]` state_dict.

Handles what released segmentation weights come as:
- `.safetensors` (HF `save_pretrained`), read with the safetensors numpy API: no torch needed;
- `.pth` / `.pt` / `.bin` pickles (mmcv/mmseg releases, `torch.save(model.state_dict())`, HF
  `pytorch_model.bin`), read with `torch.load(map_location='cpu')`;
- a directory written by `save_pretrained` (its `model.safetensors` or `pytorch_model.bin`).

Wrappers are peeled off: mmcv's `{'meta', 'state_dict', 'optimizer'}` (and `{'model': ...}`), a
whole pickled `nn.Module` (its `state_dict()`), the `module.` prefix that DistributedDataParallel
adds to every key, and a distillation training wrapper around its `student.` (`take_student`).

`torch.load` runs with `weights_only=True` by default: unpickling arbitrary objects executes code,
so a file from the internet is only fully unpickled when the caller says it trusts it
(`allow_pickle=True`); mmcv `meta` entries sometimes need that, and so does a whole model.
"""
from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from vssjax.convert.common import StateDict
from vssjax.errors import SetupError

_WRAPPER_KEYS = ("state_dict", "model")
_DDP_PREFIX = "module."
_STUDENT_PREFIX = "student."
_PRETRAINED_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointReadError(SetupError):
  """A checkpoint file could not be read; the message names the file and what to do."""


def load_state_dict(path: str | os.PathLike, *, allow_pickle: bool = False
                    ) -> dict[str, np.ndarray]:
  """The (unwrapped) state_dict stored at `path`, every tensor as a numpy array."""
  path = _resolve_file(os.fspath(path))
  if path.endswith(".safetensors"):
    raw = _load_safetensors(path)
  else:
    raw = _load_torch_pickle(path, allow_pickle)
  return take_student(strip_ddp_prefix(unwrap_checkpoint(raw, path)), path)


def _resolve_file(path: str) -> str:
  if not os.path.exists(path):
    raise CheckpointReadError(f"{path}: no such file or directory")
  if not os.path.isdir(path):
    return path
  for name in _PRETRAINED_FILES:
    candidate = os.path.join(path, name)
    if os.path.exists(candidate):
      return candidate
  raise CheckpointReadError(f"{path}: a directory without any of {list(_PRETRAINED_FILES)}")


def _load_safetensors(path: str) -> dict[str, Any]:
  """The numpy API needs no torch; bf16 files (numpy has no bf16) are read through torch."""
  try:
    from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
    from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise CheckpointReadError(
        f"{path}: reading .safetensors needs the 'safetensors' package (pip install "
        "safetensors)") from err
  try:
    return st_numpy.load_file(path)
  except TypeError as err:  # "data type 'bfloat16' not understood"
    try:
      from safetensors import torch as st_torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise CheckpointReadError(f"{path}: {err}; reading this dtype needs torch") from err
    return st_torch.load_file(path)
  except SafetensorError as err:  # its header: cut short (empty), or another format's bytes
    raise CheckpointReadError(
        f"{path}: not a readable .safetensors file ({err}): cut short by an interrupted download "
        "(fetch it again), or a file of another format under this name") from None


def _load_torch_pickle(path: str, allow_pickle: bool) -> Any:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise CheckpointReadError(
        f"{path}: reading a PyTorch pickle (.pth/.pt/.bin) needs torch (the CPU wheel is enough: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu); or convert the file "
        "to .safetensors elsewhere") from err
  _check_archive_crcs(path)
  try:
    return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
  except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... depending on version
    raise _pickle_error(path, err, allow_pickle) from err


def _check_archive_crcs(path: str) -> None:
  """Checks each member of a `torch.save` zip archive against its CRC-32, which torch does not:
  bytes flipped in a tensor's data (a damaged disk or copy) converted into wrong weights without a
  word. Reads the file once more: 0.10 s for a 320 MiB archive in the page cache on the 2-core
  CPU, where torch.load took 0.05 to 0.20 s (2026-12-07)."""
  if not zipfile.is_zipfile(path):
    return  # a legacy pickle, or not an archive: torch.load's error says which
  try:
    with zipfile.ZipFile(path) as archive:
      damaged = archive.testzip()
  except (zipfile.BadZipFile, OSError, EOFError):
    return  # an archive cut short: torch.load's failure names it (`_pickle_error`)
  if damaged is not None:
    raise CheckpointReadError(
        f"{path}: its entry {damaged} does not match its checksum, the file is damaged (a disk or "
        "copy error?): fetch it again")


# A file `torch.save` writes opens with a zip entry (its default since 1.6) or a pickle's PROTO
# opcode (the legacy format, and pickles of protocol 2+).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"
# What torch's weights-only unpickler says it refused: "Unsupported global: GLOBAL mmcv.Config ...".
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _pickle_error(path: str, err: Exception, allow_pickle: bool) -> CheckpointReadError:
  """Why torch.load failed, said in one line with what to do (torch's own message for a refused
  global is a dozen lines, with terminal escapes, about `torch.serialization` allowlists)."""
  head = _first_bytes(path, len(_ZIP_MAGIC))
  if not head:
    return CheckpointReadError(f"{path}: an empty file (0 bytes): an interrupted download or copy? "
                               "fetch it again")
  if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
    return CheckpointReadError(
        f"{path}: a torch.save archive cut short or damaged (an interrupted download or copy?): "
        "fetch it again")
  if not (zipfile.is_zipfile(path) or head.startswith(_PICKLE_PROTO)):
    return CheckpointReadError(
        f"{path}: not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle); "
        f"give a .pth/.pt/.bin, a .safetensors or a save_pretrained directory")
  if not allow_pickle and "weights only" in str(err).lower().replace("_", " "):
    refused = _REFUSED_GLOBAL.search(str(err))
    return CheckpointReadError(
        f"{path}: holds pickled Python objects besides tensors ("
        f"{f'here {refused.group(1)}; ' if refused else ''}mmcv metadata, or a whole model saved "
        "instead of its state_dict), which a weights-only load refuses. If you trust the file, "
        "unpickle it fully, which executes code stored in it: --allow_pickle (python -m "
        "vssjax.convert) or --config.init.allow_pickle=True (training)")
  return CheckpointReadError(f"{path}: torch.load failed: {err}")


def _first_bytes(path: str, count: int) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read(count)
  except OSError as err:
    raise CheckpointReadError(f"{path}: cannot be read ({err.strerror or err})") from None


def unwrap_checkpoint(checkpoint: Any, where: str = "checkpoint") -> dict[str, np.ndarray]:
  """Peels mmcv-style wrappers ({'meta', 'state_dict', ...}) and whole pickled models, and
  converts tensors to numpy."""
  checkpoint = _state_dict_of_model(checkpoint)
  while isinstance(checkpoint, Mapping):
    inner = next((value for value in map(_state_dict_of_model, map(checkpoint.get, _WRAPPER_KEYS))
                  if isinstance(value, Mapping)), None)
    if inner is None:
      break
    checkpoint = inner
  if not isinstance(checkpoint, Mapping):
    raise CheckpointReadError(f"{where}: expected a state_dict mapping, got {type(checkpoint)}")
  arrays = {}
  for key, value in checkpoint.items():
    array = _to_numpy(value)
    if array is None:
      raise CheckpointReadError(
          f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor (is this a "
          "state_dict?)")
    arrays[key] = array
  return arrays


def _state_dict_of_model(value: Any) -> Any:
  """The state_dict of a whole pickled `nn.Module` (`torch.save(model)`, alone or as a wrapper's
  'model', read with allow_pickle); anything else as it is."""
  state_dict = getattr(value, "state_dict", None)
  return state_dict() if callable(state_dict) and not isinstance(value, Mapping) else value


_HALF_FLOATS = ("bfloat16", "float16")


def _to_numpy(value: Any) -> np.ndarray | None:
  """A numpy array, half floats widened to float32 (exact) so every reader returns the same."""
  if isinstance(value, np.ndarray):  # safetensors' numpy API (bf16 via ml_dtypes once jax loaded)
    return value.astype(np.float32) if value.dtype.name in _HALF_FLOATS else value
  if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor (torch not imported)
    tensor = value.detach().cpu()
    if not tensor.dtype.is_floating_point or tensor.dtype.itemsize >= 4:
      return tensor.numpy()
    return tensor.float().numpy()  # torch cannot export bf16 to numpy
  return None


def strip_ddp_prefix(state_dict: StateDict) -> dict[str, np.ndarray]:
  """Drops the `module.` prefix DistributedDataParallel puts on every key (only if all have it)."""
  if state_dict and all(k.startswith(_DDP_PREFIX) for k in state_dict):
    return {k[len(_DDP_PREFIX):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def take_student(state_dict: StateDict, where: str = "checkpoint") -> dict[str, np.ndarray]:
  """The `student.` part of a distillation training wrapper's state_dict, else `state_dict`.

  ETC's training scripts save their wrapper (`FlowModel`, `Sd_model`): the PSPNet being trained
  under `student.`, beside the frozen FlowNet2 (`flownet.`), the teacher and the loss modules
  (`criterion.`). ETC's own fine-tuning loader takes the student's keys the same way; what is
  left out is said in one line.
  """
  if not any(k.startswith(_STUDENT_PREFIX) for k in state_dict):
    return dict(state_dict)
  student = {k[len(_STUDENT_PREFIX):]: v for k, v in state_dict.items()
             if k.startswith(_STUDENT_PREFIX)}
  others = sorted({k.split(".")[0] + "." for k in state_dict if not k.startswith(_STUDENT_PREFIX)})
  print(f"{where}: a training wrapper: converting its student ({len(student)} tensors)"
        + (f", leaving out {', '.join(others)} ({len(state_dict) - len(student)} tensors)"
           if others else ""), flush=True)
  return student
