"""`python -m vssjax.aot`: the config's programs compiled for a target's devices, never run; here
the 4 fake CPU devices, and the GPU and TPU targets' wiring with JAX's topology lookup replaced."""

import json
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import topologies

from data_pipelines.clip_sampling import clip_length
from tests.conftest import REPO, load_config
from vssjax import aot, parallel
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.train import loop

QUICK = "configs/segformer/synthetic_mitb0.py"


def _mib(tree) -> float:
  return sum(x.size * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)) / 2**20


def test_train_step_and_forwards_on_the_targets_devices(capsys):
  config = load_config(QUICK, "quick")
  config.data.batch_size = 8
  config.bench.batch_sizes = (1, 2)
  mib_devices = aot.Target("cpu", jax.devices("cpu"), "cpu", memory_bytes=2**20)  # 1 MiB each
  train, *forwards = aot.run(config, mib_devices)
  assert (train.program, train.batch, train.devices) == ("train_step", 8, 4)
  assert train.layout == "mesh data 4 x fsdp 1"
  # Every device holds the whole replicated state (parameters, AdamW's two moments, the step)
  # and donates it: what it returns in its place is no output of its own.
  state, _, _, _ = loop.create_state(config, get_method(config), parallel.make_mesh(),
                                     abstract=True)
  state_mib = _mib(state)
  batch_mib = _mib(loop.batch_spec(config)) / 4
  assert train.arguments_mib == pytest.approx(state_mib + batch_mib, rel=0.01)
  assert train.donated_mib == pytest.approx(state_mib, rel=0.01)
  assert train.donated_mib < train.outputs_mib < train.donated_mib * 1.05  # new state, metrics
  assert train.temporaries_mib > 0 and train.peak_mib >= train.arguments_mib
  assert train.kernel_count > forwards[0].kernel_count > 0  # the backward pass and the update
  assert [(f.program, f.batch, f.devices, f.layout) for f in forwards] == [
      ("forward", 1, 1, "one device"), ("forward", 2, 1, "one device")]
  frame_mib = 48 * 48 * 3 / 2**20  # the quick config's crop, uint8
  assert forwards[0].arguments_mib == pytest.approx(_mib(state.variables) + frame_mib, rel=0.01)
  assert forwards[1].temporaries_mib > forwards[0].temporaries_mib
  # Each peak's share of the devices' memory; the train step's is over it, and said so.
  assert [r.of_device for r in (train, *forwards)] == [r.peak_mib for r in (train, *forwards)]
  assert train.peak_mib > 1 > forwards[0].peak_mib
  printed = capsys.readouterr().out
  assert ("aot: train_step batch 8 does not fit cpu's 0.000977 GiB a device: lower the batch"
          in printed)
  assert "aot: forward batch 1 does not fit" not in printed
  table = aot.format_table([train, *forwards])
  assert "| train_step | 8 | 4 (mesh data 4 x fsdp 1) |" in table
  assert table.splitlines()[2].endswith(f"| {train.of_device:.0%} |")


def test_the_configs_mesh_of_the_targets_devices_and_bench_input_size():
  config = load_config(QUICK, "quick")
  config.data.batch_size = 8
  config.mesh.fsdp = 2
  config.bench.update(batch_sizes=(1,), input_size=(32, 64))
  train, forward = aot.run(config, aot.Target("cpu", jax.devices("cpu")[:2], "cpu"))
  assert (train.devices, train.layout) == (2, "mesh data 1 x fsdp 2")
  state, _, _, _ = loop.create_state(config, get_method(config), parallel.make_mesh(),
                                     abstract=True)
  assert forward.arguments_mib == pytest.approx(_mib(state.variables) + 32 * 64 * 3 / 2**20,
                                                rel=0.001)


@pytest.mark.parametrize("path", ["configs/etc/synthetic_psp18.py",
                                  "configs/dtern/synthetic_mitb0.py"])
def test_a_forward_takes_clips_only_for_a_method_that_predicts_from_clips(monkeypatch, path):
  """ETC trains on pairs and predicts frames alone; DTERN predicts from clips. One more sample
  in the batch is one more frame, or one more clip, of arguments (the variables a forward reads
  are the same at both batches)."""
  config = load_config(path, "quick")
  config.bench.batch_sizes = (1, 2)
  monkeypatch.setattr(aot, "_train_step", lambda *_: None)
  monkeypatch.setattr(aot, "_frame_programs", lambda *_: [])
  _, one, two = aot.run(config, aot.Target("cpu", jax.devices("cpu"), "cpu"))
  assert clip_length(config.clip) > 1
  clip = 1 if path.startswith("configs/etc") else clip_length(config.clip)
  height, width = config.data.train_transform.crop_size
  assert (two.arguments_mib - one.arguments_mib) * 2**20 == clip * height * width * 3


