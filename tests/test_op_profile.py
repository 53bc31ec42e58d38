"""vssjax.op_profile: per-HLO-op times of a compiled program, attributed to their JAX source."""

import itertools
import os
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import pytest
from absl import app

from tests.conftest import REPO
from vssjax import op_profile
from vssjax.errors import SetupError


def test_ops_of_a_program_are_timed_and_attributed(tmp_path):
  def program(x, w):
    return jnp.tanh(x @ w).sum()

  x, w = jnp.ones((256, 512)), jnp.ones((512, 256))
  compiled = jax.jit(program).lower(x, w).compile()
  ops = op_profile.profile_ops(lambda: compiled(x, w), compiled, tmp_path, calls=3)
  assert ops and all(op.ms_per_call > 0 for op in ops)
  assert [op.ms_per_call for op in ops] == sorted((op.ms_per_call for op in ops), reverse=True)
  assert abs(sum(op.share for op in ops) - 1) < 1e-6
  sources = [op.source for op in ops if op.source]
  assert sources and all(s.startswith("jit(program)") for s in sources)  # attributed
  assert ops[0].shape
  table = op_profile.format_op_table("program", ops, top=2)
  rows = [line for line in table.splitlines() if line.startswith("| ") and "ms/call" not in line]
  assert len(rows) == min(2, len(ops)) and ops[0].name in rows[0]
  # The trace stays, with what makes its table again elsewhere (a GPU's trace on a laptop); the
  # folder of the program (the process's parent) names it too.
  assert op_profile.ops_of_saved_trace(tmp_path) == ops
  program = tmp_path.parent / f"{tmp_path.name}_program"
  shutil.copytree(tmp_path, program / "process_0")
  assert op_profile.ops_of_saved_trace(program) == ops
  result = subprocess.run([sys.executable, "-m", "vssjax.op_profile", str(tmp_path), "--top=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
  assert result.stdout == op_profile.format_op_table(str(tmp_path), ops, top=1) + "\n"
  # Without --top, the table the bench wrote (format_op_table's default).
  result = subprocess.run([sys.executable, "-m", "vssjax.op_profile", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
  assert result.stdout == op_profile.format_op_table(str(tmp_path), ops) + "\n"


def test_a_folder_without_a_saved_program_or_trace_is_one_clear_line(tmp_path):
  with pytest.raises(SetupError, match=r"/nowhere is not a folder \(a relative path starts at "):
    op_profile.ops_of_saved_trace(tmp_path / "nowhere")
  with pytest.raises(SetupError, match=r"no program\.hlo\.txt; give a trace folder"):
    op_profile.ops_of_saved_trace(tmp_path)
  (tmp_path / "program.hlo.txt").write_text(_TWO_OPS)
  with pytest.raises(SetupError, match=r"no program\.json; give a trace folder"):
    op_profile.ops_of_saved_trace(tmp_path)
  op_profile.save_program(tmp_path, _TWO_OPS, calls=1)
  with pytest.raises(SetupError, match=r"no profiler trace \(\*\.xplane\.pb\) under it"):
    op_profile.ops_of_saved_trace(tmp_path)


def test_the_command_line_says_a_wrong_folder_in_one_line_and_wants_one_folder(tmp_path):
  with pytest.raises(SystemExit, match=r"^error: .*: no program\.hlo\.txt; give a trace folder"):
    op_profile.main(["op_profile", str(tmp_path)])
  with pytest.raises(app.UsageError, match="usage: python -m vssjax.op_profile TRACE_FOLDER"):
    op_profile.main(["op_profile", str(tmp_path), str(tmp_path)])


def test_a_trace_the_reader_cannot_table_keeps_its_program(tmp_path, monkeypatch):
  """A GPU trace whose layout the reader does not know yet keeps the program beside it, so that
  the table can be made from the folder after a fix of the reader, without the device again."""
  x = jnp.ones((128, 128))
  compiled = jax.jit(lambda x: jnp.tanh(x @ x.T)).lower(x).compile()
  monkeypatch.setattr(jax.profiler.ProfileData, "from_file", lambda path: _profile())
  with pytest.raises(LookupError, match="no op of"):
    op_profile.profile_ops(lambda: compiled(x), compiled, tmp_path, calls=2)
  monkeypatch.undo()  # the reader fixed
  assert op_profile.ops_of_saved_trace(tmp_path)


_STARTS = itertools.count(0, 10_000)  # events one after the other unless a start is given


def _event(name, ns, module=None, hlo_op=None, start=None):
  stats = {"hlo_module": module, "hlo_op": hlo_op}
  start = next(_STARTS) if start is None else start
  return types.SimpleNamespace(name=name, duration_ns=ns, start_ns=start, end_ns=start + ns,
                               stats=[(key, value) for key, value in stats.items() if value])


def _profile(*events, plane="/host:CPU", line="tf_XLAEigen/1"):
  line = types.SimpleNamespace(name=line, events=list(events))
  return types.SimpleNamespace(planes=[types.SimpleNamespace(name=plane, lines=[line])])


def test_only_the_named_programs_events_count():
  """A trace of training steps also holds other programs' ops (an eager op, the batch's copy),
  whose HLO instruction names can equal the step's own: events naming another module are left
  out, events naming none kept."""
  profile = _profile(_event("fusion.1", 10, "jit_step"), _event("fusion.1", 1000, "jit_other"),
                     _event("fusion.2", 5), _event("fusion.3", 2, "jit_step(12)"),
                     _event("ThunkExecutor::Execute", 7, "jit_step"),
                     _event("fusion.2", 300, "jit_step_fn"))
  assert op_profile._op_events(profile, "jit_step") == {  # pylint: disable=protected-access
      "fusion.1": 10, "fusion.2": 5, "fusion.3": 2}


def test_a_loops_time_is_its_own_not_its_bodys_ops_again():
  """On XLA:CPU a `while` event encloses its body's op events on the same line: its whole
  duration counted its body twice (a training step's loop at 16.6% beside its own body ops)."""
  profile = _profile(_event("while.3", 100, start=0), _event("fusion.1", 30, start=10),
                     _event("conditional.2", 40, start=50), _event("fusion.2", 25, start=55),
                     _event("fusion.1", 5, start=200))
  assert op_profile._op_events(profile, None) == {  # pylint: disable=protected-access
      "while.3": 30, "fusion.1": 35, "conditional.2": 15, "fusion.2": 25}


def test_an_instructions_shape_is_read_whole_a_tuples_too():
  _, instructions = op_profile._hlo_module(  # pylint: disable=protected-access
      "HloModule jit_step\n"
      "  %while.335 = (s32[], f32[8]{0}, (f32[2]{0}, f32[])) while(%tuple), condition=%c\n"
      "  %while.9 = (s32[], f32[], f32[], f32[], f32[], /*index=5*/f32[8]{0}) while(%t)\n"
      "  ROOT %fusion.1 = f32[1,48,48]{2,1,0} fusion(%p), kind=kLoop\n")
  assert instructions == {"while.335": ("(s32[], f32[8]{0}, (f32[2]{0}, f32[]))", ""),
                          "while.9": ("(s32[], f32[], f32[], f32[], f32[], f32[8]{0})", ""),
                          "fusion.1": ("f32[1,48,48]{2,1,0}", "")}


def test_a_trace_that_names_modules_otherwise_counts_every_modules_ops(tmp_path, monkeypatch):
  (tmp_path / "host.xplane.pb").write_bytes(b"")
  monkeypatch.setattr(jax.profiler.ProfileData, "from_file",
                      lambda path: _profile(_event("fusion.1", 4_000_000, "module 7")))
  hlo = "HloModule jit_step, is_scheduled=true\n  %fusion.1 = f32[2]{0} fusion()"
  (op,) = op_profile.ops_in_trace(tmp_path, hlo, calls=2)
  assert (op.name, op.ms_per_call, op.shape) == ("fusion.1", 2.0, "f32[2]{0}")


def test_the_newest_trace_of_a_folder_is_read(tmp_path, monkeypatch):
  """A training run resumed with the same train.profile_steps traces into the folder again: its
  table is of the newest trace, not of an earlier run's."""
  for name, mtime in (("old", 1_000_000), ("new", 2_000_000)):
    xplane = tmp_path / name / "host.xplane.pb"
    xplane.parent.mkdir()
    xplane.write_bytes(b"")
    os.utime(xplane, (mtime, mtime))
  monkeypatch.setattr(jax.profiler.ProfileData, "from_file", lambda path: _profile(
      _event("fusion.1" if "/new/" in path else "fusion.2", 1_000_000, "jit_step")))
  (op,) = op_profile.ops_in_trace(tmp_path, _TWO_OPS, calls=1)
  assert op.name == "fusion.1"


def test_gpu_kernels_count_for_the_hlo_op_they_carry():
  """A raw GPU trace has no `XLA Ops` line: its stream lines hold CUDA kernels named by their
  kernel, each with the HLO op it runs as a stat. Two kernels of one op add up, on one stream or
  two; a memcpy carries no op and is left out."""
  stream = types.SimpleNamespace(name="Stream #13(Kernel,MemcpyH2D)", events=[
      _event("loop_add_fusion", 10, "jit_step", "add_fusion"),
      _event("cutlass_gemm_a", 30, "jit_step", "custom-call.2"),
      _event("cutlass_gemm_b", 5, "jit_step", "custom-call.2"),
      _event("MemcpyH2D", 99)])
  other = types.SimpleNamespace(name="Stream #14(Kernel)",
                                events=[_event("loop_add_fusion", 4, "jit_step", "add_fusion")])
  profile = types.SimpleNamespace(planes=[
      types.SimpleNamespace(name="/device:GPU:0", lines=[stream, other])])
  assert op_profile._op_events(profile, "jit_step") == {  # pylint: disable=protected-access
      "add_fusion": 14, "custom-call.2": 35}


def test_a_device_planes_xla_ops_line_is_read_alone():
  xla_ops = types.SimpleNamespace(name="XLA Ops", events=[_event("fusion.4", 8)])
  kernels = types.SimpleNamespace(name="Stream #1", events=[_event("k", 8, hlo_op="fusion.4")])
  profile = types.SimpleNamespace(planes=[
      types.SimpleNamespace(name="/device:TPU:0", lines=[xla_ops, kernels])])
  assert op_profile._op_events(profile, None) == {  # pylint: disable=protected-access
      "fusion.4": 8}


def test_a_trace_without_the_programs_ops_says_what_it_holds(tmp_path, monkeypatch):
  """An empty table would read as a program that takes no time; the error names the trace's lines
  so that an unknown trace layout can be read from one run's output."""
  (tmp_path / "host.xplane.pb").write_bytes(b"")
  monkeypatch.setattr(jax.profiler.ProfileData, "from_file", lambda path: _profile(
      _event("volta_sgemm", 3, "jit_step"), plane="/device:GPU:0", line="Stream #7"))
  hlo = "HloModule jit_step, is_scheduled=true\n  %fusion.1 = f32[2]{0} fusion()"
  with pytest.raises(LookupError, match=r"/device:GPU:0/Stream #7: 1 events, e\.g\. "
                                        r"'volta_sgemm' with stats \['hlo_module'\]"):
    op_profile.ops_in_trace(tmp_path, hlo, calls=1)


def test_a_real_trace_without_the_programs_ops_lists_its_lines(tmp_path):
  """The same error from a real profiler trace, whose lines and events have no length: it must
  still be the LookupError naming the lines, the one clue an unknown layout gives."""
  x = jnp.ones((128, 128))
  compiled = jax.jit(lambda a: jnp.tanh(a @ a)).lower(x).compile()
  with jax.profiler.trace(str(tmp_path)):
    jax.block_until_ready(compiled(x))
  other = "HloModule jit_other, is_scheduled=true\n  %no_such_op.7 = f32[2]{0} fusion()"
  with pytest.raises(LookupError, match=r"no op of jit_other in the profiler's trace; its lines: "
                                        r"/host:CPU/\S.*: \d+ events, e\.g\. '"):
    op_profile.ops_in_trace(tmp_path, other, calls=1)


_TWO_OPS = ("HloModule jit_step, is_scheduled=true\n  %fusion.1 = f32[2]{0} fusion()\n"
            "  %fusion.2 = f32[4]{0} fusion()")


def test_shares_add_up_and_the_slowest_op_comes_first(tmp_path, monkeypatch):
  """The table reads top down as where the time goes: a 3 ms and a 1 ms op are 75% and 25% of
  the program, the 3 ms one first (not both 100%, nor the quick one on top)."""
  (tmp_path / "host.xplane.pb").write_bytes(b"")
  monkeypatch.setattr(jax.profiler.ProfileData, "from_file", lambda path: _profile(
      _event("fusion.2", 1_000_000, "jit_step"), _event("fusion.1", 3_000_000, "jit_step")))
  ops = op_profile.ops_in_trace(tmp_path, _TWO_OPS, calls=1)
  assert [(op.name, op.ms_per_call, op.share) for op in ops] == [
      ("fusion.1", 3.0, 0.75), ("fusion.2", 1.0, 0.25)]


def test_the_table_lists_the_slowest_ops_and_totals_them_all():
  """With top=2 of 3 ops the rows are the two slowest, and the header's summed time counts all
  three ops, not just the rows shown."""
  ops = [op_profile.OpTime(name, ms, ms / 6, "f32[2]", "") for name, ms in
         (("fusion.a", 3.0), ("fusion.b", 2.0), ("fusion.c", 1.0))]
  table = op_profile.format_op_table("step", ops, top=2)
  rows = [line for line in table.splitlines() if line.startswith("| ") and "ms/call" not in line]
  assert [row.split(" | ")[2] for row in rows] == ["fusion.a", "fusion.b"]
  assert "Summed op time 6.000 ms per call over 3 ops" in table
