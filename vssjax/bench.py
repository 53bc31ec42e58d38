"""`--mode=bench`: parameters, compile time, latency, throughput, FLOPs and memory of a method.

Runs on random parameters (no checkpoint, no data) of the config's method:

- forward: the method's module in eval mode, jitted, on random uint8 frames of
  `bench.input_size` (default: the training crop), at each of `bench.batch_sizes` (default: 1 for
  latency and `data.batch_size` for throughput), given its variables as a predictor gives its
  programs them (`forward_on_part`: a bfloat16 network's float32 kernels converted once, the
  arrays laid out as the program reads them);
- a streaming method also: each kind of video frame of its predictor at batch 1, as the predictor
  runs it, and the average frame of a video (`Method.streamed_frames`, any method's): DCFM's
  keyframe and non-key frame (and, an A/B the predictor does not run, the non-key frame as one
  program instead of two), averaged at its keyframe interval; DTERN's and SD-CPC's frame in the
  steady state (the network's per-frame part on the new frame, the head's temporal part on the
  clip's kept states);
- sliding-window configs (SegFormer's Cityscapes 1024x1024 setting) also: one frame of the test
  size, the network on the batch of its windows plus their stitching;
- train step: the real `train.step.make_train_step` on a random batch of `loop.batch_spec` shapes
  (crops of `bench.input_size` too), from a state of `loop.create_state`'s shapes with random
  parameters (`_random_state`), traced before the other rows so that a setting it refuses stops
  the bench at once;
- optionally the PyTorch `SegformerForSemanticSegmentation` of the same MiT shape, in the same
  process and on the same device (CUDA when torch has it), eager and with `torch.compile`, at the
  same dtypes and batch sizes, when torch and transformers import and the method is SegFormer on
  a MiT; the JAX / torch frames/s ratios are reported (vssjax/bench_torch.py).

Every program is compiled ahead of time (`lower().compile()`), so compile time is measured apart
from run time; runs are timed with `block_until_ready` after warm-up calls, and the median is kept,
with the median time until the call returned (`dispatch ms`, `bench_rows.Timing`): near the
latency, the program waits on the host; far below it, on the device. A video frame's row (DCFM's
frames, the streaming frame, the sliding-window frame) also has `streamed ms`: its time per frame
with `repeats` frames dispatched one after the other and waited for once, as a video runs
(`bench_rows.streamed_seconds`).
Settings come from `config.bench` (defaults in `vssjax.configs_lib.base_config`).
Writes `workdir/bench.json` and `workdir/bench.md` and prints the table; before it, one
`bench: <program>: compiling...` line as each program starts and one with its compile time and
latency once it is timed, since a VSPW-size config compiles for minutes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from etils import epath

from data_pipelines.clip_sampling import clip_length
from data_pipelines.eval_transforms import eval_resize
from data_pipelines.transforms import check_size, whole_numbers_at_least
from vssjax import bench_torch, op_profile, parallel
from vssjax.bench_figures import device_peak_mb, kernel_count, program_peak_mb, xla_cost
from vssjax.bench_programs import forward_clip, forward_on_part
from vssjax.bench_rows import (Row, Timing, announce, figure, markdown_table,
                               median_call_timing, median_timing, report, streamed_seconds)
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.files import write_text_whole
from vssjax.methods import get_method, rounds
from vssjax.methods.base import Method
from vssjax.methods.backbones import COMPUTE_DTYPES
from vssjax.methods.sliding_window import SlidingWindows, stitched_labels
from vssjax.methods.streamed_frames import StreamedFrame, StreamedVideo, streamed_video
from vssjax.methods.variables_read import ProgramOnPart, laid_out
from vssjax.train import loop
from vssjax.train import step as step_lib
from vssjax.train.host_init import host_filled
from vssjax.train.state import TrainState


def checked_settings(config: ConfigDict) -> dict[str, Any]:
  """`config.bench` as a dict, checked, its empty `batch_sizes` and `input_size` resolved to their
  defaults (1 and `data.batch_size`; the training crop)."""
  settings = config.bench.to_dict()
  if not settings["batch_sizes"] and not whole_numbers_at_least((config.data.batch_size,), 1):
    raise SetupError(f"data.batch_size={config.data.batch_size!r} (the throughput batch when "
                     "bench.batch_sizes is empty, and the train step's): a whole number, at "
                     "least 1")
  settings["batch_sizes"] = tuple(settings["batch_sizes"]) or (1, config.data.batch_size)
  settings["input_size"] = tuple(
      settings["input_size"] or config.data.train_transform.crop_size)
  unknown = [dtype for dtype in settings["dtypes"] if dtype not in COMPUTE_DTYPES]
  if not settings["dtypes"]:
    raise SetupError(f"bench.dtypes is empty: name at least one of {sorted(COMPUTE_DTYPES)}")
  if unknown:
    raise SetupError(f"bench.dtypes: {unknown} not among {sorted(COMPUTE_DTYPES)}")
  check_size("bench.input_size", settings["input_size"])
  if not whole_numbers_at_least(settings["batch_sizes"], 1):
    raise SetupError(f"bench.batch_sizes={settings['batch_sizes']}: whole numbers of at least 1")
  for name, least in (("warmup", 0), ("repeats", 1), ("train_repeats", 1)):
    if not whole_numbers_at_least((settings[name],), least):
      raise SetupError(f"bench.{name}={settings[name]!r}: an integer of at least {least}")
  return settings


def _bench_config(config: ConfigDict, dtype: str, input_size: tuple[int, int]) -> ConfigDict:
  """`config` computing in `dtype`, its training crop `input_size`: the train step's batch (and
  the PyTorch reference's) is then of the forward's frame size, so that `bench.input_size` sizes
  every row and the JAX / torch training ratio compares equal work."""
  config = config.copy_and_resolve_references()
  config.model.dtype = dtype  # existing fields: allowed on a locked config
  config.data.train_transform.crop_size = tuple(input_size)
  return config


def _random_state(config: ConfigDict, method: Method, mesh: jax.sharding.Mesh):
  """A train state of the config's shapes and shardings, its variables filled on the host
  (`host_init.host_filled`, std 0.02) and its optimizer state `tx.init`'s: what the timings need
  (they do not depend on the values), without compiling the initialisation program. Returns
  (state, its sharding)."""
  abstract, sharding, tx, _ = loop.create_state(config, method, mesh, abstract=True)
  params = jax.device_put(host_filled(abstract.params, config.seed, std=0.02), sharding.params)
  model_state = jax.device_put(host_filled(abstract.model_state, config.seed), sharding.model_state)
  opt_state = jax.jit(tx.init, out_shardings=sharding.opt_state)(params)
  step = jax.device_put(np.zeros((), np.int32), sharding.step)
  return TrainState(step, params, model_state, opt_state), sharding


def _compile(jitted, *args, **static_args) -> tuple[Any, float]:
  start = time.perf_counter()
  compiled = jitted.lower(*args, **static_args).compile()
  return compiled, time.perf_counter() - start


class _OnPart(NamedTuple):
  """A `ProgramOnPart` compiled for a part of the variables, the part laid out for it."""
  executable: Any
  part: Any
  compile_s: float

  def __call__(self, *args) -> Any:
    return self.executable(self.part, *args)

  @property
  def row_program(self) -> tuple[Any, float]:
    """(executable, compile seconds), as `_frame_row` takes a program."""
    return self.executable, self.compile_s


def _compile_on_part(program: ProgramOnPart, part, *args) -> _OnPart:
  """`program` compiled for `part` and `args` as a predictor's call compiles it, and kept for the
  predictor's calls that the bench times after (`ProgramOnPart.compiled`)."""
  start = time.perf_counter()
  executable = program.compiled(part, *args)
  compile_s = time.perf_counter() - start
  return _OnPart(executable, laid_out(part, executable), compile_s)


