"""The PyTorch side of `--mode=bench`: transformers' `SegformerForSemanticSegmentation` of the
config's MiT shape, timed in the same process and on the same device as the JAX programs (CUDA
when torch has it), eagerly and with `torch.compile`, and the JAX / PyTorch frames/s ratios.
torch and transformers are optional: without them there are no reference rows."""

from __future__ import annotations

import contextlib
import importlib.util
import time
from typing import Any, Callable, Iterator

import numpy as np

from vssjax.bench_rows import Row, announce, median_timing, program_name, report
from vssjax.methods.base import Method
from vssjax.models.mit import MixTransformer


@contextlib.contextmanager
def _torch_segformer(method: Method, compiled: bool):
  """HF `SegformerForSemanticSegmentation` of the same MiT shape, on the GPU when torch has one,
  `torch.compile`d if asked: `(torch, model, device)`. While the context is open cuDNN picks each
  convolution's algorithm by timing the candidates (`cudnn.benchmark`, at a shape's first call,
  which the timings leave out), as XLA autotunes its own on a GPU; by default it picks by
  heuristics."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import (  # pylint: disable=import-outside-toplevel
      SegformerConfig, SegformerForSemanticSegmentation)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  backbone = method.module.backbone
  model = SegformerForSemanticSegmentation(SegformerConfig(
      hidden_sizes=list(backbone.embed_dims), depths=list(backbone.depths),
      num_attention_heads=list(backbone.num_heads), sr_ratios=list(backbone.sr_ratios),
      mlp_ratios=[backbone.mlp_ratio] * 4, decoder_hidden_size=method.config.model.decoder_dim,
      num_labels=method.num_classes, semantic_loss_ignore_index=255)).to(device)
  benchmark = torch.backends.cudnn.benchmark
  torch.backends.cudnn.benchmark = True
  try:
    yield torch, (torch.compile(model) if compiled else model), device
  finally:
    torch.backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def _torch_forward(method: Method, dtype: str, batch: int, size: tuple[int, int],
                   compiled: bool) -> Iterator[Callable[[], Any]]:
  """One eval-mode forward of the torch SegFormer, to call while the context is open. bfloat16
  runs under autocast with fp32 weights, as the JAX side, and like a JAX predictor (which
  converts a video's kernels once) converts each weight once: one autocast region is held over
  all the calls, whose cast cache lasts a region, under `no_grad`, as `inference_mode` turns that
  cache off (one Linear under an outer region: 1 conversion a call under `no_grad`, 3 under
  `inference_mode`). float32 runs under `inference_mode`."""
  with _torch_segformer(method, compiled) as (torch, model, device):
    model.eval()
    pixels = torch.from_numpy(np.random.default_rng(0).standard_normal(
        (batch, 3, *size), dtype=np.float32)).to(device)
    bfloat16 = dtype == "bfloat16"

    def run_once():
      logits = model(pixel_values=pixels).logits
      if device == "cuda":
        torch.cuda.synchronize()
      return logits

    with (torch.no_grad() if bfloat16 else torch.inference_mode(),
          torch.autocast(device, dtype=torch.bfloat16, enabled=bfloat16)):
      yield run_once


@contextlib.contextmanager
def _torch_train_step(method: Method, dtype: str, batch: int, size: tuple[int, int],
                      compiled: bool) -> Iterator[Callable[[], Any]]:
  """One training step of the torch SegFormer, as the JAX train step: AdamW at the config's lr and
  weight decay, cross-entropy at label resolution (HF upsamples the logits to the labels,
  bilinear, align_corners=False, ignore index 255); bfloat16 under autocast, a region a step
  (the weights change at every step, so their conversions must too). The AdamW is torch's fused
  one (transformers' Trainer's default, `adamw_torch_fused`): all the parameters' updates in
  one kernel, as XLA fuses optax's."""
  with _torch_segformer(method, compiled) as (torch, model, device):
    model.train()
    optim = method.config.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr,
                                  weight_decay=optim.weight_decay, fused=True)
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.standard_normal((batch, 3, *size), dtype=np.float32)).to(device)
    labels = torch.from_numpy(rng.integers(0, method.num_classes, (batch, *size))).to(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def run_once():
      optimizer.zero_grad(set_to_none=True)
      with autocast:
        loss = model(pixel_values=pixels, labels=labels).loss
      loss.backward()
      optimizer.step()
      if device == "cuda":
        torch.cuda.synchronize()
      return loss

    yield run_once


def available() -> bool:
  """Whether the reference can run: torch and transformers both import."""
  return all(importlib.util.find_spec(name) for name in ("torch", "transformers"))


def has_reference(method: Method) -> bool:
  """Whether transformers has the model of `method`: SegFormer on a MiT (not on a backbone of
  one's own)."""
  return (method.config.method.name == "segformer"
          and isinstance(method.module.backbone, MixTransformer))


def run_reference(method: Method, size: tuple[int, int], train_batch: int,
                 settings: dict[str, Any], *, eager: bool = True) -> list[Row]:
  """The PyTorch reference at every (dtype, batch) of the JAX side, and its training step at every
  dtype when `bench.train_step`: eager unless `eager=False`, and `torch.compile` when
  `bench.torch_compile` (its compile time is that of the calls until they settle,
  `_compiled_and_settled`). No rows without torch or transformers, or for a method without a
  reference (`has_reference`)."""
  if not (available() and has_reference(method)):
    print("bench: no PyTorch reference: " + (
        "torch and transformers do not both import" if not available()
        else "transformers has SegFormer on a MiT only") + " (bench.torch=False says none)",
        flush=True)
    return []
  programs = [("forward", _torch_forward, batch, settings["repeats"])
              for batch in settings["batch_sizes"]]
  if settings["train_step"]:
    programs.append(("train", _torch_train_step, train_batch, settings["train_repeats"]))
  variants = ((False,) if eager else ()) + ((True,) if settings["torch_compile"] else ())
  rows = []
  for dtype in settings["dtypes"]:
    for phase, build, batch, repeats in programs:
      for compiled in variants:
        name = f"torch_compile_{phase}" if compiled else f"torch_{phase}"
        announce(name, dtype, batch, "compiling (first call)" if compiled else "running")
        try:
          with build(method, dtype, batch, size, compiled) as run_once:
            compile_s = _compiled_and_settled(run_once) if compiled else None
            seconds = median_timing(run_once, settings["warmup"], repeats).seconds
        except Exception as error:  # pylint: disable=broad-except
          # The reference is a comparison: a failing torch.compile/inductor on an unfamiliar host
          # must not cost the JAX rows already measured.
          print(f"bench: {program_name(name, dtype, batch)}: failed: {error!r}", flush=True)
          continue
        rows.append(report(Row(name, dtype, batch, batch, compile_s, seconds * 1e3,
                               batch / seconds, None, None)))
  return rows


# torch.compile's calls are taken as settled once this many in a row agree within this factor.
_SETTLED_CALLS, _SETTLED_SPREAD, _MOST_SETTLING_CALLS = 3, 1.5, 30


def _compiled_and_settled(run_once: Callable[[], Any]) -> float:
  """Seconds of a compiled model's first calls, until `_SETTLED_CALLS` in a row take within
  `_SETTLED_SPREAD` of each other (at most `_MOST_SETTLING_CALLS`): the first call compiles, and
  later ones may compile again. transformers' SegFormer recompiles once on its output capture,
  and on the CPU calls 2 to 6 took 666, 540, 3, 446 and 3 ms: timed after the first call alone,
  a median of 1044 ms made the compiled forward 380x slower than the eager one."""
  start, recent = time.perf_counter(), []
  for _ in range(_MOST_SETTLING_CALLS):
    called = time.perf_counter()
    run_once()
    recent = (recent + [time.perf_counter() - called])[-_SETTLED_CALLS:]
    if len(recent) == _SETTLED_CALLS and max(recent) < _SETTLED_SPREAD * min(recent):
      break
  return time.perf_counter() - start


def float32_flags() -> dict[str, bool | str]:
  """PyTorch's float32 arithmetic on CUDA: TF32 in matmuls (off by default) and in cuDNN
  convolutions (on by default); on the CPU, where neither applies, full float32."""
  import torch  # pylint: disable=import-outside-toplevel
  if not torch.cuda.is_available():
    return {"torch": "full float32 (CPU)"}
  return {"torch_matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
          "torch_cudnn_tf32": bool(torch.backends.cudnn.allow_tf32)}


def versions() -> dict[str, str]:
  """What the reference runs on: torch's and transformers' versions, and the attention
  implementation transformers picks for SegFormer (its `sdpa`, torch's fused attention, where the
  version has it; else its `eager` products and softmax)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  tiny = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(
      num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[4], patch_sizes=[3],
      strides=[2], num_attention_heads=[1], mlp_ratios=[1], decoder_hidden_size=4, num_labels=1))
  return {"torch": torch.__version__, "transformers": transformers.__version__,
          "attention": tiny.config._attn_implementation}  # pylint: disable=protected-access


def jax_over_torch_ratios(rows: list[Row]) -> list[dict[str, Any]]:
  """Per (phase, dtype, batch): JAX frames/s over torch eager and torch.compile frames/s (> 1: JAX
  is faster). Phases: 'forward' and 'train' (the JAX `train_step` row)."""
  jax_phase = {"forward": "forward", "train_step": "train"}
  jax_rows = {(jax_phase[r.phase], r.dtype, r.batch): r for r in rows if r.phase in jax_phase}
  ratios = {}
  for r in rows:
    if not r.phase.startswith("torch"):
      continue
    phase = r.phase.rsplit("_", 1)[1]
    key = (phase, r.dtype, r.batch)
    if key in jax_rows:
      entry = ratios.setdefault(key, {"phase": phase, "dtype": r.dtype, "batch": r.batch})
      name = "jax_over_torch_compile" if "compile" in r.phase else "jax_over_torch_eager"
      entry[name] = jax_rows[key].frames_per_s / r.frames_per_s
  return list(ratios.values())
