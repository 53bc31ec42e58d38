"""Shared test set-up: CPU only, 4 fake devices for sharding tests, fast compiles, grain's absl-flag
workaround."""
import atexit
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Compile settings go through the environment so that the CLI tests' child processes inherit them.
# The end-to-end tests compile the same small programs many times (each run, resume and restore, in
# this process and in children); a persistent compilation cache, fresh per test session, compiles
# each of them once. Its key includes the compile options, hence the shared settings. The process
# that starts the session makes it and removes it when the session ends; xdist's workers inherit it
# through the environment, so a program that tests on both workers compile is compiled once.
if "VSSJAX_TEST_COMPILATION_CACHE" not in os.environ:
  os.environ["VSSJAX_TEST_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="vssjax-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["VSSJAX_TEST_COMPILATION_CACHE"], ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["VSSJAX_TEST_COMPILATION_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
# Tests run tiny models: compile time dominates, so trade run-time optimisation for compile speed.
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"


def _use_legacy_cpu_emitters() -> None:
  """XLA:CPU's fusion emitters take ~40% longer to compile a small program than its older LLVM
  emitters (an eager op: 45 vs 27 ms; the quick config's first train-and-evaluate: 53 vs 34 s on
  jaxlib 0.10.2), and this suite compiles thousands. Only the machine code differs: the programs
  (our HLO) are the same, and users' runs keep XLA's default (the suite passes with both). Newer
  jaxlibs (0.11.2) dropped the flag and abort on an unknown one, hence a probe in a child process,
  done once: xdist's workers inherit the outcome through the environment, as do the CLI tests'
  children."""
  if "VSSJAX_TEST_XLA_PROBED" in os.environ:
    return
  flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""),
                                 "--xla_cpu_use_fusion_emitters=false"]))
  probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices('cpu')"],
                         env=dict(os.environ, XLA_FLAGS=flags), capture_output=True, check=False)
  if probe.returncode == 0:
    os.environ["XLA_FLAGS"] = flags
  os.environ["VSSJAX_TEST_XLA_PROBED"] = "1"


_use_legacy_cpu_emitters()

import jax  # noqa: E402

# Must happen before any JAX computation: sharding tests use a 4-device mesh (this process only).
jax.config.update("jax_num_cpu_devices", 4)


def _keep_compiled_programs_in_memory(capacity: int = 64) -> None:
  """Keeps the last `capacity` programs this process compiled or read from the persistent cache,
  by that cache's key. A test file compiles the same programs again and again (each training run,
  resume and evaluation makes its jitted functions anew): the persistent cache then compiles
  nothing, but reading a program back costs more than most compiles (XLA:CPU deserialises it:
  0.45 s on average for the 65 reads of tests/train/test_loop.py, against 0.32 s for its 110
  compiles; jaxlib 0.10.2). A kept program is the same executable JAX made for the same key, as an
  in-process jit cache would return it. This hooks JAX's private `compilation_cache` functions;
  where their names differ (another jax) the suite runs without it, only slower."""
  from jax._src import compilation_cache  # pylint: disable=g-import-not-at-top
  read = getattr(compilation_cache, "get_executable_and_time", None)
  write = getattr(compilation_cache, "put_executable_and_time", None)
  if read is None or write is None:
    return
  kept = collections.OrderedDict()
  lock = threading.Lock()  # evaluations compile on several threads

  def keep(key, executable_and_time):
    with lock:
      kept[key] = executable_and_time
      if len(kept) > capacity:
        kept.popitem(last=False)

  def read_kept(cache_key, *args, **kwargs):
    host_callbacks = kwargs.get("host_callbacks", args[3] if len(args) > 3 else ())
    if host_callbacks:  # jax 0.11 binds a program's Python callbacks as it loads it: not reused
      return read(cache_key, *args, **kwargs)
    with lock:
      if cache_key in kept:
        kept.move_to_end(cache_key)
        return kept[cache_key]
    executable_and_time = read(cache_key, *args, **kwargs)
    if executable_and_time[0] is not None:
      keep(cache_key, executable_and_time)
    return executable_and_time

  def write_kept(cache_key, module_name, executable, backend, compile_time, *args, **kwargs):
    write(cache_key, module_name, executable, backend, compile_time, *args, **kwargs)
    keep(cache_key, (executable, compile_time))

  compilation_cache.get_executable_and_time = read_kept
  compilation_cache.put_executable_and_time = write_kept


