r"""Compiles a config's programs for devices this machine does not have, and says what each needs.

  python -m vssjax.aot --config=configs/segformer/vspw_mitb1.py --target=tpu:v5e:2x2 \
      [--config.data.batch_size=32 ...] [--out=FILE.json]

Before a slice or a GPU is rented (or device minutes are spent on a program that fails to
compile), XLA's own compiler for those devices says whether the config's programs compile there,
in how long, and what memory each device needs: its buffer assignment, the figures a run would
meet. Nothing is run and no device is needed, only the platform's compiler:

- `cpu`: this machine's CPU devices, all of them (what the tests compile for);
- `gpu:h100`, `gpu:h200`, `gpu:h100x8` (N GPUs of one host): XLA's GPU compiler for NVIDIA's
  H100 / H200 (SXM) from the CUDA plugin (`pip install "jax[cuda13]==<jax's version>"`; no driver
  or GPU needed). Nothing is autotuned without a device: products go to cuBLAS with XLA's default
  settings, so compile times are not the device's and the buffers are close to, not exactly, its
  (cuBLAS's 32 MiB workspace stays unshrunk: a small program's peak reads up to 32 MiB high);
- `tpu:<topology>`, e.g. `tpu:v5e:2x2` (4 chips), `tpu:v5e:1x1` (one), `tpu:v5p:2x2x1`: libtpu's
  compiler for that slice (`pip install "jax[tpu]==<jax's version>"`).

The platform is the target's while the method is built (`parallel.compiling_for`), so what the
method picks by platform (`model.dwconv_impl='auto'`, the cuDNN attention's check) is what those
devices would run. The programs:

- `train_step`: the training loop's own step (`train.step.make_train_step`: the state donated,
  the config's batch split over the config's mesh of the target's devices, the state's shardings
  from `loop.create_state`, its `sharding_rules` included): per device, the state and batch it
  holds (arguments), what it returns that is not written in place of the donated state
  (outputs), and XLA's temporaries (activations, gradients);
- `forward`: the eval-mode forward of `--mode=bench` on one device, at each of
  `bench.batch_sizes` (default 1 and `data.batch_size`) frames (clips for DTERN, DCFM and
  SD-CPC) of `bench.input_size` (default: the training crop);
- the streaming predictor's programs for one frame of that size, as the bench times them, on one
  device (`Method.streamed_frames`, the A/Bs left out): DCFM's `keyframe`, `non_key_shallow`
  (not without the non-key independent feature, `model.left_out`) and `non_key_fuse`, DTERN's
  and SD-CPC's `stream_encode` and `stream_decode`.

`kernels` counts the entry computation's instructions that run as kernels
(`bench_figures.entry_kernels`: fusions, library calls, copies; by opcode in the JSON): on a GPU,
the launches of one call, which a small batch-1 program's time follows. `peak MiB` is
`bench_figures.peak_bytes`: at least arguments + outputs - donated +
temporaries; `of a device` is its share of a GPU's or TPU chip's nominal memory (v5e, v5p, v6e;
the runtime keeps some for itself), and a program over it is said in a line of its own, with the
settings that lower it. docs/scaling.md has figures and what they say.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from absl import app, flags
from jax.sharding import SingleDeviceSharding

from vssjax import parallel
from vssjax.bench import checked_settings
from vssjax.bench_figures import entry_kernels, memory_analysis, peak_bytes
from vssjax.bench_programs import forward_clip, forward_on_part
from vssjax.bench_rows import figure, markdown_table
from vssjax.command_line import (parse_config_flags, path_flag, quiet_routine_logs,
                                 refuse_arguments, user_errors_in_one_line)
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.files import write_text_whole
from vssjax.methods import get_method
from vssjax.methods.base import Method
from vssjax.methods.streamed_frames import streamed_video
from vssjax.train import loop

# NVIDIA's data-centre GPUs as XLA's GPU compiler describes a device (`GpuTargetConfigProto`):
# (streaming multiprocessors, memory bytes, memory bandwidth bytes/s). Both are compute
# capability 9.0 with 50 MiB of L2 and 228 KiB of shared memory per SM.
_GPUS = {"h100": (132, 80 * 10**9, 3_350 * 10**9), "h200": (132, 141 * 10**9, 4_800 * 10**9)}
# HBM per device of the TPUs whose compile-only devices are one chip each (libtpu's
# `device_kind`); a compile-only device reports no memory of its own.
_TPU_MEMORY = {"TPU v5 lite": 16 * 2**30, "TPU v5": 95 * 2**30, "TPU v6 lite": 32 * 2**30}
_TPU_HOST = (2, 2, 1)  # the chips of one host, as libtpu lays out a topology by default
_GPU_TARGET = re.compile(r"gpu:(?P<model>[a-z]+\d+)(?:x(?P<count>\d+))?")
# Without a device nothing is autotuned, and XLA then finds no Triton tiling for some of MiT's
# products ("Couldn't find output tile sizes"); cuBLAS takes them instead (docs/benchmarks.md).
_GPU_COMPILE_OPTIONS = {"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0}


@dataclasses.dataclass(frozen=True)
class Target:
  """The devices to compile for, their platform ('cpu', 'gpu', 'tpu') and, where known, each
  one's memory in bytes (the GPU's or TPU chip's nominal size)."""
  name: str
  devices: Sequence[Any]
  platform: str
  memory_bytes: int | None = None

  @property
  def compile_options(self) -> dict[str, Any]:
    return _GPU_COMPILE_OPTIONS if self.platform == "gpu" else {}


