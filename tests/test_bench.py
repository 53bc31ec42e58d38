"""Smoke tests of `--mode=bench` (SegFormer with the torch reference, DCFM's keyframe rows, DTERN's
streaming frame): they run and report consistent numbers.

No timing assertions: the shared 2-core CPU makes times meaningless as pass/fail criteria.
"""

import dataclasses
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.conftest import load_config
from vssjax import bench, bench_torch, op_profile
from vssjax.bench_figures import kernel_count, program_peak_mb, xla_cost
from vssjax.bench_rows import Row
from vssjax.errors import SetupError
from vssjax.methods import get_method, losses, rounds
from vssjax.methods.variables_read import ProgramOnPart
from vssjax.train import loop


def _progress_lines(capsys) -> list[str]:
  """The `bench: ...` lines printed so far, without the final table."""
  return [line for line in capsys.readouterr().out.splitlines() if line.startswith("bench: ")]


def _assert_progress(lines: list[str], programs: list[str]) -> None:
  """Each program is announced before its compile and reported, timed, in that order; a JAX
  program's time until its call returned too (PyTorch's calls synchronise themselves), and a video
  frame's time streamed. '<program>: compiling' is a program announced alone (a streaming
  predictor's, whose outputs the next program takes), '<row>: timed' a row reported alone (its
  programs so announced)."""
  expected = []
  for program in programs:
    program, _, only = program.partition(": ")
    dispatch = "" if program.startswith("torch") else r" \(dispatch \d+\.\d\d ms\)"
    if not program.startswith(("torch", "forward", "train_step")):
      dispatch += r", \d+\.\d\d ms/frame streamed"
    if only != "timed":
      expected.append(f"bench: {program}: (compiling|running)\\.\\.\\.")
    if only != "compiling":
      expected.append(
          rf"bench: {program}: (compiled in \d+\.\d s, )?\d+\.\d\d ms/call{dispatch}")
  assert len(lines) == len(expected), lines
  for line, pattern in zip(lines, expected):
    assert re.fullmatch(pattern, line), (line, pattern)


