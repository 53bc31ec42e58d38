"""The PyTorch reference's programs and ratios (its rows run in tests/test_bench.py)."""
import contextlib

import numpy as np
import pytest
import torch
from torch.profiler import profile

from tests.conftest import load_config
from vssjax import bench_torch
from vssjax.bench_rows import Row
from vssjax.bench_torch import jax_over_torch_ratios
from vssjax.methods import get_method


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


@pytest.mark.parametrize("eager, torch_compile, expected", [
    (True, True, ["torch_forward", "torch_compile_forward", "torch_train", "torch_compile_train"]),
    (True, False, ["torch_forward", "torch_train"]),
    (False, True, ["torch_compile_forward", "torch_compile_train"]),  # the device suite's 2nd pass
])
def test_reference_runs_the_asked_variants(monkeypatch, eager, torch_compile, expected):
  def build(method, dtype, batch, size, compiled):  # a program that does nothing
    return contextlib.nullcontext(lambda: None)

  monkeypatch.setattr(bench_torch, "available", lambda: True)
  monkeypatch.setattr(bench_torch, "has_reference", lambda method: True)
  monkeypatch.setattr(bench_torch, "_torch_forward", build)
  monkeypatch.setattr(bench_torch, "_torch_train_step", build)
  settings = {"batch_sizes": (1,), "dtypes": ("float32",), "train_step": True, "warmup": 0,
              "repeats": 1, "train_repeats": 1, "torch_compile": torch_compile}
  rows = bench_torch.run_reference(None, (8, 8), 2, settings, eager=eager)
  assert [r.phase for r in rows] == expected
  assert [r.batch for r in rows] == [1 if "forward" in name else 2 for name in expected]
  assert all((r.compile_s is not None) == ("compile" in r.phase) for r in rows)


@pytest.fixture(scope="module", name="segformer")
def segformer_method():
  """The demo's SegFormer (a half-width MiT-B0), quick: the reference's programs at its shape."""
  return get_method(load_config("configs/segformer/synthetic_mitb0.py", "quick"))


@pytest.mark.parametrize("call_ms, calls", [
    # transformers' SegFormer under torch.compile on the CPU: its recompile and autotuning's calls.
    ([44700, 666, 540, 3.0, 446, 3.2, 2.5, 2.5, 2.6], 8),
    ([900, 2.0, 2.1, 2.0, 9.0], 4),  # settled at the first three after the compile
    ([5.0, 1000.0] * 20, 30),  # never settles: stops at the most it tries
])
def test_a_compiled_models_calls_are_taken_until_they_settle(monkeypatch, call_ms, calls):
  """Timed after its first call alone, torch.compile's forward measured 1044 ms a call, 380x its
  eager forward: later calls were slow too. Its compile time is that of the calls until three in a
  row agree within 1.5x."""
  clock, made = [0.0], []
  monkeypatch.setattr(bench_torch.time, "perf_counter", lambda: clock[0])

  def run_once():
    clock[0] += call_ms[len(made)] / 1e3
    made.append(1)

  settled = bench_torch._compiled_and_settled  # pylint: disable=protected-access
  assert settled(run_once) == pytest.approx(sum(call_ms[:calls]) / 1e3)
  assert len(made) == calls


def test_only_segformer_on_a_mit_has_a_transformers_reference(segformer):
  """transformers has SegFormer, not DTERN or SD-CPC on the same MiT: its SegFormer timed for
  them would be reported as their PyTorch original."""
  for config_path in ("configs/dtern/synthetic_mitb0.py", "configs/sdcpc/synthetic_mitb0.py"):
    assert not bench_torch.has_reference(get_method(load_config(config_path, "quick")))
  assert bench_torch.has_reference(segformer)


def test_a_method_without_a_reference_says_so_instead_of_no_rows_unsaid(capsys):
  method = get_method(load_config("configs/dcfm/synthetic_mitb0.py", "quick"))
  assert bench_torch.run_reference(method, (32, 32), 2, {}) == []
  assert capsys.readouterr().out == (
      "bench: no PyTorch reference: transformers has SegFormer on a MiT only (bench.torch=False "
      "says none)\n")


def _conversions(run_once):
  """How many tensors `run_once()` converts to another dtype, and its output."""
  with profile() as profiled:
    out = run_once()
  return sum(e.count for e in profiled.key_averages() if e.key == "aten::_to_copy"), out


def test_the_bfloat16_forward_converts_its_weights_once_with_autocasts_numbers(segformer):
  """Like the JAX predictors, which convert a video's kernels once, the reference's bfloat16
  forward converts each weight at its first call only; what it computes is autocast's forward
  of a region a call."""
  torch.manual_seed(0)
  with bench_torch._torch_forward(segformer, "bfloat16", 1, (32, 32), compiled=False) as run_once:
    first, _ = _conversions(run_once)
    steady, logits = _conversions(run_once)
  assert steady == 1 < first  # the input only, then; its 4 stages' weights and more at first
  torch.manual_seed(0)
  with bench_torch._torch_segformer(segformer, compiled=False) as (_, model, _):
    pixels = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 32, 32),
                                                                       dtype=np.float32))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
      expected = model.eval()(pixel_values=pixels).logits
  assert logits.dtype == torch.bfloat16
  assert torch.equal(logits, expected)


@pytest.mark.parametrize("build", ["_torch_forward", "_torch_train_step"])
def test_cudnn_times_its_convolution_algorithms_while_the_reference_runs(build, segformer):
  """XLA autotunes a GPU's convolutions; the reference's cuDNN does so only with
  `cudnn.benchmark`, which its programs set and then give back."""
  assert not torch.backends.cudnn.benchmark  # torch's default
  with getattr(bench_torch, build)(segformer, "float32", 1, (32, 32), compiled=False) as run_once:
    run_once()
    assert torch.backends.cudnn.benchmark
  assert not torch.backends.cudnn.benchmark


def test_the_reference_trains_with_the_fused_adamw(segformer):
  """transformers' Trainer's default optimiser, one kernel for every parameter's update."""
  with bench_torch._torch_train_step(segformer, "float32", 1, (32, 32), compiled=False) as run_once:
    with profile() as profiled:
      run_once()
  assert "aten::_fused_adamw_" in {e.key for e in profiled.key_averages()}
