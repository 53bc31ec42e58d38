"""XLA's figures of compiled programs (FLOPs, bytes accessed, memory peaks) and the device's."""

import jax
import jax.numpy as jnp
import pytest

from vssjax.bench_figures import device_peak_mb, entry_kernels, program_peak_mb, xla_cost


class _Device:
  """A device whose `memory_stats()` are `stats`."""

  def __init__(self, stats):
    self._stats = stats

  def memory_stats(self):
    return self._stats


def test_each_rows_peak_memory_is_its_own_programs():
  """XLA's memory analysis of each program, whatever ran before it in the process, temporaries
  included; a row of two programs takes the larger."""
  large = jax.jit(lambda x: x * 2).lower(jnp.zeros((1024, 1024), jnp.float32)).compile()
  small = jax.jit(lambda x: x * 2).lower(jnp.zeros((8,), jnp.float32)).compile()
  jax.block_until_ready(large(jnp.zeros((1024, 1024), jnp.float32)))
  assert program_peak_mb(large) == pytest.approx(8.0)  # 4 MiB in, 4 MiB out
  assert program_peak_mb(small) < 0.01
  assert program_peak_mb(small, large) == program_peak_mb(large)
  # An 8 KiB vector whose 16 MiB outer product, a matmul operand, lives only inside the program.
  outer = jax.jit(lambda x: (jnp.outer(x, x) @ x)).lower(jnp.zeros((2048,), jnp.float32)).compile()
  assert program_peak_mb(outer) >= 16.0


def test_xla_cost_adds_up_the_programs_figures():
  """FLOPs and bytes accessed, in billions, summed over the programs given."""
  x = jnp.ones((64, 64), jnp.float32)
  product = jax.jit(lambda a: a @ a).lower(x).compile()
  double = jax.jit(lambda a: a * 2).lower(x).compile()
  for figure in ("flops", "bytes accessed"):
    assert xla_cost(figure, product) > 0 and xla_cost(figure, double) > 0
    assert xla_cost(figure, product, double) == pytest.approx(
        xla_cost(figure, product) + xla_cost(figure, double))
  assert xla_cost("flops", product) * 1e9 >= 2 * 64**3  # a multiply and an add per term
  # The product reads its 16 KiB matrix and writes one.
  assert xla_cost("bytes accessed", product) * 1e9 >= 2 * 64 * 64 * 4


class _Analysed:
  def __init__(self, analysis):
    self._analysis = analysis

  def cost_analysis(self):
    return self._analysis


def test_xla_cost_is_none_where_a_program_lacks_the_figure():
  """Older jax gives a list of dicts; a backend may give none, or no such figure."""
  assert xla_cost("flops", _Analysed([{"flops": 3e9}])) == 3.0
  assert xla_cost("flops", _Analysed({"flops": 3e9}), _Analysed({"flops": 1e9})) == 4.0
  assert xla_cost("flops", _Analysed({"flops": 3e9}), _Analysed(None)) is None
  assert xla_cost("bytes accessed", _Analysed({"flops": 3e9})) is None
  assert xla_cost("flops", _Analysed([])) is None


def test_a_program_without_a_memory_analysis_has_no_peak():
  class NoAnalysis:
    def memory_analysis(self):
      raise RuntimeError("UNIMPLEMENTED")

  assert program_peak_mb(NoAnalysis()) is None


def test_device_peak_memory_is_in_mib_and_absent_where_the_backend_has_none(monkeypatch):
  """Accelerators report bytes; the JSON's figure is in MiB (2**20 bytes). The CPU reports no
  statistics: None, not 0."""
  monkeypatch.setattr(jax, "local_devices", lambda: [_Device({"peak_bytes_in_use": 3 * 2**20})])
  assert device_peak_mb() == 3.0
  monkeypatch.setattr(jax, "local_devices", lambda: [_Device({})])
  assert device_peak_mb() is None


def test_a_donating_programs_peak_leaves_out_the_donated_arguments():
  """Donated arguments' buffers are reused for the outputs: counted twice, a train step's peak
  (which donates its state) would be overstated by the size of the state."""
  class Donating:
    def memory_analysis(self):
      return type("Stats", (), dict(argument_size_in_bytes=3 * 2**20,
                                    output_size_in_bytes=3 * 2**20,
                                    alias_size_in_bytes=2 * 2**20,
                                    temp_size_in_bytes=2**20, peak_memory_in_bytes=0))()

  assert program_peak_mb(Donating()) == 5.0


class _Text:
  """A compiled program whose HLO text is `text`."""

  def __init__(self, text):
    self._text = text

  def as_text(self):
    return self._text


# The shape of a GPU program's HLO: a library call returns a tuple (its result and a workspace),
# whose type has spaces, and a long tuple's type has `/*index=N*/` comments (a line ending in a
# backslash goes on in the next).
_GPU_HLO = """HloModule jit_f

%fused_add (p: bf16[8]) -> bf16[8] {
  %p = bf16[8]{0} parameter(0)
  ROOT %add = bf16[8]{0} add(%p, %p)
}

ENTRY %main.3 (x.1: bf16[8,8], w.1: bf16[8,8]) -> (bf16[8], bf16[8], bf16[8]) {
  %x.1 = bf16[8,8]{1,0} parameter(0), metadata={op_name="x"}
  %w.1 = bf16[8,8]{1,0} parameter(1)
  %custom-call.1 = (bf16[8,8]{1,0}, s8[33554432]{0}) custom-call(%x.1, %w.1), \
custom_call_target="__cublas$lt$matmul"
  %get-tuple-element.1 = bf16[8,8]{1,0} get-tuple-element(%custom-call.1), index=0
  %bitcast.1 = bf16[64]{0} bitcast(%get-tuple-element.1)
  %loop_add_fusion = bf16[8]{0} fusion(%bitcast.1), kind=kLoop, calls=%fused_add
  %copy.1 = bf16[8]{0} copy(%loop_add_fusion)
  %constant.1 = bf16[] constant(0)
  ROOT %tuple.1 = (bf16[8]{0}, /*index=1*/bf16[8]{0}, bf16[8]{0}) tuple(%copy.1, %copy.1, %copy.1)
}
"""


def test_the_entry_computations_kernels_are_counted_by_opcode():
  """Its fusions, library calls (tuple-typed) and copies; not the instructions that only name,
  pack or reinterpret buffers, nor the instructions of the computations a fusion calls."""
  assert entry_kernels(_Text(_GPU_HLO)) == {"custom-call": 1, "fusion": 1, "copy": 1}
  # An instruction this reading does not parse makes the count unknown, not low.
  unparsed = _GPU_HLO.replace("%copy.1 = bf16[8]{0} copy(", "%copy.1 copy(")
  assert entry_kernels(_Text(unparsed)) is None
  assert entry_kernels(_Text("")) is None


def test_a_compiled_program_with_more_work_counts_more_kernels():
  x = jnp.ones((64, 64), jnp.float32)
  double = entry_kernels(jax.jit(lambda a: a * 2).lower(x).compile())
  several = entry_kernels(jax.jit(lambda a: (jnp.tanh(a @ a), a.sum())).lower(x).compile())
  assert 0 < sum(double.values()) < sum(several.values())