def parse_target(spec: str) -> Target:
  """The `--target` named by `spec` (module docstring); a `SetupError` that says what to install
  where the platform's compiler is missing, or that the compiler refuses the topology."""
  if spec == "cpu":
    return Target(spec, jax.devices("cpu"), "cpu")
  if spec.startswith("tpu:") and len(spec) > len("tpu:"):
    devices = _tpu_devices(spec, spec[len("tpu:"):])
    return Target(spec, devices, "tpu", _TPU_MEMORY.get(devices[0].device_kind))
  match = _GPU_TARGET.fullmatch(spec)
  if match and match["model"] in _GPUS and match["count"] != "0":
    count = int(match["count"] or 1)
    devices = _topology_devices(spec, "cuda", topology_name="", topology=f"1x1x{count}",
                                target_config=_gpu_target_config(match["model"]))
    return Target(spec, devices, "gpu", _GPUS[match["model"]][1])
  raise SetupError(f"--target={spec!r}: one of 'cpu', 'gpu:h100' or 'gpu:h200' (N GPUs: "
                   f"'gpu:h100x8'), or 'tpu:<topology>' such as 'tpu:v5e:2x2'")


def _tpu_devices(spec: str, topology: str) -> list[Any]:
  """The chips of a TPU `topology` such as 'v5e:2x2'. libtpu lays a topology out over hosts of
  2x2x1 chips unless told otherwise, and refuses a slice smaller than one ('v5e:1x1', one chip):
  such a slice is one host of its own size."""
  dims = (*(int(d) for d in re.findall(r"\d+", topology.rsplit(":", 1)[-1])), 1, 1)[:3]
  smaller = dims != _TPU_HOST and all(d <= h for d, h in zip(dims, _TPU_HOST))
  one_host = {"chips_per_host_bounds": dims} if smaller else {}
  return _topology_devices(spec, "tpu", topology_name=topology, **one_host)