def test_bench_reports_finite_numbers(tmp_path, capsys, monkeypatch):
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.bench.update(dtypes=("float32",), warmup=1, repeats=2, train_repeats=1, torch=True,
                      torch_compile=False, input_size=(64, 80))  # the training crop is 48x48
  # Every row runs at bench.input_size, the JAX train step's crops included (as the PyTorch
  # reference's): the ratio of the two training rows compares equal work.
  spec_sizes, torch_sizes = set(), set()
  batch_spec, run_reference = loop.batch_spec, bench_torch.run_reference

  def recorded_batch_spec(c):
    spec = batch_spec(c)
    spec_sizes.add(spec["frames"].shape[2:4])
    return spec

  def recorded_reference(method, size, *args, **kwargs):
    torch_sizes.add(tuple(size))
    return run_reference(method, size, *args, **kwargs)

  monkeypatch.setattr(loop, "batch_spec", recorded_batch_spec)
  monkeypatch.setattr(bench_torch, "run_reference", recorded_reference)
  results = bench.run(config, str(tmp_path))
  assert spec_sizes == torch_sizes == {(64, 80)} and results["input_size"] == [64, 80]
  monkeypatch.undo()
  # Progress as it goes, the PyTorch rows included: a large config is silent for minutes otherwise.
  _assert_progress(_progress_lines(capsys), [
      "forward float32 batch 1", "forward float32 batch 4", "train_step float32 batch 4",
      "torch_forward float32 batch 1", "torch_forward float32 batch 4",
      "torch_train float32 batch 4"])

  method = get_method(config)
  spec = loop.batch_spec(config)
  shapes = jax.eval_shape(
      lambda: method.init(jax.random.PRNGKey(0),
                          {k: jax.numpy.zeros(s.shape, s.dtype) for k, s in spec.items()}))
  assert results["params"] == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))

  rows = {(r["phase"], r["batch"]): r for r in results["rows"]}
  # The PyTorch reference runs side by side at the same dtype and batch sizes, training included.
  assert set(rows) == {("forward", 1), ("forward", 4), ("train_step", 4), ("torch_forward", 1),
                       ("torch_forward", 4), ("torch_train", 4)}
  ratios = {(r["phase"], r["batch"]): r for r in results["torch_ratios"]}
  assert set(ratios) == {("forward", 1), ("forward", 4), ("train", 4)}
  for batch in (1, 4):
    assert ratios[("forward", batch)]["jax_over_torch_eager"] == pytest.approx(
        rows[("forward", batch)]["frames_per_s"] / rows[("torch_forward", batch)]["frames_per_s"])
  assert ratios[("train", 4)]["jax_over_torch_eager"] == pytest.approx(
      rows[("train_step", 4)]["frames_per_s"] / rows[("torch_train", 4)]["frames_per_s"])
  for row in (rows[("forward", 1)], rows[("forward", 4)], rows[("train_step", 4)]):
    for key in ("compile_s", "latency_ms", "frames_per_s"):
      assert math.isfinite(row[key]) and row[key] > 0, (row["phase"], key, row[key])
    assert row["gflops"] > 0
    # XLA's count of the bytes its kernels move: at least the float32 parameters, read once.
    assert row["gb_accessed"] * 1e9 >= 4 * results["params"], row["phase"]
    assert 0 < row["dispatch_ms"] <= row["latency_ms"]  # each call returns before its results
    assert row["kernels"] > 0 and row["streamed_ms"] is None  # a video frame's figure only
    # XLA's buffer assignment of the program, on every backend: at least its float32 parameters.
    assert row["peak_memory_mb"] >= 4 * results["params"] / 2**20, row["phase"]
  assert math.isfinite(rows[("torch_train", 4)]["latency_ms"])
  assert rows[("torch_train", 4)]["dispatch_ms"] is None  # torch's calls synchronise themselves
  assert rows[("torch_train", 4)]["gb_accessed"] is None
  assert rows[("torch_train", 4)]["kernels"] is None
  # The backward pass and the optimizer's update run more kernels than the forward.
  assert rows[("train_step", 4)]["kernels"] > rows[("forward", 4)]["kernels"]
  for figure in ("gflops", "gb_accessed"):
    assert rows[("forward", 4)][figure] > rows[("forward", 1)][figure]
  # The train step holds the optimizer state and the activations for the gradients besides.
  assert rows[("train_step", 4)]["peak_memory_mb"] > rows[("forward", 4)]["peak_memory_mb"]
  assert results["device_peak_memory_mb"] is None  # the CPU backend keeps no runtime statistics
  saved = json.loads((tmp_path / "bench.json").read_text())
  assert saved["params"] == results["params"]
  markdown = (tmp_path / "bench.md").read_text()
  assert markdown.count("| forward |") == 2
  # The summary above the table: millions of parameters, the input as height x width.
  assert f"{results['params'] / 1e6:.3f}M params, input 64x80, " in markdown
  # What the float32 rows compare: each side's matmul/convolution precision (on the CPU, no TF32
  # flag of torch's applies; a GPU run records them).
  assert saved["float32_precision"] == {"jax": "platform default", "torch": "full float32 (CPU)"}
  # What the reference ran on: its versions and transformers' attention (torch's fused one).
  assert saved["torch_reference"] == {"torch": torch.__version__,
                                      "transformers": transformers.__version__,
                                      "attention": "sdpa"}
  assert (f"PyTorch reference: torch {torch.__version__}, transformers "
          f"{transformers.__version__}, attention sdpa\n") in markdown

  # The device suite adds the torch.compile rows later (bench_torch's variants are tested in
  # tests/test_bench_torch.py); they join the ratios, bench.json and bench.md.
  def compiled_rows(method, size, train_batch, settings, *, eager):
    assert not eager and settings["torch_compile"] and train_batch == 4
    return [Row("torch_compile_forward", "float32", 1, 1, 5.0, 2.0, 500.0, None, None)]

  monkeypatch.setattr(bench_torch, "run_reference", compiled_rows)
  bench.add_torch_compile_rows(config, results, str(tmp_path))
  saved = json.loads((tmp_path / "bench.json").read_text())
  assert len(saved["rows"]) == len(rows) + 1
  ratio = next(r for r in saved["torch_ratios"] if (r["phase"], r["batch"]) == ("forward", 1))
  assert ratio["jax_over_torch_compile"] == pytest.approx(
      rows[("forward", 1)]["frames_per_s"] / 500)
  assert ratio["jax_over_torch_eager"] == ratios[("forward", 1)]["jax_over_torch_eager"]
  assert "| torch_compile_forward | float32 | 1 |" in (tmp_path / "bench.md").read_text()


def _streaming_bench(config_path: str, arg: str, workdir) -> tuple[dict, dict]:
  """Bench of a quick config at batch 1, float32, with op profiles and no train step or torch:
  (results, rows by phase)."""
  config = load_config(config_path, arg)
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), warmup=1, repeats=2,
                      train_step=False, torch=False, profile=True)
  results = bench.run(config, str(workdir))
  return results, {r["phase"]: r for r in results["rows"]}


