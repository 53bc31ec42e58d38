"""The method's eval-mode forward as `--mode=bench` times it and `vssjax.aot` compiles it for a
target's devices: on the part of the variables it reads, as a predictor passes its programs them
(`ProgramOnPart`). A streaming predictor's programs for a frame are the method's own
(`Method.streamed_frames`)."""

from __future__ import annotations

from typing import Any, Callable

from data_pipelines.clip_sampling import clip_length
from vssjax.methods.base import Method
from vssjax.methods.variables_read import ProgramOnPart
from vssjax.models.layers import flatten_time, normalize_images


def forward_clip(method: Method) -> int:
  """The frames of one sample of the forward rows: a per-frame method's prediction is one frame
  through the network, whatever it trains on; the others' a training clip."""
  return 1 if method.predicts_frames_alone else clip_length(method.config.clip)


def forward_fn(method: Method) -> Callable:
  """Eval-mode forward of `method.module` on uint8 frames [B, T, H, W, 3].

  The module sees the B*T frames as one batch, or, for a method whose `module_takes_clips`, the
  clips themselves: DTERN's predicts a clip's last frame, re-running the whole network on all T
  frames as the release does (the streaming predictor keeps per-frame states instead: the
  `stream_frame` row).
  """
  dtype = method.config.model.dtype

  def forward(variables, frames):
    if not method.module_takes_clips:
      frames = flatten_time(frames)
    return method.module.apply(variables, normalize_images(frames, dtype), train=False)

  return forward


def forward_on_part(method: Method, variables, frames) -> tuple[ProgramOnPart, Any]:
  """`forward_fn` as a `ProgramOnPart`, and the part of `variables` it reads, as a predictor
  passes its network: a bfloat16 network's float32 kernels converted once, not at every call,
  and laid out as the program reads them (`ProgramOnPart.trace`)."""
  program = ProgramOnPart(forward_fn(method))
  return program, program.read(variables, frames)
