"""Multi-host start, device mesh, shardings, and process-local batches -> global jax.Arrays.

One place decides how arrays are laid out over devices, so that the train step, the checkpoint
restore target and the data path always agree:

- the mesh has a `data` axis and an `fsdp` axis (size 1 unless configured); the batch is split over
  both, as FSDP is data parallelism whose parameters are also split;
- parameters and optimizer state follow regex rules over their '/'-joined paths: `replicate`, or
  `fsdp` (split the largest dimension divisible by the fsdp axis size). The default is replicated.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
import importlib.util
import math
import os
import re
import threading
from typing import Any, Callable, Iterator, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from vssjax.errors import SetupError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)

T = TypeVar("T")  # an item devices share out (a video)
V = TypeVar("V")  # a device's copy of the variables
R = TypeVar("R")  # what a device makes of an item, or of its share


def _cluster_detected() -> bool:
  """True when a launcher or scheduler says this process is one of several."""
  env = os.environ
  return (bool(env.get("JAX_COORDINATOR_ADDRESS")) or "," in env.get("TPU_WORKER_HOSTNAMES", "")
          or int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


def _on_a_cloud_tpu_vm() -> bool:
  """Whether libtpu is installed, as on a Cloud TPU VM: no environment variable there says whether
  the VM is one worker of a pod slice (JAX reads it from the VM's metadata server), so only JAX's
  own detection can tell."""
  return importlib.util.find_spec("libtpu") is not None


def initialize_distributed(mode: str = "auto", *, preemption_service: bool = True) -> None:
  """Starts JAX's multi-controller runtime: 'on', 'off', or 'auto' (when a cluster is detected).

  On TPU pods, SLURM and Open MPI, JAX finds the coordinator itself. On bare hosts set
  JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process.
  Must run before anything touches a device. 'auto' on a Cloud TPU VM asks JAX's detection (a pod
  slice's workers run as several processes even without the runtime, but with no preemption
  service: SIGTERM killed them without a checkpoint); where it finds none, one process runs alone.

  `preemption_service`: JAX's service catches SIGTERM so that training stops at a step every
  process agrees on (`train.preemption`). A mode with nothing to save (evaluation, inference)
  turns it off: the service would swallow the signal, and the job would run on until the
  scheduler's SIGKILL; without it SIGTERM ends the process at once.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"--distributed must be auto, on or off, got {mode!r}")
  if mode == "off" or jax.distributed.is_initialized():
    return
  named_by_a_launcher = mode == "on" or _cluster_detected()
  if not named_by_a_launcher and not _on_a_cloud_tpu_vm():
    return
  jax.config.update("jax_enable_preemption_service", preemption_service)
  kwargs = {}
  if os.environ.get("JAX_NUM_PROCESSES"):
    if "JAX_PROCESS_ID" not in os.environ:
      raise SetupError("JAX_NUM_PROCESSES is set but JAX_PROCESS_ID is not: set both (and "
                       "JAX_COORDINATOR_ADDRESS) for each process, or neither")
    kwargs.update(num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as error:  # JAX's: no cluster detected and no coordinator or process given
    if not named_by_a_launcher:
      return  # a TPU VM of its own
    raise SetupError(
        f"--distributed={mode}: JAX found no cluster to join: {error} On a bare host set "
        "JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID for every "
        "process (TPU pods, SLURM and Open MPI are detected); --distributed=off runs one "
        "process") from error


# The platform whose programs are being built when it is not this process's (`compiling_for`).
_TARGET_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "target_platform", default=None)


def target_platform() -> str:
  """The platform ('cpu', 'gpu', 'tpu') the programs being built will run on: this process's
  (`jax.default_backend()`), or the one `compiling_for` names. What a method picks by platform
  (`model.dwconv_impl='auto'`, the cuDNN attention's check) reads it, so that a program compiled
  for devices this machine lacks (`vssjax.aot`) is the one those devices would run."""
  return _TARGET_PLATFORM.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(platform: str) -> Iterator[None]:
  """Within it, `target_platform()` is `platform`."""
  token = _TARGET_PLATFORM.set(platform)
  try:
    yield
  finally:
    _TARGET_PLATFORM.reset(token)