def _count_bound_calls(monkeypatch, list_lengths: dict[str, set[int]] | None = None
                       ) -> dict[str, int]:
  """Counts the calls of every program a predictor binds (`ProgramOnPart.bound`), by program;
  adds the lengths of the list arguments of each call to `list_lengths[program]`, if given."""
  calls: dict[str, int] = {}
  bind = ProgramOnPart.bound

  def counting_bound(program, variables):
    call = bind(program, variables)
    name = program.fn.__name__

    def counted(*args):
      calls[name] = calls.get(name, 0) + 1
      if list_lengths is not None:
        list_lengths.setdefault(name, set()).update(len(a) for a in args if isinstance(a, list))
      return call(*args)
    return counted

  monkeypatch.setattr(ProgramOnPart, "bound", counting_bound)
  return calls


def test_bench_reports_dcfm_key_and_non_key_frames(tmp_path, capsys, monkeypatch, caplog):
  lengths: dict[str, set[int]] = {}
  calls = _count_bound_calls(monkeypatch, lengths)
  with jax.log_compiles(True):
    results, rows = _streaming_bench("configs/dcfm/synthetic_mitb0.py", "quick,k=3", tmp_path)
  # Both frames are timed through the predictor's own calls (one to check that it returns arrays,
  # warmup 1, repeats 2, then 3 streams of 2 frames), which run the executables the bench compiled
  # for its figures: XLA compiles each program once. The non-key frame as one program (an A/B) is
  # timed through such a call too.
  assert calls == {"_encode_keyframe_impl": 10, "_encode_shallow_impl": 10,
                   "_fused_logits_impl": 10, "non_key_frame": 10}
  # B mode fuses the non-key frame with its two keyframes' features (P mode with one).
  assert lengths["_fused_logits_impl"] == lengths["non_key_frame"] == {2}
  for program in calls:
    assert caplog.text.count(f"XLA compilation of jit({program})") <= 1, program
  lines = _progress_lines(capsys)
  _assert_progress(lines[:-1], ["forward float32 batch 1", "keyframe float32 batch 1: compiling",
                                "non_key_shallow float32 batch 1: compiling",
                                "keyframe float32 batch 1: timed", "non_key_B float32 batch 1",
                                "non_key_B_one_program float32 batch 1"])
  assert re.fullmatch(r"bench: video_avg_K3 float32 batch 1: \d+\.\d\d ms/call "
                      r"\(dispatch \d+\.\d\d ms\), \d+\.\d\d ms/frame streamed", lines[-1])
  # bench.profile: one op table per timed program, the keyframe's led by real network ops.
  assert set(results["op_profiles"]) == {"forward_float32_b1", "keyframe_float32",
                                         "non_key_shallow_float32", "non_key_fuse_float32"}
  keyframe_table = (tmp_path / "profile" / "keyframe_float32.md").read_text()
  assert "encoder" in keyframe_table and "ms/call" in keyframe_table
  # Each trace stays with its program: the table can be made again from the folder alone.
  trace_dir = tmp_path / "profile" / "keyframe_float32" / "process_0"
  assert keyframe_table.split("\n", 1)[1] == op_profile.format_op_table(
      "", op_profile.ops_of_saved_trace(trace_dir)).split("\n", 1)[1]
  assert "train_step" not in rows  # bench.train_step=False skips it
  key, non_key, average = rows["keyframe"], rows["non_key_B"], rows["video_avg_K3"]
  for figure in ("gflops", "gb_accessed", "kernels"):
    assert 0 < non_key[figure] < key[figure]
    assert average[figure] == pytest.approx((key[figure] + 2 * non_key[figure]) / 3)
  for value in ("latency_ms", "dispatch_ms", "streamed_ms"):
    assert average[value] == pytest.approx((key[value] + 2 * non_key[value]) / 3)
    assert 0 < non_key[value] and 0 < key[value]
  assert average["frames_per_s"] == pytest.approx(1e3 / average["latency_ms"])
  # The non-key frame's share of a keyframe's time (issue 9's 10%), in the JSON and the summary.
  share = {"phase": "non_key_B", "of": "keyframe", "dtype": "float32",
           "latency": pytest.approx(non_key["latency_ms"] / key["latency_ms"]),
           "streamed": pytest.approx(non_key["streamed_ms"] / key["streamed_ms"])}
  assert results["frame_shares"] == [share]
  assert (f"non_key_B / keyframe, float32: latency {share['latency'].expected:.1%}, streamed "
          f"{share['streamed'].expected:.1%}") in (tmp_path / "bench.md").read_text()
  # The same work as the two programs (XLA's count differs by its fusions: 0.25% here).
  one_program = rows["non_key_B_one_program"]
  assert one_program["gflops"] == pytest.approx(non_key["gflops"], rel=0.01)
  assert one_program["latency_ms"] > 0


