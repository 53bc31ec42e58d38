"""vssjax.op_profile: per-HLO-op times of a compiled program, attributed to their JAX source."""

import types

import jax
import jax.numpy as jnp

from vssjax import op_profile


def test_ops_of_a_program_are_timed_and_attributed():
  def program(x, w):
    return jnp.tanh(x @ w).sum()

  x, w = jnp.ones((256, 512)), jnp.ones((512, 256))
  compiled = jax.jit(program).lower(x, w).compile()
  ops = op_profile.profile_ops(lambda: compiled(x, w), compiled, calls=3)
  assert ops and all(op.ms_per_call > 0 for op in ops)
  assert [op.ms_per_call for op in ops] == sorted((op.ms_per_call for op in ops), reverse=True)
  assert abs(sum(op.share for op in ops) - 1) < 1e-6
  sources = [op.source for op in ops if op.source]
  assert sources and all(s.startswith("jit(program)") for s in sources)  # attributed
  assert ops[0].shape
  table = op_profile.format_op_table("program", ops, top=2)
  rows = [line for line in table.splitlines() if line.startswith("| ") and "ms/call" not in line]
  assert len(rows) == min(2, len(ops)) and ops[0].name in rows[0]


def _event(name, ns, module=None):
  stats = {"hlo_module": module} if module else {}
  return types.SimpleNamespace(name=name, duration_ns=ns, stats=list(stats.items()))


def _profile(*events):
  line = types.SimpleNamespace(name="tf_XLAEigen/1", events=list(events))
  return types.SimpleNamespace(planes=[types.SimpleNamespace(name="/host:CPU", lines=[line])])


def test_only_the_named_programs_events_count():
  """A trace of training steps also holds other programs' ops (an eager op, the batch's copy),
  whose HLO instruction names can equal the step's own: events naming another module are left
  out, events naming none kept."""
  profile = _profile(_event("fusion.1", 10, "jit_step"), _event("fusion.1", 1000, "jit_other"),
                     _event("fusion.2", 5), _event("fusion.3", 2, "jit_step(12)"),
                     _event("ThunkExecutor::Execute", 7, "jit_step"))
  assert op_profile._op_events(profile, "jit_step") == {  # pylint: disable=protected-access
      "fusion.1": 10, "fusion.2": 5, "fusion.3": 2}


def test_a_trace_that_names_modules_otherwise_counts_every_modules_ops(tmp_path, monkeypatch):
  (tmp_path / "host.xplane.pb").write_bytes(b"")
  monkeypatch.setattr(jax.profiler.ProfileData, "from_file",
                      lambda path: _profile(_event("fusion.1", 4_000_000, "module 7")))
  compiled = types.SimpleNamespace(
      as_text=lambda: "HloModule jit_step, is_scheduled=true\n  %fusion.1 = f32[2]{0} fusion()")
  (op,) = op_profile.ops_in_trace(tmp_path, compiled, calls=2)
  assert (op.name, op.ms_per_call, op.shape) == ("fusion.1", 2.0, "f32[2]{0}")