def computes_off_the_host() -> bool:
  """Whether JAX computes on an accelerator (GPU, TPU) rather than on the host's CPU cores.

  Host threads that work beside the device (decoding frames ahead) pay only then: on the CPU
  backend XLA's threads already use every core, and handing frames between threads only costs
  (docs/benchmarks.md, "Evaluation and inference").
  """
  return jax.default_backend() != "cpu"


def make_mesh(data: int = -1, fsdp: int = 1,
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A (data, fsdp) mesh; `data=-1` takes every device the fsdp axis leaves. `Auto` axes (GSPMD)."""
  devices = list(devices if devices is not None else jax.devices())
  if fsdp < 1:
    raise SetupError(f"mesh.fsdp={fsdp}: an axis has at least 1 device")
  if data < 1 and data != -1:
    raise SetupError(f"mesh.data={data}: an axis has at least 1 device (-1: every device that "
                     "mesh.fsdp leaves)")
  if fsdp > len(devices):
    raise SetupError(f"mesh.fsdp={fsdp} needs more than the {len(devices)} devices")
  if len(devices) % fsdp:
    raise SetupError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} devices")
  data = len(devices) // fsdp if data == -1 else data
  if data * fsdp > len(devices):
    raise SetupError(f"mesh.data={data} x mesh.fsdp={fsdp} needs more than the {len(devices)} "
                     "devices")
  if data * fsdp < len(devices) and jax.process_count() > 1:
    # Each process loads 1/process_count of the batch: one with no device in the mesh would have
    # its rows dropped from the global batch.
    raise SetupError(f"mesh.data={data} x mesh.fsdp={fsdp} uses {data * fsdp} of the "
                     f"{len(devices)} devices, and with {jax.process_count()} processes the mesh "
                     "must take them all: leave mesh.data at -1")
  return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2,
                       devices=devices[: data * fsdp])


def mesh_from_config(config) -> jax.sharding.Mesh:
  return make_mesh(config.mesh.data, config.mesh.fsdp)


def batch_shards() -> int:
  """Into how many pieces the program being traced splits its batch: the batch axes' size of the
  mesh it is traced under (`jax.sharding.use_abstract_mesh`, as the train step is), 1 outside
  one. Lets a loss take its samples in rounds of one per device (`rounds.mean_in_rounds`)."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty else math.prod(mesh.shape.get(axis, 1) for axis in BATCH_AXES)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device of the mesh; the other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh) -> int:
  """Fails early, naming the numbers, when the batch cannot be split evenly; returns the rows
  each process loads."""
  devices = mesh.devices.size
  if global_batch < 1:
    raise SetupError(f"data.batch_size={global_batch}: a batch needs at least one clip")
  if global_batch % devices:
    multiple = -(-global_batch // devices) * devices
    fewer = (" or, in one process, fewer devices (--config.mesh.data=N, N x mesh.fsdp dividing "
             "it)" if jax.process_count() == 1 else "")
    raise SetupError(
        f"data.batch_size={global_batch} is not divisible by the {devices} devices of the mesh "
        f"{dict(mesh.shape)}: take a multiple of {devices} (--config.data.batch_size={multiple})"
        f"{fewer}")
  return per_process_batch_size(global_batch, jax.process_count())


def per_process_batch_size(global_batch: int, processes: int) -> int:
  """The rows of the global batch each of `processes` loads; a `SetupError` where they cannot be
  equal. Checked here for training and the bench, and by the train loader, which is also built
  alone (`data_pipelines.bench`), for its shards."""
  if global_batch % processes:
    raise SetupError(
        f"data.batch_size={global_batch} is not divisible by the {processes} processes")
  return global_batch // processes


def path_name(path) -> str:
  """A `tree_map_with_path` key path as the '/'-joined name regex rules match: dict keys,
  attribute names and sequence indices bare (`a/b/0` for `{'a': {'b': [x]}}`). Shared with the
  optimizer's parameter groups, so one pattern names the same leaves in both kinds of rule."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _fsdp_spec(shape: tuple[int, ...], size: int) -> P:
  """Splits the largest dimension divisible by `size`; replicates when none is."""
  candidates = [(d, i) for i, d in enumerate(shape) if d % size == 0 and d >= size]
  if size == 1 or not candidates:
    return P()
  _, axis = max(candidates)
  return P(*([None] * axis + [FSDP_AXIS]))


def checked_sharding_rules(rules: Sequence[Any]) -> list[tuple[re.Pattern, str]]:
  """`(regex, 'replicate'|'fsdp')` rules, their patterns compiled; a rule of another form (a flat
  pair, `--config.sharding_rules='(("kernel$", "fsdp"))'` without its trailing comma), pattern or
  kind is a SetupError naming it. Checked before the run loads anything, and where applied."""
  checked = []
  for rule in rules:
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2
            and all(isinstance(part, str) for part in rule)):
      raise SetupError(f"sharding_rules: {rule!r} is not a (regex, kind) pair of strings; a tuple "
                       "of one rule needs its trailing comma: '((\"kernel$\", \"fsdp\"),)'")
    pattern, kind = rule
    try:
      compiled = re.compile(pattern)
    except re.error as error:
      raise SetupError(f"sharding_rules: rule ({pattern!r}, {kind!r}): not a regular expression "
                       f"({error})") from None
    if kind not in ("replicate", "fsdp"):
      raise SetupError(f"sharding_rules: rule ({pattern!r}, {kind!r}): the kind must be "
                       "'replicate' or 'fsdp'")
    checked.append((compiled, kind))
  return checked


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh,
                    rules: Sequence[tuple[str, str]] = ()) -> Any:
  """Shardings for a train-state pytree from `(regex, 'replicate'|'fsdp')` rules, first match wins.

  A rule of another kind, or whose pattern matches no path of the state (a misspelt pattern would
  otherwise leave everything replicated without a word), is a SetupError naming it.
  """
  compiled = checked_sharding_rules(rules)
  names = [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(abstract_state)[0]]
  for pattern, kind in compiled:
    if not any(pattern.search(name) for name in names):
      example = next((name for name in names if name.startswith("params/")),
                     names[0] if names else None)
      raise SetupError(f"sharding_rules: rule ({pattern.pattern!r}, {kind!r}) matches no path of "
                       "the train state " + (f"(such as {example!r}; paths are '/'-joined)"
                                             if example else "(it has none)"))

  def sharding(path, leaf):
    name = path_name(path)
    kind = next((k for pattern, k in compiled if pattern.search(name)), "replicate")
    spec = _fsdp_spec(tuple(leaf.shape), mesh.shape[FSDP_AXIS]) if kind == "fsdp" else P()
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def _same(tree: Any) -> Any:
  """The identity, jitted with replicated out_shardings by `local_copies` to gather arrays."""
  return tree


def prediction_devices(count: int) -> list[jax.Device]:
  """The local devices that evaluation predicts on, each its own videos (`eval.devices`): the
  first `count` of this process's devices, or with 0 every one of them on an accelerator and one
  on the CPU backend, whose devices share the same cores (XLA:CPU already uses them all)."""
  local = jax.local_devices()
  if count < 0 or count > len(local):
    raise SetupError(f"eval.devices={count}: 0 (every local accelerator, one CPU device) or 1 to "
                     f"{len(local)}, the devices of this process")
  if count == 0:
    return local if computes_off_the_host() else local[:1]
  return local[:count]


def local_copies(tree: Any, devices: Sequence[jax.Device]) -> list[Any]:
  """One copy of `tree` per device of `devices` (this process's), its arrays whole on that device.

  Evaluation and inference are not SPMD: each device of each process predicts its own videos,
  frame by frame, each a different number of frames. Programs over the train state's global
  arrays would run across devices: replicated parameters make every device compute the same frame,
  and with parameters split over an fsdp axis that crosses processes, XLA splits the forward pass
  with them and gathers activations computed from the other process's frame (silently wrong
  predictions), or waits forever in a collective the other process, done with its videos, never
  joins. A whole copy on each device keeps every prediction on it. Split arrays are gathered in
  one program, collective where they span processes: every process calls this together.
  Replicated arrays give each device the replica it already holds.
  """
  leaves, treedef = jax.tree.flatten(tree)
  split = [i for i, x in enumerate(leaves)
           if isinstance(x, jax.Array) and not x.is_fully_replicated]
  whole = list(leaves)
  if split:
    mesh = leaves[split[0]].sharding.mesh
    gathered = jax.jit(_same, out_shardings=replicated(mesh))([leaves[i] for i in split])
    for i, x in zip(split, gathered):
      whole[i] = x

  def on(device: jax.Device, x: Any) -> Any:
    if isinstance(x, jax.Array):
      held = next((s.data for s in x.addressable_shards if s.device == device), None)
      if held is not None:
        return held
    return jax.device_put(x, device)

  return [treedef.unflatten([on(device, x) for x in whole]) for device in devices]


def share_over_devices(items: Sequence[T], copies: Sequence[V],
                       work: Callable[[int, list[T], V], R], failed: threading.Event) -> list[R]:
  """Device k of K (`copies[k]`, its copy of the variables, `local_copies`) takes items k, k + K,
  ...: returns `work(k, items[k::K], copies[k])` of each device that has an item (fewer items than
  devices leave the others idle), in device order, each in a thread of its own
  (`_run_per_device`). `work` checks `failed` before each item: a failing device sets it, so the
  others stop before their next item, and its error is raised once all ended."""
  shares = [(k, items[k::len(copies)]) for k in range(len(copies))]
  return _run_per_device([functools.partial(work, k, share, copies[k])
                          for k, share in shares if share], failed)


def map_over_devices(items: Sequence[T], copies: Sequence[V], fn: Callable[[T, V], R], *,
                     failed: threading.Event | None = None, ahead: Callable | None = None
                     ) -> list[R]:
  """`fn(item, copy)` of every item, in the items' order: device k of K (`copies[k]`) takes items
  k, k + K, ... one after another (`share_over_devices`). A failing device sets `failed` (a fresh
  event unless given), which stops the others before their next item, and its error is raised.
  `ahead(share, copy)`, if given, makes each device a context manager whose `wait_for(i)` the
  device awaits before its i-th item (`vssjax.eval.compile_ahead.CompileAhead`)."""
  failed = threading.Event() if failed is None else failed

  def work(_: int, share: list[T], copy: V) -> list[R]:
    done = []
    with contextlib.nullcontext() if ahead is None else ahead(share, copy) as waits:
      for index, item in enumerate(share):
        if failed.is_set():
          break
        if waits is not None:
          waits.wait_for(index)
        done.append(fn(item, copy))
    return done

  shares = share_over_devices(items, copies, work, failed)
  return [shares[i % len(copies)][i // len(copies)] for i in range(len(items))]


def _run_per_device(calls: Sequence[Callable[[], Any]], failed: threading.Event) -> list[Any]:
  """The calls' results, each call (one device's share of the videos) in a thread of its own, or
  in this thread when there is one: JAX releases the interpreter while a device computes, so each
  device predicts while the other threads feed theirs. A failure sets `failed`, which the others
  check before their next video, and is raised (the first in the calls' order) once all ended."""
  if len(calls) <= 1:
    return [call() for call in calls]

  def guarded(call):
    try:
      return call()
    except BaseException:
      failed.set()
      raise

  with concurrent.futures.ThreadPoolExecutor(len(calls), "predict_device") as pool:
    futures = [pool.submit(guarded, call) for call in calls]
    return [future.result() for future in futures]


def to_global(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Each process contributes its local rows; the result is one global array per key."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