def _topology_devices(spec: str, platform: str, **topology) -> list[Any]:
  """The compile-only devices of a topology (`jax.experimental.topologies`)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(platform=platform, **topology).devices)
  except (RuntimeError, NotImplementedError, ValueError) as error:
    if "INVALID_ARGUMENT" in str(error):  # the platform's compiler is there; the name is not
      raise SetupError(f"--target={spec}: {platform.upper()}'s compiler refuses the topology "
                       f"({error}); name another, e.g. tpu:v5e:2x2") from None
    extra = "tpu" if platform == "tpu" else "cuda13"
    raise SetupError(
        f"--target={spec}: JAX found no {platform.upper()} compiler for it ({error}); install "
        f"the platform's plugin, pip install \"jax[{extra}]=={jax.__version__}\" (no device "
        "needed), or name another topology") from None


def _gpu_target_config(model: str) -> str:
  """`GpuTargetConfigProto` text of an NVIDIA `model` (`_GPUS`), as the CUDA plugin reads it."""
  cores, memory, bandwidth = _GPUS[model]
  return ("gpu_device_info { threads_per_block_limit: 1024 threads_per_warp: 32 "
          "shared_memory_per_block: 49152 shared_memory_per_core: 233472 "
          f"threads_per_core_limit: 2048 core_count: {cores} fpus_per_core: 128 "
          "block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535 "
          f"memory_bandwidth: {bandwidth} l2_cache_size: 52428800 clock_rate_ghz: 1.98 "
          f"device_memory_size: {memory} shared_memory_per_block_optin: 232448 "
          "cuda_compute_capability { major: 9 } registers_per_core_limit: 65536 "
          "registers_per_block_limit: 65536 } platform_name: \"CUDA\" "
          f"dnn_version_info {{ major: 9 minor: 8 }} device_description_str: \"NVIDIA "
          f"{model.upper()}\"")


@dataclasses.dataclass(frozen=True)
class Compiled:
  """One program as compiled for the target: per device, in MiB (None where XLA gives none)."""
  program: str
  batch: int  # samples: frames, pairs or clips
  devices: int
  layout: str  # the train step's mesh, or one device
  compile_s: float
  arguments_mib: float | None
  outputs_mib: float | None
  donated_mib: float | None
  temporaries_mib: float | None
  peak_mib: float | None
  of_device: float | None  # the peak's share of the device's memory (`Target.memory_bytes`)
  kernels: dict[str, int] | None = None  # `bench_figures.entry_kernels`, by opcode

  @property
  def kernel_count(self) -> int | None:
    return None if self.kernels is None else sum(self.kernels.values())


def _compiled_row(program: str, batch: int, devices: int, layout: str, traced,
                  target: Target) -> Compiled:
  """Compiles `traced` for `target` and reads XLA's memory figures, saying each step as it goes
  (a slice's training step compiles for minutes on a laptop)."""
  print(f"aot: {program} batch {batch} for {target.name}: compiling...", flush=True)
  start = time.perf_counter()
  compiled = traced.lower().compile(target.compile_options)
  compile_s = time.perf_counter() - start
  stats = memory_analysis(compiled)
  mib = lambda name: None if stats is None else getattr(stats, name) / 2**20
  peak_mib = None if stats is None else peak_bytes(stats) / 2**20
  of_device = (None if peak_mib is None or target.memory_bytes is None
               else peak_mib * 2**20 / target.memory_bytes)
  row = Compiled(program, batch, devices, layout, compile_s, mib("argument_size_in_bytes"),
                 mib("output_size_in_bytes"), mib("alias_size_in_bytes"),
                 mib("temp_size_in_bytes"), peak_mib, of_device, entry_kernels(compiled))
  peak = "" if peak_mib is None else f", {peak_mib:.0f} MiB a device"
  share = "" if of_device is None else f" ({of_device:.0%} of {target.name}'s)"
  print(f"aot: {program} batch {batch}: compiled in {compile_s:.1f} s{peak}{share}", flush=True)
  if of_device is not None and of_device > 1:
    print(f"aot: {program} batch {batch} does not fit {target.name}'s "
          f"{target.memory_bytes / 2**30:.3g} GiB a device: lower the batch "
          "(data.batch_size, or bench.batch_sizes for a forward), spread it over more devices, "
          "or keep fewer activations (model.remat, docs/scaling.md)", flush=True)
  return row


def _train_step(config: ConfigDict, method: Method, state, sharding,
                mesh: jax.sharding.Mesh, target: Target) -> Compiled:
  """The training loop's step on the config's mesh of the target's devices (module docstring)."""
  step = loop.configured_train_step(config, method, state.params, sharding, mesh)
  batch = {key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parallel.batch_sharding(mesh))
           for key, s in loop.batch_spec(config).items()}
  total_steps = jax.ShapeDtypeStruct((), jnp.int32, sharding=parallel.replicated(mesh))
  layout = " x ".join(f"{axis} {size}" for axis, size in mesh.shape.items())
  return _compiled_row("train_step", config.data.batch_size, mesh.size, f"mesh {layout}",
                       step.trace(state, batch, total_steps), target)