class _Profiler:
  """With `bench.profile`, writes the per-op time table of each timed JAX program to
  `workdir/profile/<program>.md`, its trace kept in `workdir/profile/<program>/process_<i>/`
  (vssjax/op_profile.py); otherwise does nothing."""

  def __init__(self, workdir: str, enabled: bool):
    self.enabled = enabled
    self.directory = epath.Path(workdir) / "profile"
    self.paths: dict[str, str] = {}

  def __call__(self, program: str, run_once: Callable[[], Any], compiled) -> None:
    if not self.enabled:
      return
    try:
      trace_dir = self.directory / program / f"process_{jax.process_index()}"
      if trace_dir.exists():  # an earlier run's trace: the folder holds this program's alone
        trace_dir.rmtree()
      trace_dir.mkdir(parents=True)
      table = op_profile.format_op_table(
          program, op_profile.profile_ops(run_once, compiled, trace_dir))
    except Exception as error:  # pylint: disable=broad-except
      # A profiler that cannot start (e.g. no CUPTI on a GPU host) must not cost the timings.
      print(f"bench.profile: no op table for {program}: {error!r}", flush=True)
      table = f"# {program}\n\nProfiling failed: `{error!r}`\n"
    if jax.process_index() == 0:
      self.directory.mkdir(parents=True, exist_ok=True)
      (self.directory / f"{program}.md").write_text(table)
      self.paths[program] = str(self.directory / f"{program}.md")