def test_bench_reports_dtern_stream_frame(tmp_path, capsys, monkeypatch):
  """DTERN's steady-state video frame: the per-frame part of the network on one frame plus the
  head's temporal part on the kept clip, cheaper than the release-style forward of all 4 frames."""
  lengths: dict[str, set[int]] = {}
  calls = _count_bound_calls(monkeypatch, lengths)
  results, rows = _streaming_bench("configs/dtern/synthetic_mitb0.py", "quick", tmp_path)
  assert calls == {"_encode_frame_impl": 10, "_decode_states_impl": 10}  # the predictor's calls
  assert results["frame_shares"] == []  # one kind of frame
  # The new frame's state replaces the oldest of the clip's 4 kept ones: a 5th would time (and
  # compile) another program than the one the figures are of.
  assert lengths["_decode_states_impl"] == {4}
  _assert_progress(_progress_lines(capsys), ["forward float32 batch 1",
                                             "stream_encode float32 batch 1: compiling",
                                             "stream_frame float32 batch 1"])
  assert set(results["op_profiles"]) == {"forward_float32_b1", "stream_encode_float32",
                                         "stream_decode_float32"}
  stream, clip = rows["stream_frame"], rows["forward"]
  assert clip["frames"] == 4 and stream["frames"] == 1
  # Throughput counts every frame of the clip: batch x clip length per call.
  assert clip["frames_per_s"] == pytest.approx(clip["frames"] * 1e3 / clip["latency_ms"])
  assert 0 < stream["gflops"] < clip["gflops"]
  for key in ("compile_s", "latency_ms"):
    assert math.isfinite(stream[key]) and stream[key] > 0
  assert stream["frames_per_s"] == pytest.approx(1e3 / stream["latency_ms"])


def test_bench_reports_the_streamed_frames_of_a_method_of_ones_own(tmp_path, capsys):
  """A plugin's predictor's kinds of frame (`Method.streamed_frames`, tests/methods/two_speed.py:
  the network on one frame in four, a refinement of its logits on the others) get the built-in
  methods' rows: each frame timed through its bound programs, and the video's average frame, each
  figure weighted by the frames' shares."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.method.name = "tests.methods.two_speed:TwoSpeedMethod"
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), warmup=1, repeats=2,
                      train_step=False, torch=False, profile=True)
  results = bench.run(config, str(tmp_path))
  rows = {r["phase"]: r for r in results["rows"]}
  lines = _progress_lines(capsys)
  _assert_progress(lines[:-1], ["forward float32 batch 1", "network float32 batch 1: compiling",
                                "full float32 batch 1: timed", "reuse float32 batch 1"])
  assert lines[-1].startswith("bench: video_avg_every4 float32 batch 1: ")
  assert set(results["op_profiles"]) == {"forward_float32_b1", "network_float32",
                                         "refine_float32"}
  full, reuse, average = rows["full"], rows["reuse"], rows["video_avg_every4"]
  assert full["gflops"] == pytest.approx(rows["forward"]["gflops"])  # the same network
  for value in ("gflops", "gb_accessed", "kernels", "latency_ms", "dispatch_ms", "streamed_ms"):
    assert 0 < reuse[value] and 0 < full[value]
    assert average[value] == pytest.approx(0.25 * full[value] + 0.75 * reuse[value])
  assert reuse["gflops"] < full["gflops"] / 10
  # The later frame's time as a share of the first's, as DCFM's non-key frame against its keyframe.
  assert results["frame_shares"] == [{
      "phase": "reuse", "of": "full", "dtype": "float32",
      "latency": pytest.approx(reuse["latency_ms"] / full["latency_ms"]),
      "streamed": pytest.approx(reuse["streamed_ms"] / full["streamed_ms"])}]
  assert "reuse / full, float32: latency " in (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize("method, error, said", [
    ("RefineOnTheFrame", ValueError, r"while compiling program 'refine' of "
     r"RefineOnTheFrame.streamed_frames"),
    ("ReuseReturningNothing", TypeError, r"ReuseReturningNothing.streamed_frames: frame 'reuse''s "
     r"run\(\) returns no array")])
def test_a_streamed_frame_that_fails_names_itself_and_keeps_the_frames_before(
    tmp_path, method, error, said):
  """A plugin's mistake in its second frame: the error names the frame (and the program that
  does not compile), and the first frame's row, timed before it, is in the report."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.method.name = f"tests.methods.two_speed:{method}"
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), warmup=1, repeats=2,
                      train_step=False, torch=False)
  with pytest.raises(error) as raised:
    bench.run(config, str(tmp_path))
  assert re.search(said, "\n".join([str(raised.value), *getattr(raised.value, "__notes__", [])]))
  saved = json.loads((tmp_path / "bench.json").read_text())
  assert [row["phase"] for row in saved["rows"]] == ["forward", "full"]


