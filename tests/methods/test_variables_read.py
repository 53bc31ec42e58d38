import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_config, random_config_batch
from vssjax.methods import get_method, variables_read
from vssjax.methods.variables_read import ProgramOnPart, VariablesRead
from vssjax.train.host_init import host_filled

real_converted = variables_read._converted  # pylint: disable=protected-access


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


@jax.jit
def _bfloat16_product(x, kernel):
  return x.astype(jnp.bfloat16) @ kernel.astype(jnp.bfloat16)


def _mixed_precision_program(variables, x):
  """A bfloat16 layer's pattern: kernels converted, a norm's scale kept in float32, one array
  converted to two dtypes, a kernel converted inside a jitted function."""
  params = variables["params"]
  hidden = x.astype(jnp.bfloat16) @ params["a"]["kernel"].astype(jnp.bfloat16)
  hidden = hidden.astype(jnp.float32) * params["a"]["bias"]  # float32 use
  both = (params["b"]["kernel"].astype(jnp.bfloat16).astype(jnp.float32)
          + params["b"]["kernel"].astype(jnp.float16).astype(jnp.float32))
  mixed = _bfloat16_product(x, params["c"]["kernel"])
  return hidden + both[0] + mixed.astype(jnp.float32)


def _mixed_variables():
  rng = np.random.default_rng(0)
  return {"params": {name: {"kernel": rng.normal(size=(3, 3)).astype(np.float32),
                            "bias": rng.normal(size=(3,)).astype(np.float32)}
                     for name in "abc"}}


def test_an_array_the_program_only_converts_is_in_the_part_converted_with_the_same_bits():
  variables, x = _mixed_variables(), np.linspace(-1, 1, 3, dtype=np.float32)
  part = VariablesRead(_mixed_precision_program)(variables, x)
  dtypes = jax.tree.map(lambda leaf: leaf.dtype, part)
  assert dtypes == {"params": {"a": {"kernel": jnp.bfloat16, "bias": jnp.float32},
                               "b": {"kernel": jnp.float32, "bias": None},
                               "c": {"kernel": jnp.bfloat16, "bias": None}}}
  np.testing.assert_array_equal(part["params"]["a"]["kernel"],
                                variables["params"]["a"]["kernel"].astype(jnp.bfloat16))
  whole = np.asarray(jax.jit(_mixed_precision_program)(variables, x))
  bound = ProgramOnPart(_mixed_precision_program).bound(variables)
  np.testing.assert_array_equal(np.asarray(bound(x)), whole)


def test_an_array_the_program_returns_or_computes_with_keeps_its_dtype():
  def program(variables, x):
    kernel = variables["params"]["a"]["kernel"]
    return kernel, (x.astype(jnp.bfloat16) * kernel.astype(jnp.bfloat16)).astype(jnp.float32)

  part = VariablesRead(program)(_variables(), np.ones((2,), np.float32))
  assert part["params"]["a"]["kernel"].dtype == np.float32


def test_shapes_are_converted_as_shapes_their_sharding_kept():
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=device), _mixed_variables())
  part = VariablesRead(_mixed_precision_program)(shapes, jax.ShapeDtypeStruct((3,), np.float32))
  kernel = part["params"]["a"]["kernel"]
  assert isinstance(kernel, jax.ShapeDtypeStruct)
  assert (kernel.shape, kernel.dtype, kernel.sharding) == ((3, 3), jnp.bfloat16, device)


@pytest.mark.parametrize("path", ["configs/segformer/synthetic_mitb0.py",
                                  "configs/dcfm/synthetic_mitb0.py",
                                  "configs/dtern/synthetic_mitb0.py",
                                  "configs/sdcpc/synthetic_mitb0.py",
                                  "configs/etc/synthetic_psp18.py"])
def test_a_bfloat16_predictor_converts_its_kernels_once_and_answers_the_same_bits(
    path, monkeypatch):
  """Every built-in method's predictor, its programs given their kernels converted once, answers
  what it answers converting them at every call (the part's arrays as the variables hold them)."""
  config = load_config(path, "quick")
  config.model.dtype = "bfloat16"
  method = get_method(config)
  variables = host_filled(jax.eval_shape(method.init, jax.random.key(0),
                                         random_config_batch(config)), std=0.3)
  frames = np.random.default_rng(1).integers(0, 256, (3, 40, 56, 3), np.uint8)

  def answers():
    predictor = method.predictor(variables)
    labels = [np.asarray(a) for frame in frames for _, a in predictor.push(frame)]
    return labels + [np.asarray(a) for _, a in predictor.flush()]

  converted = []
  monkeypatch.setattr(variables_read, "_converted", lambda arrays, dtypes: (
      converted.extend(dtypes), real_converted(arrays, dtypes))[1])
  once = answers()
  assert converted and set(converted) == {np.dtype(jnp.bfloat16)}
  monkeypatch.setattr(variables_read, "_only_converted_to", lambda v, uses: None)
  at_every_call = answers()
  assert len(once) == len(frames)
  for a, b in zip(once, at_every_call):
    np.testing.assert_array_equal(a, b)