def _random_frames(shape: tuple[int, ...], seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _on_bench_device(*trees):
  """`trees` whole on this process's first device (`parallel.local_copies`: every process calls
  this together). One device: the replicated state would make every fake CPU device run the whole
  batch; this process's: another's (`jax.devices()[0]` on all but process 0) takes no transfer."""
  return parallel.local_copies(trees, jax.local_devices()[:1])[0]


def _frame_row(phase: str, dtype: str, programs: list[tuple[Any, float]],
               run_frame: Callable[[], Any], settings: dict[str, Any]) -> Row:
  """The batch-1 row of a frame whose `programs` (compiled, compile seconds) `run_frame` calls
  one after the other, each taking the previous one's outputs, as the predictor calls them:
  dispatched without waiting in between, and waited for once at the end; then `repeats` such
  frames streamed (`streamed_seconds`). Their compile seconds, GFLOPs, GB accessed and kernels
  add up (unknown if one program's is); the peak is the largest program's."""
  timing = median_timing(run_frame, settings["warmup"], settings["repeats"])
  row = _program_row(phase, dtype, 1, 1, sum(compile_s for _, compile_s in programs), timing,
                     *(program for program, _ in programs))
  streamed_s = streamed_seconds(run_frame, settings["repeats"])
  return dataclasses.replace(row, streamed_ms=streamed_s * 1e3)


def _program_row(phase: str, dtype: str, batch: int, frames: int, compile_s: float,
                 timing: Timing, *compiled) -> Row:
  """The row of the JAX program(s) `compiled` (one, or a frame's chain) timed as `timing`,
  `frames` input frames a call: XLA's figures summed over the programs, the largest peak."""
  return Row(phase, dtype, batch, frames, compile_s, timing.seconds * 1e3,
             frames / timing.seconds, xla_cost("flops", *compiled), program_peak_mb(*compiled),
             timing.dispatch_seconds * 1e3, xla_cost("bytes accessed", *compiled),
             kernel_count(*compiled))


def _bench_forward(method: Method, variables, dtype: str, batch: int, clip: int,
                   size: tuple[int, int], settings: dict[str, Any], profile: _Profiler) -> Row:
  variables, frames = _on_bench_device(variables,
                                       _random_frames((batch, clip, *size, 3), seed=batch))
  announce("forward", dtype, batch)
  forward = _compile_on_part(*forward_on_part(method, variables, frames), frames)
  timing = median_call_timing(settings, forward, frames)
  profile(f"forward_{dtype}_b{batch}", lambda: forward(frames), forward.executable)
  return report(_program_row("forward", dtype, batch, batch * clip, forward.compile_s, timing,
                             forward.executable))


class _CompiledPrograms:
  """`OutputsOf` for the bench: announces each program, compiles it ahead of time for the part of
  `variables` it reads (`_compile_on_part`) and runs it; `compiled` maps a program's name to its
  `_OnPart`. A program that does not compile is named with the method's `streamed_frames`."""

  def __init__(self, method: Method, variables, dtype: str):
    self.method, self.variables, self.dtype = method, variables, dtype
    self.compiled: dict[str, _OnPart] = {}

  def __call__(self, name: str, program: ProgramOnPart, *args) -> Any:
    announce(name, self.dtype, 1)
    self.compile(name, program, *args)
    return self.compiled[name](*args)

  def compile(self, name: str, program: ProgramOnPart, *args) -> None:
    try:
      self.compiled[name] = _compile_on_part(program, program.read(self.variables, *args), *args)
    except Exception as error:
      error.add_note(f"while compiling program {name!r} of "
                     f"{type(self.method).__name__}.streamed_frames")
      raise


def _bench_streamed_frames(method: Method, variables, dtype: str, size: tuple[int, int],
                           settings: dict[str, Any], profile: _Profiler, rows: list[Row]
                           ) -> list[dict[str, Any]]:
  """Adds to `rows` a row per kind of video frame of the method's streaming predictor at batch 1
  (`Method.streamed_frames`), each as soon as it is timed, and for a video of several kinds the
  average frame, each figure weighted by the frames' shares (DCFM's (t_key + (K - 1) t_non_key) /
  K, the paper's FPS rule, specs/dcfm.md §7); returns each later in-video frame's time as a share of
  the first's (DCFM's non-key frame against its keyframe: issue 9 asks for at most 10%).

  The programs are compiled here and a frame is timed through the predictor's own calls
  (`StreamedFrame.run`: the part's lookup included), which run the executables compiled here. They
  end where the method's do (DCFM's and DTERN's at the logits at the output stride, as the forward
  rows do; the paper's span also upsamples them). A program is announced as it starts compiling:
  those whose outputs the next ones take (`outputs_of`) by their own names, the others by their
  frame's row."""
  variables, frames = _on_bench_device(variables, _random_frames((1, *size, 3), seed=1))
  programs = _CompiledPrograms(method, variables, dtype)
  video = streamed_video(method, variables, frames, programs)
  timed, profiled = {}, set()
  for frame in video.frames:
    missing = [name for name in frame.programs if name not in programs.compiled]
    if missing:
      announce(frame.row, dtype, 1)
    for name in missing:
      program, args = frame.programs[name]
      programs.compile(name, program, *args)
    _check_returns_arrays(method, frame)
    compiled = [programs.compiled[name] for name in frame.programs]
    timed[frame.row] = report(_frame_row(frame.row, dtype, [c.row_program for c in compiled],
                                         frame.run, settings))
    rows.append(timed[frame.row])
    if frame.share > 0:  # an A/B's programs are timed, not profiled
      for (name, (_, args)), program in zip(frame.programs.items(), compiled):
        if name not in profiled:
          profiled.add(name)
          profile(f"{name}_{dtype}", functools.partial(program, *args), program.executable)
  return _video_average(video, timed, dtype, rows)


def _video_average(video: StreamedVideo, timed: dict[str, Row], dtype: str, rows: list[Row]
                   ) -> list[dict[str, Any]]:
  """For a video of several kinds of frame (`timed`: their rows, by name), adds to `rows` its
  average frame and returns each later frame's time as a share of the first's; [] for one."""
  in_video = [timed[frame.row] for frame in video.in_video]
  if len(in_video) < 2:
    return []
  shares = [frame.share for frame in video.in_video]

  def per_video_frame(field: str) -> float | None:
    """The frames' `field` weighted by their shares; None where one frame's is."""
    values = [getattr(row, field) for row in in_video]
    if any(value is None for value in values):
      return None
    return sum(share * value for share, value in zip(shares, values))

  latency_ms = per_video_frame("latency_ms")
  rows.append(report(Row(
      video.average_row, dtype, 1, 1, None, latency_ms, 1e3 / latency_ms,
      per_video_frame("gflops"), None, per_video_frame("dispatch_ms"),
      per_video_frame("gb_accessed"), per_video_frame("kernels"),
      per_video_frame("streamed_ms"))))
  first = in_video[0]
  return [{"phase": row.phase, "of": first.phase, "dtype": dtype,
           "latency": row.latency_ms / first.latency_ms,
           "streamed": row.streamed_ms / first.streamed_ms} for row in in_video[1:]]


def _check_returns_arrays(method: Method, frame: StreamedFrame) -> None:
  """A frame's `run` must return what it computed: the bench waits for those arrays, and a run
  that returns none would be timed at its dispatch alone."""
  if not any(isinstance(x, jax.Array) for x in jax.tree.leaves(frame.run())):
    raise TypeError(f"{type(method).__name__}.streamed_frames: frame {frame.row!r}'s run() "
                    "returns no array: return the frame's outputs, which the bench waits for")


def _slide_setting(eval_transform: ConfigDict) -> dict[str, list[int]] | None:
  """The sliding-window row's frame (height, width), window and stride; None without windows."""
  windows = SlidingWindows.from_config(eval_transform)
  if windows is None:
    return None
  width, height = eval_transform.scale
  return {"frame": [height, width], "window": list(windows.crop), "stride": list(windows.stride)}


def _bench_slide_frame(method: Method, variables, dtype: str, settings: dict[str, Any],
                       profile: _Profiler) -> Row:
  """A frame of the test size (`eval_transform.scale`, e.g. 1024x2048) as the sliding-window
  predictor runs it: the forward on the batch of its windows (three 1024x1024 ones there), then
  their stitching into the frame's labels (`sliding_window.stitched_labels`)."""
  windows = method.sliding_windows
  width, height = method.config.data.eval_transform.scale
  # A frame of that size as the predictor sees it (eval_resize: sides up to the size divisor).
  resized = eval_resize(_random_frames((height, width, 3), seed=1),
                        method.config.data.eval_transform)
  variables, crops = _on_bench_device(variables, windows.crops(resized)[None])
  announce("slide_frame", dtype, 1)
  forward = _compile_on_part(*forward_on_part(method, variables, crops), crops)
  logits = forward(crops)
  stitch, stitch_compile = _compile(stitched_labels, logits, windows=windows,
                                    input_hw=resized.shape[:2], frame_hw=(height, width))
  row = report(_frame_row("slide_frame", dtype, [forward.row_program, (stitch, stitch_compile)],
                          lambda: stitch(forward(crops)), settings))
  profile(f"slide_forward_{dtype}", lambda: forward(crops), forward.executable)
  profile(f"slide_stitch_{dtype}", lambda: stitch(logits), stitch)
  return row


def _random_batch(config: ConfigDict, spec: dict[str, jax.ShapeDtypeStruct]
                  ) -> dict[str, np.ndarray]:
  """A host batch of every entry `loop.batch_spec` gives: random frames and labels, every frame
  labelled and, where the config has a flow (ETC's temporal loss), flow of a few pixels."""
  rng = np.random.default_rng(config.seed)
  makers = {
      "frames": lambda shape: rng.integers(0, 256, shape, dtype=np.uint8),
      "labels": lambda shape: rng.integers(0, config.data.num_classes, shape, dtype=np.int32),
      "labeled": lambda shape: np.ones(shape, np.bool_),
      "flow": lambda shape: rng.normal(0.0, 2.0, shape).astype(np.float32),
  }
  unknown = set(spec) - set(makers)
  if unknown:
    raise ValueError(f"--mode=bench cannot make random batch entries {sorted(unknown)}")
  return {key: makers[key](s.shape) for key, s in spec.items()}


@dataclasses.dataclass(frozen=True)
class _TracedTrainStep:
  """The train step traced on its random batch before any row is timed (`_trace_train_step`)."""
  traced: Any  # jax.stages.Traced
  batch: dict[str, jax.Array]
  total_steps: jax.Array
  trace_s: float
  loss_rounds: list[rounds.Rounds]  # the loops XLA's cost analysis counts once


def _trace_train_step(config: ConfigDict, method: Method, state, sharding, mesh
                      ) -> _TracedTrainStep:
  """Traces the real train step on a random batch of `loop.batch_spec` shapes.

  Done before the forward rows: a setting the train step refuses while it traces (e.g. ETC's
  similarity pools larger than the crops' feature maps) then stops the bench at once, instead of
  after minutes of forward rows that the error would throw away."""
  spec = loop.batch_spec(config)
  batch = jax.device_put(_random_batch(config, spec), parallel.batch_sharding(mesh))
  train_step = loop.configured_train_step(config, method, state.params, sharding, mesh)
  total_steps = step_lib.schedule_length(config.train.steps, mesh)
  start = time.perf_counter()
  with rounds.rounds_traced() as loss_rounds:
    traced = train_step.trace(state, batch, total_steps)
  return _TracedTrainStep(traced, batch, total_steps, time.perf_counter() - start, loss_rounds)


def _bench_train_step(config: ConfigDict, step: _TracedTrainStep, state, settings: dict[str, Any],
                      profile: _Profiler) -> Row:
  batch_size, clip = step.batch["frames"].shape[:2]
  announce("train_step", config.model.dtype, batch_size)
  start = time.perf_counter()
  compiled = step.traced.lower().compile()
  compile_s = step.trace_s + time.perf_counter() - start  # as `_compile`'s, which traces too
  holder = [state]  # the state is donated: each call consumes the previous one

  def run_once():
    holder[0], metrics = compiled(holder[0], step.batch, step.total_steps)
    return metrics

  timing = median_timing(run_once, settings["warmup"], settings["train_repeats"])
  profile(f"train_step_{config.model.dtype}", run_once, compiled)
  row = _program_row("train_step", config.model.dtype, batch_size, batch_size * clip, compile_s,
                     timing, compiled)
  return report(_with_loss_rounds(row, step.loss_rounds))


def _with_loss_rounds(row: Row, loss_rounds: list[rounds.Rounds]) -> Row:
  """The train step's row with its GFLOPs and GB accessed counting every round of its losses:
  XLA's cost analysis counts a loop's body once, and the losses at label resolution take the batch
  in rounds, a loop (`rounds.mean_in_rounds`; OHEM's selection pass, `rounds.map_in_rounds`, and
  its bisection, `rounds.note_loop`). Each further iteration costs what the loop's body costs,
  compiled alone (the loss's value and gradient on one sample: SegFormer-B1's cross-entropy, 16
  frames at 480x480, about 1 GFLOP a round). Loops of the same program (DCFM's two
  cross-entropies, DTERN's final and class-token ones) share one compile."""
  further = {"flops": 0.0, "bytes accessed": 0.0}
  compiled_rounds = {}  # the one-sample program's text -> its compiled form
  for loss in loss_rounds:
    if loss.count > 1:
      lowered = jax.jit(loss.program).lower(*loss.arguments)
      text = lowered.as_text()
      if text not in compiled_rounds:
        compiled_rounds[text] = lowered.compile()
      one_round = compiled_rounds[text]
      for name in further:
        further[name] += (loss.count - 1) * (xla_cost(name, one_round) or 0.0)
  return dataclasses.replace(
      row, gflops=None if row.gflops is None else row.gflops + further["flops"],
      gb_accessed=None if row.gb_accessed is None else row.gb_accessed + further["bytes accessed"])


def _format_table(rows: list[Row]) -> str:
  return markdown_table(
      ["phase", "dtype", "batch", "frames", "compile s", "latency ms", "dispatch ms",
       "streamed ms", "frames/s", "GFLOPs", "GB accessed", "kernels", "peak MiB"],
      ([r.phase, r.dtype, str(r.batch), str(r.frames), figure(r.compile_s, ".2f"),
        f"{r.latency_ms:.2f}", figure(r.dispatch_ms, ".2f"), figure(r.streamed_ms, ".2f"),
        f"{r.frames_per_s:.1f}",
        figure(r.gflops, "digits"), figure(r.gb_accessed, "digits"), figure(r.kernels, ".0f"),
        figure(r.peak_memory_mb, "digits")]
       for r in rows))


@dataclasses.dataclass
class _Measured:
  """What the JAX side has measured so far (`_bench_dtype`), kept when a later program fails."""
  rows: list[Row] = dataclasses.field(default_factory=list)
  params: int = 0
  method: Method | None = None  # the last dtype's
  # A streamed video's later frames' time as shares of its first's (`_bench_streamed_frames`).
  frame_shares: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _bench_dtype(config: ConfigDict, dtype: str, settings: dict[str, Any],
                 mesh: jax.sharding.Mesh, measured: _Measured, profile: _Profiler
                 ) -> None:
  """Measures `config`'s JAX programs at `dtype`, adding each row to `measured` once timed."""
  dtype_config = _bench_config(config, dtype, settings["input_size"])
  method = measured.method = get_method(dtype_config)
  state, sharding = _random_state(dtype_config, method, mesh)
  measured.params = int(sum(x.size for x in jax.tree.leaves(state.params)))
  variables, rows = state.variables, measured.rows
  train_step = (_trace_train_step(dtype_config, method, state, sharding, mesh)
                if settings["train_step"] else None)
  for batch in settings["batch_sizes"]:
    rows.append(_bench_forward(method, variables, dtype, batch, forward_clip(method),
                               settings["input_size"], settings, profile))
  measured.frame_shares += _bench_streamed_frames(method, variables, dtype,
                                                  settings["input_size"], settings, profile, rows)
  if method.sliding_windows is not None:
    rows.append(_bench_slide_frame(method, variables, dtype, settings, profile))
  if train_step is not None:
    rows.append(_bench_train_step(dtype_config, train_step, state, settings, profile))


def run(config: ConfigDict, workdir: str) -> dict[str, Any]:
  """Benchmarks `config`'s method; writes `workdir/bench.{json,md}` and returns the results.

  A program that fails (out of memory, a lever the device lacks) raises its error after the rows
  measured before it are written, `stopped_by` naming the error: minutes of compiles and timings
  are kept, in the device suite's report too. The PyTorch reference then does not run. An earlier
  run's report in `workdir` is removed first: one that fails before its first row leaves none,
  rather than figures it did not measure (which the suite would report as this run's)."""
  for name in ("bench.md", "bench.json"):
    (epath.Path(workdir) / name).unlink(missing_ok=True)
  settings = checked_settings(config)
  mesh = parallel.mesh_from_config(config)
  parallel.check_batch_size(config.data.batch_size, mesh)
  clip = clip_length(config.clip)
  measured = _Measured()
  profile = _Profiler(workdir, settings["profile"])
  stopped_by = None
  try:
    for dtype in settings["dtypes"]:  # at least one (checked_settings)
      _bench_dtype(config, dtype, settings, mesh, measured, profile)
  except Exception as error:  # pylint: disable=broad-except  # raised again once rows are written
    if not measured.rows:
      raise
    stopped_by = error
  rows = measured.rows
  torch_rows = []
  if stopped_by is None and settings["torch"]:
    # The last dtype's method: the reference takes only the architecture and the optimiser
    # settings from it, which every dtype shares.
    torch_rows = bench_torch.run_reference(measured.method, settings["input_size"],
                                           config.data.batch_size, settings)
  if config.model.scan_blocks:  # XLA's cost analysis counts a loop's body once, not per trip
    rows = [dataclasses.replace(row, gflops=None, gb_accessed=None)
            if row.phase == "train_step" else row for row in rows]
  rows += torch_rows
  results = {
      "method": config.method.name, "backbone": config.model.backbone,
      "input_size": list(settings["input_size"]), "clip_length": clip, "params": measured.params,
      "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
      "mesh": dict(mesh.shape), "host": platform.processor() or platform.machine(),
      "jax_version": jax.__version__,
      "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
      # What the float32 rows compare: JAX leaves TF32 on for matmuls and convolutions on recent
      # NVIDIA GPUs unless model.matmul_precision says otherwise; PyTorch's defaults differ.
      "float32_precision": {"jax": config.model.matmul_precision or "platform default"},
      "scan_blocks": config.model.scan_blocks,
      "remat": config.model.remat,
      # The sliding-window row's frame is the test size, not bench.input_size.
      "slide_frame": _slide_setting(config.data.eval_transform),
      "device_peak_memory_mb": device_peak_mb(),  # all programs of the process so far
      "op_profiles": profile.paths,
      "rows": [dataclasses.asdict(r) for r in rows],
      "frame_shares": measured.frame_shares,
      "stopped_by": (None if stopped_by is None else  # its first line: XLA's go on for pages
                     f"{type(stopped_by).__name__}: " + str(stopped_by).partition("\n")[0]),
  }
  if torch_rows:
    _record_reference(results)
  _write_results(results, workdir)
  if stopped_by is not None:
    raise stopped_by
  return results


def add_torch_compile_rows(config: ConfigDict, results: dict[str, Any], workdir: str) -> None:
  """Adds the `torch.compile` rows of `config`'s PyTorch reference to `results`, those of a `run`
  of `config` made without them (`bench.torch_compile=False`), and rewrites `workdir`'s report.

  The device suite (vssjax/bench_suite.py) measures every entry's JAX and eager PyTorch rows
  first and these last: compiling the reference takes minutes a model, and a command stopped by
  its time limit then loses them rather than a later entry's JAX rows.
  """
  settings = {**checked_settings(config), "torch_compile": True}
  rows = bench_torch.run_reference(get_method(config), settings["input_size"],
                                   config.data.batch_size, settings, eager=False)
  if rows:
    _record_reference(results)
  results["rows"] += [dataclasses.asdict(r) for r in rows]
  _write_results(results, workdir)


def _record_reference(results: dict[str, Any]) -> None:
  """What `results`' PyTorch rows ran with: torch's float32 arithmetic beside JAX's, and
  `bench_torch.versions()`, which can change the reference's speed between reports."""
  results["float32_precision"].update(bench_torch.float32_flags())
  results["torch_reference"] = bench_torch.versions()


def _write_results(results: dict[str, Any], workdir: str) -> None:
  """Adds the JAX / torch ratios of `results`' rows; prints its summary and table and writes
  them to `workdir/bench.md`, and `results` to `workdir/bench.json`."""
  rows = [Row(**r) for r in results["rows"]]
  results["torch_ratios"] = bench_torch.jax_over_torch_ratios(rows)
  table = _format_table(rows)
  height, width = results["input_size"]
  summary = (f"{results['method']}, backbone {results['backbone']}, "
             f"{results['params'] / 1e6:.3f}M params, input {height}x{width}, clip "
             f"{results['clip_length']}, backend {results['backend']}, mesh {results['mesh']}, "
             "float32 precision " + ", ".join(
                 f"{side} {value}" for side, value in results["float32_precision"].items()))
  if results.get("torch_reference"):
    summary += "\nPyTorch reference: " + ", ".join(
        f"{name} {value}" for name, value in results["torch_reference"].items())
  if results.get("stopped_by"):
    summary += (f"\nstopped by an error ({results['stopped_by']}); the programs after the "
                "last row (and any PyTorch reference) were not measured")
  if results.get("slide_frame"):
    slide = results["slide_frame"]
    summary += (f"\nslide_frame: a {'x'.join(map(str, slide['frame']))} frame (data.eval_transform."
                f"scale, not the input size) in {'x'.join(map(str, slide['window']))} windows at "
                f"stride {'x'.join(map(str, slide['stride']))}")
  if results.get("scan_blocks"):
    summary += ("\ntrain_step GFLOPs and GB accessed n/a: model.scan_blocks trains each stage's "
                "blocks as a loop, whose body XLA's cost analysis counts once; run without it for "
                "them")
  if results.get("remat"):
    counted = ("time includes" if results.get("scan_blocks")  # its GFLOPs are n/a: above
               else "time and GFLOPs include")
    summary += (f"\ntrain_step rematerialises the backbone's blocks (model.remat="
                f"{results['remat']!r}): its {counted} their recomputation, and PyTorch's step "
                "keeps every activation")
  if results["compilation_cache_dir"]:
    summary += (f"\ncompile_s may be loads from the persistent compilation cache "
                f"{results['compilation_cache_dir']} (JAX_COMPILATION_CACHE_DIR)")
  if any(row["phase"].startswith("torch_compile") for row in results["rows"]):
    summary += ("\ntorch_compile compile_s may be loads from TorchInductor's cache of earlier runs "
                "(TORCHINDUCTOR_CACHE_DIR, by default /tmp/torchinductor_<user>)")
  for ratio in results["torch_ratios"]:
    summary += (f"\nJAX / torch frames/s, {ratio['phase']} {ratio['dtype']} "
                f"batch {ratio['batch']}: " + ", ".join(
                    f"{name[len('jax_over_'):]} {value:.2f}x" for name, value in ratio.items()
                    if name.startswith("jax_over_")))
  for share in results["frame_shares"]:
    summary += (f"\n{share['phase']} / {share['of']}, {share['dtype']}: latency "
                f"{share['latency']:.1%}, streamed {share['streamed']:.1%}")
  print(summary + "\n" + table, flush=True)
  if jax.process_index() == 0:
    out = epath.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    # Whole (files.write_text_whole): `add_torch_compile_rows` rewrites both, and a device
    # command's time limit may kill it then.
    write_text_whole(out / "bench.json", json.dumps(results, indent=2))
    write_text_whole(out / "bench.md", summary + "\n\n" + table + "\n")