def _on_first_device(tree, target: Target):
  """The shapes of `tree`, placed on the target's first device."""
  device = SingleDeviceSharding(target.devices[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


def _forwards(config: ConfigDict, method: Method, variables, target: Target) -> list[Compiled]:
  """`--mode=bench`'s forward on the target's first device at each of `bench.batch_sizes`, on
  the part of the variables it reads (`bench_programs.forward_on_part`)."""
  settings = checked_settings(config)
  variables = _on_first_device(variables, target)
  rows = []
  for batch in settings["batch_sizes"]:
    frames = _on_first_device(jax.ShapeDtypeStruct(
        (batch, forward_clip(method), *settings["input_size"], 3), jnp.uint8), target)
    forward, part = forward_on_part(method, variables, frames)
    rows.append(_compiled_row("forward", batch, 1, "one device", forward.trace(part, frames),
                              target))
  return rows


def _frame_programs(config: ConfigDict, method: Method, variables,
                    target: Target) -> list[Compiled]:
  """The streaming predictor's programs for one frame (module docstring) on the target's first
  device, each given the shapes of the one before's outputs; none for a per-frame method."""
  variables = _on_first_device(variables, target)
  frames = _on_first_device(jax.ShapeDtypeStruct(
      (1, *checked_settings(config)["input_size"], 3), jnp.uint8), target)
  shapes_of = lambda _, program, *args: _on_first_device(
      jax.eval_shape(program.fn, variables, *args), target)
  rows = []
  for name, (program, args) in streamed_video(method, variables, frames,
                                              shapes_of).programs().items():
    try:
      rows.append(_compiled_row(name, 1, 1, "one device",
                                program.trace(program.read(variables, *args), *args), target))
    except Exception as error:
      error.add_note(f"while compiling program {name!r} of {type(method).__name__}"
                     ".streamed_frames")
      raise
  return rows


def run(config: ConfigDict, target: Target) -> list[Compiled]:
  """Compiles `config`'s train step, forwards and frame programs for `target` (module
  docstring)."""
  with parallel.compiling_for(target.platform):
    method = get_method(config)
    mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp, devices=target.devices)
    parallel.check_batch_size(config.data.batch_size, mesh)
    state, sharding, _, _ = loop.create_state(config, method, mesh, abstract=True)
    return [_train_step(config, method, state, sharding, mesh, target),
            *_forwards(config, method, state.variables, target),
            *_frame_programs(config, method, state.variables, target)]


def format_table(rows: list[Compiled]) -> str:
  return markdown_table(
      ["program", "batch", "devices", "compile s", "kernels", "arguments MiB", "outputs MiB",
       "donated MiB", "temporaries MiB", "peak MiB", "of a device"],
      ([r.program, str(r.batch), f"{r.devices} ({r.layout})", f"{r.compile_s:.1f}",
        figure(r.kernel_count, "d"),
        *(figure(mib, ".1f") for mib in (r.arguments_mib, r.outputs_mib, r.donated_mib,
                                          r.temporaries_mib, r.peak_mib)),
        figure(r.of_device, ".0%")] for r in rows))


_CONFIG = None  # the --config flag, defined in `_define_flags` (the tests import this module)


@user_errors_in_one_line
def main(argv):
  """Compiles the config's programs for --target and prints (and with --out writes) the figures."""
  refuse_arguments(argv)
  quiet_routine_logs()
  config, spec = _CONFIG.value, flags.FLAGS.target
  out = None if flags.FLAGS.out is None else path_flag("out", flags.FLAGS.out, "a JSON file")
  target = parse_target(spec)
  rows = run(config, target)
  devices = len(target.devices)
  print(f"{config.method.name}, backbone {config.model.backbone}, {config.model.dtype}, for "
        f"{spec} ({devices} device{'s' * (devices > 1)}), jax {jax.__version__}; per device:")
  print(format_table(rows))
  if out:
    write_text_whole(out, json.dumps({"target": spec, "jax_version": jax.__version__,
                                      "rows": [dataclasses.asdict(r) for r in rows]}, indent=1))


def _define_flags() -> None:
  global _CONFIG  # pylint: disable=global-statement
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/segformer/vspw_mitb1.py.", lock_config=True)
  flags.DEFINE_string("target", None, "cpu | gpu:h100 | gpu:h200[xN] | tpu:<topology>.")
  flags.DEFINE_string("out", None, "Optional JSON file for the figures.")
  flags.mark_flags_as_required(["config", "target"])


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=parse_config_flags)