def _small_program():
  """(run_once, compiled) of a program large enough for XLA:CPU's trace to show its ops."""
  x = jnp.ones((128, 128))
  compiled = jax.jit(lambda a: jnp.tanh(a @ a)).lower(x).compile()
  return lambda: compiled(x), compiled


def test_a_profiled_programs_folder_holds_its_latest_trace_alone(tmp_path):
  """A bench run again in the same workdir replaces the program's trace: `op_profile` reads the
  newest trace of a folder, and old ones would pile up in it run after run."""
  profiler = bench._Profiler(str(tmp_path), enabled=True)  # pylint: disable=protected-access
  trace_dir = tmp_path / "profile" / "tanh" / "process_0"
  stale = trace_dir / "plugins" / "profile" / "2026_01_01_00_00_00" / "host.xplane.pb"
  stale.parent.mkdir(parents=True)
  stale.write_bytes(b"an earlier run's")
  profiler("tanh", *_small_program())
  (trace,) = trace_dir.rglob("*.xplane.pb")
  assert trace != stale
  assert profiler.paths == {"tanh": str(tmp_path / "profile" / "tanh.md")}
  table = (tmp_path / "profile" / "tanh.md").read_text()
  assert "| ms/call |" in table and "Profiling failed" not in table, table


def test_each_process_traces_into_its_own_folder(tmp_path, monkeypatch):
  """On a workdir shared by the processes of a multi-host run, each profiles the same program at
  the same time: process 1 traces into process_1/ and leaves process 0's folder alone (the table
  is process 0's to write)."""
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  profiler = bench._Profiler(str(tmp_path), enabled=True)  # pylint: disable=protected-access
  process_0 = tmp_path / "profile" / "tanh" / "process_0" / "program.hlo.txt"
  process_0.parent.mkdir(parents=True)
  process_0.write_text("process 0's")
  (tmp_path / "profile" / "tanh" / "process_1").mkdir()  # an earlier run's, replaced
  profiler("tanh", *_small_program())
  assert list((tmp_path / "profile" / "tanh" / "process_1").rglob("*.xplane.pb"))
  assert process_0.read_text() == "process 0's"
  assert not profiler.paths and not (tmp_path / "profile" / "tanh.md").exists()


def test_random_state_has_the_fresh_states_layout():
  """The bench's parameters are drawn on the host instead of by the (slow to compile) init
  program: same tree, shapes, dtypes and shardings, BatchNorm variances 1, Adam's state fresh."""
  config = load_config("configs/dtern/synthetic_mitb0.py", "quick")
  method = get_method(config)
  mesh = loop.parallel.mesh_from_config(config)
  state, sharding = bench._random_state(config, method, mesh)  # pylint: disable=protected-access
  abstract, _, _, _ = loop.create_state(config, method, mesh, abstract=True)
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  for leaf, shape, leaf_sharding in zip(jax.tree.leaves(state), jax.tree.leaves(abstract),
                                        jax.tree.leaves(sharding)):
    assert (leaf.shape, leaf.dtype, leaf.sharding) == (shape.shape, shape.dtype, leaf_sharding)
  variances = [x for path, x in jax.tree_util.tree_leaves_with_path(state.model_state)
               if jax.tree_util.keystr(path).endswith("['var']")]
  assert variances and all(np.all(np.asarray(v) == 1) for v in variances)
  kernels = np.concatenate([np.ravel(x) for path, x in jax.tree_util.tree_leaves_with_path(
      state.params) if jax.tree_util.keystr(path).endswith("['kernel']")])
  assert np.isfinite(kernels).all() and 0.015 < kernels.std() < 0.025
  assert all(not np.asarray(x).any() for x in jax.tree.leaves(state.opt_state))  # Adam: zeros


