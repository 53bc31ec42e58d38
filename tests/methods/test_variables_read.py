import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.layout import Format, Layout

from tests.conftest import load_config, random_config_batch, record_parts
from vssjax.bench_programs import forward_clip, forward_fn
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


def test_a_program_whose_branches_depend_on_a_shape_gets_each_shape_s_part(monkeypatch):
  def program(variables, x):
    if x.shape[0] > 2:  # a clip long enough for the temporal part, say
      x = x * variables["params"]["b"]["kernel"][0, 0]
    return x * variables["params"]["a"]["kernel"][0]

  on_part = ProgramOnPart(program)
  passed = record_parts(monkeypatch, on_part)  # the variables each call of the program is given
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


def test_an_array_whose_slices_are_only_converted_is_in_the_part_converted():
  """DCFM's FFM: its kernel's two slices, each converted for the input it multiplies."""
  def program(variables, x):
    params = variables["params"]
    kernel = params["a"]["kernel"]
    first = kernel[0].astype(jnp.bfloat16)  # slice + squeeze, then converted
    rest = kernel[1:].T.astype(jnp.bfloat16)
    kept = params["b"]["kernel"][0] * 2.0  # a slice computed with in float32
    return (x.astype(jnp.bfloat16) @ rest).astype(jnp.float32) + first[:2] + kept[:2]

  variables, x = _mixed_variables(), np.linspace(-1, 1, 3, dtype=np.float32)
  part = VariablesRead(program)(variables, x)
  assert part["params"]["a"]["kernel"].dtype == jnp.bfloat16
  assert part["params"]["b"]["kernel"].dtype == np.float32
  bound = ProgramOnPart(program).bound(variables)
  np.testing.assert_array_equal(np.asarray(bound(x)), np.asarray(jax.jit(program)(variables, x)))


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


def _column_major_matrices(part):
  """In place of the layouts XLA picks (`Layout.AUTO`), which on a CPU are the default ones: each
  matrix column-major, as XLA lays out for a GPU the kernels it would otherwise transpose."""
  return jax.tree.map(lambda x: Format(Layout(major_to_minor=(1, 0)) if x.ndim == 2 else None,
                                       x.sharding), part)


def test_a_bound_program_gets_its_part_in_the_layouts_it_was_compiled_for(monkeypatch):
  monkeypatch.setattr(variables_read, "_layouts_left_to_xla", _column_major_matrices)
  variables, x = _mixed_variables(), np.linspace(-1, 1, 3, dtype=np.float32)
  program = ProgramOnPart(_mixed_precision_program)
  passed = record_parts(monkeypatch, program)
  bound = program.bound(variables)
  for _ in range(2):
    np.testing.assert_array_equal(np.asarray(bound(x)),
                                  np.asarray(program(variables, x)))  # all variables, as they are
  assert passed[0] is passed[1]  # laid out once
  layouts = jax.tree.map(lambda leaf: leaf.format.layout.major_to_minor, passed[0])
  assert layouts == {"params": {"a": {"kernel": (1, 0), "bias": (0,)},
                                "b": {"kernel": (1, 0), "bias": None},
                                "c": {"kernel": (1, 0), "bias": None}}}
  part = jax.device_put(program.read(variables, x))
  placed = variables_read.laid_out(part, program.compiled(part, x))
  assert placed["params"]["a"]["bias"] is part["params"]["a"]["bias"]  # already so: not copied


def _counting_traces(monkeypatch) -> tuple[ProgramOnPart, list]:
  """A program, and the list to which each of its compiles (`ProgramOnPart.trace`) appends."""
  program = ProgramOnPart(lambda variables, x: x * variables["params"]["a"]["kernel"])
  traces = []
  trace = program.trace
  monkeypatch.setattr(program, "trace", lambda *args: (traces.append(1), trace(*args))[1])
  return program, traces


def test_a_program_compiles_once_per_signature_for_every_video(monkeypatch):
  program, traces = _counting_traces(monkeypatch)
  x = np.ones((2,), np.float32)
  first, second = _variables(), jax.tree.map(lambda v: v + 1, _variables())
  np.testing.assert_array_equal(program.bound(first)(x), [2, 2])
  np.testing.assert_array_equal(program.bound(second)(x), [3, 3])  # another video's variables
  assert len(traces) == 1
  program.bound(second)(np.ones((3, 2), np.float32))  # another signature
  assert len(traces) == 2


@pytest.mark.skipif(jax.device_count() < 2, reason="one device (the suite's CPU run has four)")
def test_a_program_compiles_for_each_device_it_predicts_on(monkeypatch):
  program, traces = _counting_traces(monkeypatch)
  x = np.ones((2,), np.float32)
  np.testing.assert_array_equal(program.bound(_variables())(x), [2, 2])
  out = program.bound(jax.device_put(_variables(), jax.devices()[1]))(x)
  np.testing.assert_array_equal(out, [2, 2])
  assert out.devices() == {jax.devices()[1]} and len(traces) == 2


_BUILT_IN_METHODS = ["configs/segformer/synthetic_mitb0.py", "configs/dcfm/synthetic_mitb0.py",
                     "configs/dtern/synthetic_mitb0.py", "configs/sdcpc/synthetic_mitb0.py",
                     "configs/etc/synthetic_psp18.py"]


def _bfloat16_method_and_variables(path: str):
  """The quick config's method computing in bfloat16, and random variables for it."""
  config = load_config(path, "quick")
  config.model.dtype = "bfloat16"
  method = get_method(config)
  return method, host_filled(jax.eval_shape(method.init, jax.random.key(0),
                                            random_config_batch(config)), std=0.3)


@pytest.mark.parametrize("path", _BUILT_IN_METHODS)
def test_a_bfloat16_predictor_converts_its_kernels_once_and_answers_the_same_bits(
    path, monkeypatch):
  """Every built-in method's predictor, its programs given their kernels converted once, answers
  what it answers converting them at every call (the part's arrays as the variables hold them)."""
  method, variables = _bfloat16_method_and_variables(path)
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


@pytest.mark.parametrize("path", _BUILT_IN_METHODS)
def test_a_bfloat16_network_on_its_laid_out_part_answers_as_on_all_its_variables(path):
  """Every built-in network's forward, bound to its variables (the part it reads, converted and
  laid out as XLA picks), against the plain jit of it on all the variables as they are. On a GPU
  XLA lays the convolutions' kernels out otherwise, and cuDNN may pick another algorithm for them:
  close there; on the CPU the same program, so the same bits."""
  method, variables = _bfloat16_method_and_variables(path)
  frames = np.random.default_rng(2).integers(0, 256, (1, forward_clip(method), 40, 56, 3),
                                             np.uint8)
  forward = forward_fn(method)
  bound = jax.tree.leaves(ProgramOnPart(forward).bound(variables)(frames))
  plain = jax.tree.leaves(jax.jit(forward)(variables, frames))
  assert len(bound) == len(plain) > 0
  for got, expected in zip(bound, plain):
    got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-2 * scale)
    if jax.default_backend() == "cpu":
      np.testing.assert_array_equal(got, expected)