@pytest.mark.parametrize("path, programs", [
    ("configs/dcfm/synthetic_mitb0.py", ["keyframe", "non_key_shallow", "non_key_fuse"]),
    ("configs/sdcpc/synthetic_mitb0.py", ["stream_encode", "stream_decode"]),
    (QUICK, [])])
def test_a_streaming_predictors_frame_programs_each_take_what_the_predictor_passes(
    monkeypatch, path, programs):
  """The frame programs that the bench times, one frame of the training crop each: the first
  takes all the variables and the frame (of which XLA keeps the arrays it uses); a later one only
  the part of the variables it reads (`ProgramOnPart.read`), with the earlier program's outputs.
  A per-frame method has none."""
  config = load_config(path, "quick")
  config.bench.batch_sizes = (1,)
  monkeypatch.setattr(aot, "_train_step", lambda *_: None)
  _, _, *rows = aot.run(config, aot.Target("cpu", jax.devices("cpu"), "cpu"))
  assert [(r.program, r.batch, r.devices) for r in rows] == [(p, 1, 1) for p in programs]
  if not programs:
    return
  method = get_method(config)
  frame = jax.ShapeDtypeStruct((1, *config.data.train_transform.crop_size, 3), jnp.uint8)
  variables = loop.create_state(config, method, parallel.make_mesh(), abstract=True)[0].variables
  first, second, *_ = rows
  assert _mib(frame) < first.arguments_mib <= _mib((variables, frame))
  if path.startswith("configs/dcfm"):  # the shallow prefix: its part of the variables, the frame
    part = method.encode_shallow.read(variables, frame)
    assert second.arguments_mib == pytest.approx(_mib((part, frame)), rel=1e-6)
  else:  # the temporal part: its variables, the new frame's state and the clip's kept states
    target, reference = jax.eval_shape(method.encode_frame, variables, frame)
    references = [reference] * clip_length(config.clip)
    part = method.decode_states.read(variables, target, references)
    assert _mib(references) < second.arguments_mib <= _mib((part, target, references))
  assert _mib(part) < _mib(variables) / 2