def test_bench_runs_the_etc_temporal_train_step_with_flow(tmp_path):
  """ETC's temporal loss needs the loader's flow in the batch; the bench makes one. Its forward
  is timed on single frames, as it predicts."""
  config = load_config("configs/etc/synthetic_psp18.py", "quick,variant=temporal")
  assert "flow" in loop.batch_spec(config)
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), warmup=1, repeats=1, train_repeats=1,
                      torch=False)
  rows = {r["phase"]: r for r in bench.run(config, str(tmp_path))["rows"]}
  assert math.isfinite(rows["train_step"]["latency_ms"]) and rows["train_step"]["gflops"] > 0
  # ETC predicts frame by frame: batch 1's forward is one frame, not its training pair.
  assert rows["forward"]["batch"] == 1 and rows["forward"]["frames"] == 1
  # A training batch of pairs: its frames (batch x 2) are what the throughput counts.
  train = rows["train_step"]
  assert train["batch"] == config.data.batch_size and train["frames"] == 2 * train["batch"]
  assert train["frames_per_s"] == pytest.approx(train["frames"] * 1e3 / train["latency_ms"])


def test_a_train_step_the_method_refuses_stops_the_bench_before_any_row(tmp_path, capsys):
  """The train step is traced first: ETC's multi-frame pool larger than the feature maps of the
  crops is refused before minutes of forward rows are measured and thrown away."""
  config = load_config("configs/etc/synthetic_psp18.py", "quick,variant=distill")
  config.method.multi_frame_pool = 99
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), torch=False)
  (tmp_path / "bench.md").write_text("an earlier run's table")
  (tmp_path / "bench.json").write_text("{}")
  with pytest.raises(SetupError, match=r"method.multi_frame_pool=99: .* \d+x\d+ feature maps"):
    bench.run(config, str(tmp_path))
  assert not _progress_lines(capsys)  # no program was compiled
  # No report, rather than an earlier run's figures (the device suite would report them).
  assert not (tmp_path / "bench.md").exists() and not (tmp_path / "bench.json").exists()


def test_a_program_that_fails_keeps_the_rows_measured_before_it(tmp_path, monkeypatch):
  """The train step running out of memory after the forward rows: they are written, with what
  stopped the rest, and the error goes on to the command line; the PyTorch reference is skipped."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), warmup=0, repeats=1, torch=True)
  oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9 bytes.\npage 2")

  def failing_train_step(*args):
    raise oom

  def no_reference(*args, **kwargs):
    raise AssertionError("the PyTorch reference ran after a failed JAX program")

  monkeypatch.setattr(bench, "_bench_train_step", failing_train_step)
  monkeypatch.setattr(bench_torch, "run_reference", no_reference)
  with pytest.raises(jax.errors.JaxRuntimeError) as info:
    bench.run(config, str(tmp_path))
  assert info.value is oom
  saved = json.loads((tmp_path / "bench.json").read_text())
  assert [(r["phase"], r["batch"]) for r in saved["rows"]] == [("forward", 1)]
  assert saved["stopped_by"] == ("JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating 9 "
                                 "bytes.")
  report = (tmp_path / "bench.md").read_text()
  assert "| forward | float32 | 1 |" in report
  assert ("stopped by an error (JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory "
          "allocating 9 bytes.); the programs after the last row" in report)

  # A failure before any row writes nothing: there is nothing to keep.
  monkeypatch.setattr(bench, "_bench_forward", failing_train_step)
  with pytest.raises(jax.errors.JaxRuntimeError):
    bench.run(config, str(tmp_path / "second"))
  assert not (tmp_path / "second").exists()


@pytest.mark.parametrize("field, value, message", [
    ("dtypes", ("float16",), r"bench.dtypes: \['float16'\] not among"),
    ("dtypes", (), r"bench.dtypes is empty: name at least one of"),
    ("input_size", (30,), r"bench.input_size=\(30,\): two whole numbers of pixels"),
    ("input_size", (30, 0), r"bench.input_size=\(30, 0\)"),
    ("batch_sizes", (1, 0), r"bench.batch_sizes=\(1, 0\): whole numbers of at least 1"),
    ("warmup", -1, r"bench.warmup=-1: an integer of at least 0"),
    ("repeats", 0, r"bench.repeats=0: an integer of at least 1"),
    ("train_repeats", 0, r"bench.train_repeats=0: an integer of at least 1"),
])
def test_bench_settings_that_cannot_be_measured_are_setup_errors(field, value, message):
  """Each was a bare ValueError or StatisticsError from deep in the bench, some after compiles."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  bench.checked_settings(config)  # the defaults are fine
  config.bench[field] = value
  with pytest.raises(SetupError, match=message):
    bench.checked_settings(config)


