"""The PyTorch reference's ratios (its rows run in tests/test_bench.py)."""
import pytest

from vssjax.bench_rows import Row
from vssjax.bench_torch import jax_over_torch_ratios


def _row(phase, batch, frames_per_s, dtype="float32"):
  return Row(phase, dtype, batch, batch, None, 1.0, frames_per_s, None, None)


def test_ratios_pair_each_jax_program_with_the_torch_ones_of_its_phase_dtype_and_batch():
  rows = [_row("forward", 1, 300.0), _row("train_step", 16, 100.0),
          _row("torch_forward", 1, 100.0), _row("torch_compile_forward", 1, 200.0),
          _row("torch_train", 16, 50.0), _row("torch_forward", 4, 10.0),  # no JAX batch 4
          _row("torch_forward", 1, 30.0, dtype="bfloat16")]  # no JAX bfloat16 row
  ratios = jax_over_torch_ratios(rows)
  assert ratios == [
      {"phase": "forward", "dtype": "float32", "batch": 1,
       "jax_over_torch_eager": pytest.approx(3.0), "jax_over_torch_compile": pytest.approx(1.5)},
      {"phase": "train", "dtype": "float32", "batch": 16,
       "jax_over_torch_eager": pytest.approx(2.0)}]
