import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.methods.variables_read import ProgramOnPart, VariablesRead


def _variables():
  return {"params": {"a": {"kernel": np.full((2,), 2.0, np.float32),
                           "bias": np.ones((2,), np.float32)},
                     "b": {"kernel": np.ones((3, 3), np.float32)}},
          "batch_stats": {"a": {"mean": np.zeros((2,), np.float32)}}}


def test_a_program_that_fetches_a_dict_it_does_not_read_gets_none_in_its_arrays_places():
  def program(variables, x):
    a, unused = variables["params"]["a"], variables["params"]["b"]  # fetched, never used
    del unused
    return x * a["kernel"] + variables["batch_stats"]["a"]["mean"]

  read = VariablesRead(program)(_variables(), np.ones((2,), np.float32))
  assert read["params"]["a"]["bias"] is None and read["params"]["b"]["kernel"] is None
  assert len(jax.tree.leaves(read)) == 2  # a jitted call passes two arrays instead of four
  # (the unread dict stays: dropping it, the first form tried, fails the program)
  np.testing.assert_array_equal(read["params"]["a"]["kernel"],
                                _variables()["params"]["a"]["kernel"])
  x = np.arange(2, dtype=np.float32)
  np.testing.assert_array_equal(jax.jit(program)(read, x), program(_variables(), x))


def test_a_program_that_computes_with_a_value_it_drops_is_refused():
  def program(variables, x):
    dropped = variables["params"]["b"]["kernel"] * 2
    del dropped
    return x

  with pytest.raises(TypeError, match="program.* computes with variables its outputs do not"):
    VariablesRead(program)(_variables(), np.ones((2,), np.float32))


def test_an_effect_keeps_what_it_reads():
  def program(variables, x):
    jax.debug.callback(lambda value: None, variables["params"]["b"]["kernel"])
    return x + variables["params"]["a"]["bias"]

  read = VariablesRead(program)(_variables(), np.ones((2,), np.float32))
  assert read["params"]["b"]["kernel"] is not None and read["params"]["a"]["kernel"] is None


def test_one_trace_per_structure_and_signature_whatever_the_values():
  traces = []

  def program(variables, x):
    traces.append(x.shape)
    return jnp.sum(x) * variables["params"]["b"]["kernel"]

  read = VariablesRead(program)
  for offset in (1.0, 2.0):
    variables = jax.tree.map(lambda v, offset=offset: v + offset, _variables())
    subset = read(variables, np.ones((2,), np.float32))
    np.testing.assert_array_equal(subset["params"]["b"]["kernel"],
                                  variables["params"]["b"]["kernel"])
  assert traces == [(2,), (2,)]  # the mask's trace and the part's check, at the first call only
  read(_variables(), np.ones((5,), np.float32))  # another signature
  assert traces[2:] == [(5,), (5,)]
  read(_variables(), jnp.ones((5,), jnp.int32))  # another dtype
  assert traces[4:] == [(5,), (5,)]
  read(_variables(), jnp.ones((5,), jnp.float32))  # the same signature as a jax array
  assert len(traces) == 6
  read({"params": _variables()["params"]}, np.ones((2,), np.float32))  # another structure
  assert len(traces) > 4


def test_a_program_whose_branches_depend_on_a_shape_gets_each_shape_s_part():
  def program(variables, x):
    if x.shape[0] > 2:  # a clip long enough for the temporal part, say
      x = x * variables["params"]["b"]["kernel"][0, 0]
    return x * variables["params"]["a"]["kernel"][0]

  on_part = ProgramOnPart(program)
  passed = []  # the variables each call of the jitted program is given
  jitted = on_part.jitted
  on_part.jitted = lambda variables, x: (passed.append(variables), jitted(variables, x))[1]
  bound = on_part.bound(_variables())
  short, long = np.ones((2,), np.float32), np.ones((3,), np.float32)
  np.testing.assert_array_equal(bound(short), program(_variables(), short))
  np.testing.assert_array_equal(bound(long), program(_variables(), long))
  bound(short)
  assert "b" not in passed[0]["params"]
  assert passed[1]["params"]["b"]["kernel"] is not None
  assert passed[2] is passed[0]  # kept per signature for the variables it was bound to
  np.testing.assert_array_equal(on_part(_variables(), long), program(_variables(), long))


def test_a_jitted_program_reads_everything():
  """The docstring's caveat: pass the unjitted function."""
  program = jax.jit(lambda variables, x: x * variables["params"]["a"]["kernel"])
  read = VariablesRead(program)(_variables(), np.ones((2,), np.float32))
  assert len(jax.tree.leaves(read)) == 4


def test_unread_dicts_are_dropped_and_unread_arrays_beside_read_ones_are_none():
  def program(variables, x):
    return x * variables["params"]["a"]["kernel"]

  read = VariablesRead(program)(_variables(), np.ones((2,), np.float32))
  assert read == {"params": {"a": {"kernel": read["params"]["a"]["kernel"], "bias": None}}}
  assert VariablesRead(lambda variables, x: x)(_variables(), np.ones(2)) == {}