_keep_compiled_programs_in_memory()

from absl import flags  # noqa: E402

# grain 0.2.18 reads absl flags in mp_prefetch (google/grain#1355); pytest never parses them.
flags.FLAGS.mark_as_parsed()

import pathlib  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import pytest  # noqa: E402

from vssjax import configs_lib, parallel  # noqa: E402
from vssjax.methods.segformer import build_segformer  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(path: str, arg: str | None = None):
  """Loads `configs/...py` the way `--config=path:arg` does."""
  return configs_lib.load_config_file(str(REPO / path) + (f":{arg}" if arg else ""))


def random_clip_batch(shape: tuple[int, int, int, int], num_classes: int, seed: int = 0) -> dict:
  """A random training batch of clips `shape` = (B, T, H, W): uint8 frames and labels in
  [0, num_classes), with the top 20 rows ignored (255) so that the ignore path is exercised."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, shape).astype(np.int32)
  labels[:, :, :20] = 255
  return {"frames": jnp.asarray(rng.integers(0, 256, shape + (3,)), jnp.uint8),
          "labels": jnp.asarray(labels)}


def random_config_batch(config, seed: int = 0) -> dict:
  """A random training batch of `config`'s shapes (`loop.batch_spec`): uint8 frames, labels of
  the synthetic set's 9 classes, every frame labelled, and random flow where the method takes
  one (ETC)."""
  from vssjax.train.loop import batch_spec  # pylint: disable=g-import-not-at-top
  spec = batch_spec(config)
  rng = np.random.default_rng(seed)
  batch = {"frames": rng.integers(0, 256, spec["frames"].shape, np.uint8),
           "labels": rng.integers(0, 9, spec["labels"].shape).astype(np.int32),
           "labeled": np.ones(spec["labeled"].shape, bool)}
  if "flow" in spec:
    batch["flow"] = rng.normal(0.0, 2.0, spec["flow"].shape).astype(np.float32)
  return batch


def collectives(compiled) -> list[tuple[str, tuple[str, ...]]]:
  """(operation, its results' shapes) of each cross-device operation of a compiled program: what
  a batch-split program moves between its devices. XLA combines some into one with a tuple of
  results, `(f32[], f32[])`."""
  found = re.findall(r"= (\([^()]*\)|\S+) (all-gather|all-reduce|all-to-all|collective-permute|"
                     r"reduce-scatter)(?:-start)?\(", compiled.as_text())
  return [(op, tuple(re.findall(r"\w+\[[\d,]*\]", shapes))) for shapes, op in found]


def assert_each_gradient_close(got, expected, rtol: float, noise: float) -> None:
  """Each leaf of the gradient tree `got` within `rtol` of `expected`'s, compared as a whole (the
  norm of the difference), plus `noise` times the largest leaf's norm. A gradient of a network with
  small BatchNorm batches is ill-conditioned: parameters changed by a float32 rounding (1e-7
  relative) move each leaf of DCFM's quick gradient by ~1e-4 of its norm, and single elements by
  more, so two programs that sum in another order differ as much. A leaf whose true gradient is zero
  (a bias before a BatchNorm) holds only such noise, which `noise` bounds against the largest."""
  largest = max(float(np.linalg.norm(e)) for e in jax.tree.leaves(expected))
  for (path, e), g in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(got)):
    assert np.linalg.norm(g - e) <= rtol * np.linalg.norm(e) + noise * largest, path


def split_over_two_devices(fn, args: tuple, split: tuple[int, ...]):
  """`fn(*args)` with the arguments at positions `split` split over 2 of the fake devices along
  their batch axis (the others replicated), traced under that mesh as the train step traces a
  loss, and again whole on one device. Returns (the split program's `collectives`, its outputs,
  the whole program's outputs)."""
  mesh = parallel.make_mesh(2, 1)

  def under_mesh(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)

  shardings = tuple(parallel.batch_sharding(mesh) if i in split else parallel.replicated(mesh)
                    for i in range(len(args)))
  program = jax.jit(under_mesh, in_shardings=shardings, out_shardings=parallel.replicated(mesh))
  return collectives(program.lower(*args).compile()), program(*args), jax.jit(fn)(*args)


def method_segformer(variant: str, num_classes: int, decoder_dim: int, **fields):
  """SegFormer-`variant` as `SegFormerMethod` builds it (`build_segformer` on a config's `model`
  section), so that the shape, converter and parity tests check the model training runs. MiT
  shape overrides (`embed_dims`, `depths`, `num_heads`) go to `model.backbone_overrides`, other
  `fields` (`drop_path_rate`, ...) to `model`."""
  model = configs_lib.base_config().model.lock()  # a misspelt field is an error
  model.update(backbone=variant, decoder_dim=decoder_dim)
  for name, value in fields.items():
    (model.backbone_overrides if name in model.backbone_overrides else model)[name] = value
  return build_segformer(model, num_classes)


def random_model_variables(model, images):
  """Random variables of `model` applied to `images`, of the right shapes without compiling
  `init` (7 s here even when tiny).

  Weights ~ N(0, 1/fan_in), vectors (biases, norm scales, BN statistics) ~ 1 + N(0, 0.1^2).
  """
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  rng = np.random.default_rng(0)

  def draw(leaf):
    if len(leaf.shape) == 1:
      return 1.0 + 0.1 * rng.standard_normal(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in)

  return jax.tree.map(draw, abstract)


SYNTHETIC_CLASSES = 9  # the quick synthetic videos' classes


def brightness_labels(frame: np.ndarray) -> np.ndarray:
  """A deterministic 'segmentation' of a frame by brightness (it moves with the scene): a
  predictor's answer whose scores a test can compute by hand."""
  return np.minimum(frame.astype(np.int32).sum(-1) // 86, SYNTHETIC_CLASSES - 1)


@contextlib.contextmanager
def traced_functions(log: list):
  """Appends (thread's name, function's name) to `log` for each function JAX traces meanwhile."""

  def listener(event, seconds, **kwargs):
    if event == "/jax/core/compile/jaxpr_trace_duration":
      log.append((threading.current_thread().name, kwargs.get("fun_name")))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield log
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


class _RecordingExecutable:
  """A compiled program that appends the part of the variables it is given at each call."""

  def __init__(self, executable, parts: list):
    self._executable, self._parts = executable, parts
    self.input_formats = executable.input_formats

  def __call__(self, part, *args):
    self._parts.append(part)
    return self._executable(part, *args)


def record_parts(monkeypatch, program) -> list:
  """The part of the variables that `program` (a `ProgramOnPart`) is given at each call a
  predictor makes of it (`ProgramOnPart.bound`), appended to the list returned."""
  parts: list = []
  compiled = program.compiled
  monkeypatch.setattr(program, "compiled", lambda part, *args: _RecordingExecutable(
      compiled(part, *args), parts))
  return parts


def slow_down(monkeypatch, module, name: str, seconds: float) -> None:
  """`module.<name>` waits `seconds` before each call: a compile-ahead warm-up as long as a GPU's
  compile, which outlasts the videos before it."""
  fn = getattr(module, name)

  def slowed(*args, **kwargs):
    time.sleep(seconds)
    return fn(*args, **kwargs)

  monkeypatch.setattr(module, name, slowed)


def assert_later_sizes_traced_ahead(log: list, second_video: str, later_sizes: int) -> None:
  """`log` of a run that compiled ahead (`traced_functions`, with a ("predict", video) entry as
  each video starts): nothing traced on the main thread from `second_video` on, and the
  compile-ahead thread traced the forward and the label upsampling of each later size as often as
  the main thread did for the first video's size (the forward for the part of the variables it
  reads, then jitted)."""
  second = log.index(("predict", second_video))
  assert not [entry for entry in log[second:] if entry[0] == "MainThread"], log
  first = [name for thread, name in log[:second] if thread == "MainThread"]
  ahead = [name for thread, name in log if thread == "eval_compile_ahead"]
  for name in ("_predict_logits_impl", "_one_frame_labels"):
    assert ahead.count(name) == later_sizes * first.count(name) > 0, log


def logged_losses(workdir) -> dict[int, float]:
  """The loss of each step a run logged in `workdir/metrics.jsonl`."""
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {record["step"]: record["loss"] for record in map(json.loads, lines)}


class FakeClock:
  """Stands in for `time` (its `perf_counter`) where a test times something: it moves only as
  the test moves it (`sleep`, or `now` set), so the timings are exact whatever else the machine
  runs (real sleeps overshoot on a loaded 2-core CI)."""

  def __init__(self):
    self.now = 0.0

  def perf_counter(self) -> float:
    return self.now

  def sleep(self, seconds: float) -> None:
    self.now += seconds


class SkippingClock(FakeClock):
  """Real time plus the seconds a test `sleep`s, which pass at once: stands in for `time` where
  code measures intervals between real events (a training loop's steps) and a test makes one of
  them long (a slow save, a slow batch) without waiting for it."""

  def perf_counter(self) -> float:
    return time.perf_counter() + self.now


@pytest.fixture(name="skipping_clock")
def fixture_skipping_clock(monkeypatch) -> SkippingClock:
  """The training loop's and its log lines' clock, a `SkippingClock`."""
  from vssjax.train import log_lines, loop  # pylint: disable=import-outside-toplevel
  clock = SkippingClock()
  monkeypatch.setattr(loop, "time", clock)
  monkeypatch.setattr(log_lines, "time", clock)
  return clock


class OneSizePredictor:
  """A clip method's predictor as far as frame sizes go: every frame joins the ones before it, so
  a frame of another size than the first is an error. Frame i's label map: `labels_of(frame, i)`."""

  def __init__(self, labels_of):
    self._labels_of, self._shape, self._index = labels_of, None, 0

  def push(self, frame):
    if self._shape not in (None, frame.shape):
      raise ValueError(f"frame of {frame.shape} in a video of {self._shape}")
    self._shape, self._index = frame.shape, self._index + 1
    return [(self._index - 1, self._labels_of(frame, self._index - 1))]

  def flush(self):
    return []


def assert_kept_states_predict_the_clip(method, variables, size=(64, 64)) -> None:
  """A streaming clip method (DTERN, SD-CPC) in eval mode: the logits from each frame's kept
  `encode_frame` state equal the whole 4-frame clip of `size` frames through the network."""
  frames = np.random.default_rng(5).integers(0, 256, (1, 4) + tuple(size) + (3,), dtype=np.uint8)
  states = [method.encode_frame(variables, frames[:, i]) for i in range(4)]
  np.testing.assert_allclose(method.decode_states(variables, states[-1][0],
                                                  [reference for _, reference in states]),
                             method.clip_logits(variables, frames), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
  """One TFDS data_dir shared by the end-to-end tests (the quick synthetic set is built on
  demand)."""
  return str(tmp_path_factory.mktemp("tfds"))


def quick_config_reading(data_dir: str):
  """The SegFormer quick config, reading the synthetic ArrayRecord set from `data_dir`."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.data_dir = data_dir
  return config


@pytest.fixture
def quick_config(synthetic_data_dir):
  """The SegFormer quick config, reading the synthetic ArrayRecord set from the shared data_dir."""
  return quick_config_reading(synthetic_data_dir)


@pytest.fixture
def ctrl_c_interrupts():
  """SIGINT as in a terminal, whatever this test process inherited (a background job's shell
  ignores it); restored afterwards."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


VTEST_CACHE = pathlib.Path(os.environ.get("VSSJAX_CACHE", "~/.cache/vssjax")).expanduser()
# Frames of `real_video_clip`: its tests need a video and its frame pairs, not length; each frame
# costs a 768x576 prediction, and in the TC test two optical flows and warps.
REAL_CLIP_FRAMES = 12


@pytest.fixture(scope="session")
def real_video_clip(tmp_path_factory):
  """The first `REAL_CLIP_FRAMES` frames of OpenCV's real campus footage vtest.avi (Debian
  opencv-doc), as MP4.

  Fetched once into ~/.cache/vssjax with apt-get (a package registry, reachable from CI); never
  committed. A failed fetch fails the tests that need it: real footage is part of the contract.
  """
  import cv2  # pylint: disable=import-outside-toplevel

  video = VTEST_CACHE / "vtest.avi"
  if not video.exists():
    VTEST_CACHE.mkdir(parents=True, exist_ok=True)
    work = tmp_path_factory.mktemp("opencv-doc")
    subprocess.run(["apt-get", "download", "opencv-doc"], cwd=work, check=True,
                   capture_output=True, timeout=300)
    deb = next(work.glob("opencv-doc_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
    next((work / "x").rglob("vtest.avi")).rename(video)
  capture = cv2.VideoCapture(str(video))
  clip = tmp_path_factory.mktemp("real") / "vtest_start.mp4"
  writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (768, 576))
  for _ in range(REAL_CLIP_FRAMES):
    ok, frame = capture.read()
    assert ok, f"cannot decode {video}"
    writer.write(frame)
  writer.release()
  capture.release()
  return clip