def test_a_batch_size_of_zero_is_named_as_the_config_field_it_is():
  """`data.batch_size=0` was refused as 'bench.batch_sizes=(1, 0)', a setting never given."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.data.batch_size = 0
  with pytest.raises(SetupError, match=r"^data.batch_size=0 \(the throughput batch when "
                     r"bench.batch_sizes is empty, and the train step's\): a whole number"):
    bench.checked_settings(config)


def test_a_frame_of_several_programs_is_timed_as_one_chain():
  """As the predictor runs them: dispatched one after the other, waited for once at the end;
  compile seconds, GFLOPs, GB accessed and kernels add up, the peak is the larger program's."""
  x = jnp.ones((64, 64), jnp.float32)
  first = jax.jit(lambda a: a @ a).lower(x).compile()
  second = jax.jit(lambda a: a * 2).lower(x).compile()
  calls = []

  def run_frame():
    calls.append(1)
    return second(first(x))

  row = bench._frame_row("non_key_P", "float32", [(first, 1.5), (second, 2.0)], run_frame,
                         {"warmup": 2, "repeats": 3})
  # 2 warm-up calls, 3 timed ones, then 3 streams of 3 frames.
  assert len(calls) == 14 and row.frames_per_s == pytest.approx(1e3 / row.latency_ms)
  assert 0 < row.dispatch_ms <= row.latency_ms and row.streamed_ms > 0
  assert row.compile_s == 3.5
  assert row.gflops == pytest.approx(xla_cost("flops", first, second))
  assert row.gb_accessed == pytest.approx(xla_cost("bytes accessed", first, second))
  assert row.kernels == kernel_count(first) + kernel_count(second) and kernel_count(first) > 0
  assert row.peak_memory_mb == program_peak_mb(first, second)


def test_a_sliding_window_config_reports_the_cost_of_a_whole_test_frame(tmp_path):
  """SegFormer's Cityscapes 1024x1024 setting predicts a frame as the batch of its windows: the
  slide_frame row is one frame (four 48x48 windows of the quick 64x64 test frame) and costs
  about four training-crop forwards plus the stitching."""
  config = load_config("configs/segformer/cityscapes1024_mitb0.py", "quick")
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), warmup=1, repeats=1,
                      train_step=False, torch=False)
  results = bench.run(config, str(tmp_path))
  rows = {r["phase"]: r for r in results["rows"]}
  forward, frame = rows["forward"], rows["slide_frame"]
  assert frame["batch"] == 1 and frame["frames"] == 1
  settings = bench.checked_settings(config)
  assert tuple(settings["input_size"]) == (48, 48)
  assert 4 * forward["gflops"] < frame["gflops"] < 5 * forward["gflops"]
  # Its frame is not the header's input size: the report says which it is.
  assert results["slide_frame"] == {"frame": [64, 64], "window": [48, 48], "stride": [32, 32]}
  assert ("slide_frame: a 64x64 frame (data.eval_transform.scale, not the input size) in 48x48 "
          "windows at stride 32x32") in (tmp_path / "bench.md").read_text()