def test_a_method_of_ones_own_has_its_streamed_frames_programs_compiled(monkeypatch):
  """`Method.streamed_frames` of a plugin (tests/methods/two_speed.py): each program once, in its
  frames' order, the second given the first's output shapes."""
  config = load_config(QUICK, "quick")
  config.method.name = "tests.methods.two_speed:TwoSpeedMethod"
  config.bench.batch_sizes = (1,)
  monkeypatch.setattr(aot, "_train_step", lambda *_: None)
  _, _, network, refine = aot.run(config, aot.Target("cpu", jax.devices("cpu"), "cpu"))
  assert (network.program, refine.program) == ("network", "refine")
  logits = (1, *(size // 4 for size in config.data.train_transform.crop_size),
            config.data.num_classes)
  assert refine.outputs_mib == pytest.approx(np.prod(logits) * 4 / 2**20)
  # A program it lists with arguments it cannot take is named with the method.
  config.method.name = "tests.methods.two_speed:RefineOnTheFrame"
  with pytest.raises(ValueError) as raised:
    aot.run(config, aot.Target("cpu", jax.devices("cpu"), "cpu"))
  assert ("while compiling program 'refine' of RefineOnTheFrame.streamed_frames"
          in raised.value.__notes__)


def test_a_program_is_said_not_to_fit_only_over_the_devices_memory(capsys):
  traced = jax.jit(lambda x: x @ x + 1).trace(jax.ShapeDtypeStruct((256, 256), jnp.float32))
  row = lambda memory: aot._compiled_row(  # pylint: disable=protected-access
      "p", 1, 1, "one device", traced, aot.Target("cpu", jax.devices(), "cpu", memory))
  peak = row(None).peak_mib * 2**20
  fits, over = row(int(peak * 1.05)), row(int(peak / 1.5))
  assert 0.9 < fits.of_device <= 1 < over.of_device < 2
  assert capsys.readouterr().out.count("does not fit") == 1


def test_a_gpu_targets_compile_options_reach_xla():
  traced = jax.jit(lambda x: x + 1).trace(jax.ShapeDtypeStruct((4,), jnp.float32))
  lowered, seen = traced.lower(), []
  spy = types.SimpleNamespace(lower=lambda: types.SimpleNamespace(
      compile=lambda options=None: seen.append(options) or lowered.compile()))
  aot._compiled_row(  # pylint: disable=protected-access
      "p", 1, 1, "one device", spy, aot.Target("gpu:h100", jax.devices(), "gpu"))
  assert seen == [{"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0}]


def test_the_method_is_built_for_the_targets_platform(monkeypatch):
  """What a method picks by platform is the target's: the GPU's grouped depth-wise convs."""
  config = load_config(QUICK, "quick")
  built = []
  monkeypatch.setattr(aot, "_train_step", lambda config, method, *_: built.append(
      (parallel.target_platform(), method.module.backbone.dwconv_impl)))
  monkeypatch.setattr(aot, "_forwards", lambda *_: [])
  aot.run(config, aot.Target("gpu:h100", jax.devices(), "gpu"))
  assert built == [("gpu", "grouped")]
  assert parallel.target_platform() == "cpu"  # outside the run
  assert get_method(config).module.backbone.dwconv_impl == "shifted"


def test_targets_name_their_devices_and_what_to_install(monkeypatch):
  asked = []

  def topology(**kwargs):
    asked.append(kwargs)
    if kwargs.get("topology_name") == "v5e:2x2":
      raise RuntimeError("JAX TPU support not installed")
    if kwargs.get("topology_name") == "v9:2x2":
      raise RuntimeError("INVALID_ARGUMENT: Invalid TPU external name: TPU v9")
    tpu = kwargs["platform"] == "tpu"
    device = types.SimpleNamespace(device_kind="TPU v5 lite" if tpu else "NVIDIA H100")
    return types.SimpleNamespace(devices=[device] * (4 if tpu else int(kwargs["topology"][-1])))

  monkeypatch.setattr(topologies, "get_topology_desc", topology)
  gpus = aot.parse_target("gpu:h100x8")
  assert (gpus.platform, len(gpus.devices), gpus.memory_bytes) == ("gpu", 8, 80 * 10**9)
  assert asked[0]["topology"] == "1x1x8"
  config = asked[0]["target_config"]
  assert "device_memory_size: 80000000000 " in config and "NVIDIA H100" in config
  one = aot.parse_target("gpu:h200")
  assert (len(one.devices), one.memory_bytes, asked[-1]["topology"]) == (1, 141 * 10**9, "1x1x1")
  assert "memory_bandwidth: 4800000000000 " in asked[-1]["target_config"]
  assert gpus.compile_options == {"xla_gpu_enable_triton_gemm": False,
                                  "xla_gpu_autotune_level": 0}
  with pytest.raises(SetupError, match=r'--target=tpu:v5e:2x2: .*pip install "jax\[tpu\]=='):
    aot.parse_target("tpu:v5e:2x2")
  assert asked[-1] == {"platform": "tpu", "topology_name": "v5e:2x2"}
  chips = aot.parse_target("tpu:v5litepod-4")  # where libtpu is installed: one chip a device
  assert (chips.platform, len(chips.devices), chips.memory_bytes) == ("tpu", 4, 16 * 2**30)
  aot.parse_target("tpu:v5e:1x1")  # smaller than libtpu's default host: one host of its size
  assert asked[-1] == {"platform": "tpu", "topology_name": "v5e:1x1",
                       "chips_per_host_bounds": (1, 1, 1)}
  aot.parse_target("tpu:v5p:4x4x4")
  assert asked[-1] == {"platform": "tpu", "topology_name": "v5p:4x4x4"}
  with pytest.raises(SetupError, match=r"^--target=tpu:v9:2x2: TPU's compiler refuses the "
                     r"topology \(INVALID_ARGUMENT: .*\); name another, e.g. tpu:v5e:2x2$"):
    aot.parse_target("tpu:v9:2x2")
  for spec in ("gpu:a100", "gpu:h100x0", "gpu:h100x", "tpu:", "cuda"):
    with pytest.raises(SetupError, match="one of 'cpu', 'gpu:h100'"):
      aot.parse_target(spec)
  assert aot.parse_target("cpu").compile_options == {}


def test_command_prints_and_writes_the_figures(tmp_path):
  out = tmp_path / "aot.json"
  result = subprocess.run(
      [sys.executable, "-m", "vssjax.aot", f"--config={QUICK}:quick", "--target=cpu",
       "--config.bench.batch_sizes=(1,)", f"--out={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert "aot: train_step batch 4 for cpu: compiling..." in result.stdout
  assert "for cpu (1 device)" in result.stdout  # the child has the one CPU device
  written = json.loads(out.read_text())
  assert [r["program"] for r in written["rows"]] == ["train_step", "forward"]
  assert written["target"] == "cpu" and written["rows"][0]["temporaries_mib"] > 0
  assert written["rows"][0]["kernels"]["fusion"] > 0  # by opcode
  bad = subprocess.run([sys.executable, "-m", "vssjax.aot", f"--config={QUICK}:quick",
                        "--target=gpu:a100"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  assert bad.returncode == 1 and bad.stderr.strip().startswith("error: --target='gpu:a100'")