def test_a_rematerialising_train_step_counts_its_recomputation_and_says_so(tmp_path, capsys):
  """`model.remat` recomputes the blocks' forward pass in the backward one: XLA's count of the
  train step's FLOPs grows by it (the forward's stays), and the summary says so."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), warmup=0, repeats=1,
                      train_repeats=1, torch=False)
  flops = {}
  for remat in ("", "nothing_saveable"):
    config.model.remat = remat
    results = bench.run(config, str(tmp_path / (remat or "kept")))
    assert results["remat"] == remat
    flops[remat] = {row["phase"]: row["gflops"] for row in results["rows"]}
  assert flops[""]["forward"] == flops["nothing_saveable"]["forward"]
  assert flops["nothing_saveable"]["train_step"] > 1.03 * flops[""]["train_step"]
  out = capsys.readouterr().out
  assert out.count("train_step rematerialises the backbone's blocks "
                   "(model.remat='nothing_saveable'): its time and GFLOPs include their "
                   "recomputation") == 1
  # The kept activations' run says nothing of a recomputation it does not do.
  assert "rematerialises" not in (tmp_path / "kept" / "bench.md").read_text()


def test_a_scanned_backbone_reports_no_train_step_flops_rather_than_one_blocks(tmp_path, capsys,
                                                                             monkeypatch):
  """XLA's cost analysis counts a loop's body once: with `model.scan_blocks` the train step's
  FLOP estimate would count one block a stage, so the bench reports none there, and says why
  (the forward, unrolled in prediction, keeps its). The train step's compile time includes its
  tracing, done before the forward rows (as every other row's compile time includes its)."""
  trace = bench._trace_train_step  # pylint: disable=protected-access

  def slow_trace(*args):
    step = trace(*args)
    return dataclasses.replace(step, trace_s=step.trace_s + 1000.0)

  monkeypatch.setattr(bench, "_trace_train_step", slow_trace)
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.model.scan_blocks = True
  config.model.remat = "nothing_saveable"  # the summary then speaks of its time alone
  config.model.backbone_overrides.depths = (2, 2, 2, 2)
  config.bench.update(dtypes=("float32",), batch_sizes=(1,), warmup=0, repeats=1,
                      train_repeats=1, torch=False)
  results = bench.run(config, str(tmp_path))
  rows = {row["phase"]: row for row in results["rows"]}
  for figure in ("gflops", "gb_accessed"):
    assert rows["forward"][figure] > 0 and rows["train_step"][figure] is None
  assert results["scan_blocks"]
  assert rows["train_step"]["compile_s"] >= 1000.0 > rows["forward"]["compile_s"]
  out = capsys.readouterr().out
  assert ("train_step GFLOPs and GB accessed n/a: model.scan_blocks trains each stage's blocks as "
          "a loop") in out
  assert "(model.remat='nothing_saveable'): its time includes their recomputation" in out


def _loss_compiled_with_its_rounds(loss_fn, logits, labels):
  """(the value-and-gradient program of `loss_fn`, compiled, and the loops of rounds it noted)."""
  loss = lambda x, y: loss_fn(x, y)[0]
  with rounds.rounds_traced() as loops:
    compiled = jax.jit(jax.value_and_grad(loss)).lower(logits, labels).compile()
  return compiled, loops


def _row_of(compiled) -> Row:
  return Row("train_step", "float32", 8, 8, 0.0, 1.0, 8.0, xla_cost("flops", compiled), None,
             None, xla_cost("bytes accessed", compiled))


def test_the_train_steps_cost_counts_every_round_of_its_loss(monkeypatch):
  """XLA's cost analysis counts the loss's loop over its rounds once: the bench adds the other
  rounds, each as the loss on one sample costs, which comes to about the count of the same loss
  taken in one round. OHEM's selection pass and its bisection are loops too, whose other
  iterations are added alike."""
  logits = jax.ShapeDtypeStruct((8, 12, 10, 5), jnp.float32)
  labels = jax.ShapeDtypeStruct((8, 48, 40), jnp.int32)
  in_rounds, loops = _loss_compiled_with_its_rounds(losses.cross_entropy_at_label_size, logits,
                                                    labels)
  assert [loop.count for loop in loops] == [8]
  counted = _row_of(in_rounds)
  added = bench._with_loss_rounds(counted, loops)  # pylint: disable=protected-access
  ohem, ohem_loops = _loss_compiled_with_its_rounds(losses.ohem_cross_entropy_at_label_size,
                                                    logits, labels)
  # The selection pass, the bisection for the k-th largest loss, then the loss.
  assert [loop.count for loop in ohem_loops] == [8, 31, 8]
  selection, bisection = (jax.jit(loop.program).lower(*loop.arguments).compile()
                          for loop in ohem_loops[:2])
  assert bisection.as_text().count("compare(") == 1  # one count over the 8 x 48 x 40 losses
  with_rounds = bench._with_loss_rounds  # pylint: disable=protected-access
  assert with_rounds(_row_of(ohem), ohem_loops).gflops == pytest.approx(
      with_rounds(_row_of(ohem), ohem_loops[2:]).gflops + 7 * xla_cost("flops", selection)
      + 30 * xla_cost("flops", bisection), rel=1e-6)
  monkeypatch.setattr(rounds.parallel, "batch_shards", lambda: 8)  # a round of all 8 samples
  whole, _ = _loss_compiled_with_its_rounds(losses.cross_entropy_at_label_size, logits, labels)
  assert counted.gflops < 0.5 * xla_cost("flops", whole)
  assert added.gflops == pytest.approx(xla_cost("flops", whole), rel=0.1)
  assert added.gb_accessed == pytest.approx(xla_cost("bytes accessed", whole), rel=0.2)


def test_a_train_step_row_without_xla_figures_keeps_none_after_the_loss_rounds():
  """A backend whose cost analysis lacks a figure leaves the row's None: no rounds added to it."""
  loop = rounds.Rounds(4, jnp.sum, (jax.ShapeDtypeStruct((1, 6, 5, 3), jnp.float32),))
  row = Row("train_step", "float32", 4, 4, 0.0, 1.0, 4.0, None, None, None, None)
  added = bench._with_loss_rounds(row, [loop])  # pylint: disable=protected-access
  assert added.gflops is None and added.gb_accessed is None
