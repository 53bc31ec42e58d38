"""The JAX programs that `--mode=bench` times and `vssjax.aot` compiles for a target's devices:
the method's eval-mode forward, and the streaming predictors' programs for one frame, each on the
part of the variables it reads, as a predictor passes them (`ProgramOnPart`)."""

from __future__ import annotations

from typing import Any, Callable

from data_pipelines.clip_sampling import clip_length
from vssjax.methods.base import Method
from vssjax.methods.dcfm import DCFMMethod
from vssjax.methods.dtern import DTERNMethod
from vssjax.methods.variables_read import ProgramOnPart
from vssjax.models.layers import flatten_time, normalize_images


def forward_clip(method: Method) -> int:
  """The frames of one sample of the forward rows: a per-frame method's prediction is one frame
  through the network, whatever it trains on; the others' a training clip."""
  return 1 if method.predicts_frames_alone else clip_length(method.config.clip)


def forward_fn(method: Method) -> Callable:
  """Eval-mode forward of `method.module` on uint8 frames [B, T, H, W, 3].

  Per-frame methods see the B*T frames as one batch. DTERN's module takes the clip itself and
  predicts its last frame, re-running the whole network on all T frames as the release does (the
  streaming predictor keeps per-frame states instead: the `stream_frame` row).
  """
  dtype = method.config.model.dtype

  def forward(variables, frames):
    if not isinstance(method, DTERNMethod):
      frames = flatten_time(frames)
    return method.module.apply(variables, normalize_images(frames, dtype), train=False)

  return forward


def forward_on_part(method: Method, variables, frames) -> tuple[ProgramOnPart, Any]:
  """`forward_fn` as a `ProgramOnPart`, and the part of `variables` it reads, as a predictor
  passes its network: a bfloat16 network's float32 kernels converted once, not at every call,
  and laid out as the program reads them (`ProgramOnPart.trace`)."""
  program = ProgramOnPart(forward_fn(method))
  return program, program.read(variables, frames)


# A streaming predictor's programs, by name: (the `ProgramOnPart`, the arguments the predictor
# passes it, the part of the variables first). `OutputsOf(name, program, *args)` gives what a
# program returns, for the arguments of the next: its outputs (the bench runs it) or their shapes
# (vssjax/aot.py compiles it).
Programs = dict[str, tuple[ProgramOnPart, tuple]]
OutputsOf = Callable[..., Any]


def keyframe_programs(method: DCFMMethod, variables, frames, outputs_of: OutputsOf) -> Programs:
  """DCFM's frame programs at batch 1 (frames [1, H, W, 3]), each on the part of the variables it
  reads, in the dtypes it reads them (`ProgramOnPart`): 'keyframe' (the whole network: the
  projected common feature and the logits), then a non-key frame's two: 'non_key_shallow' (the
  shallow prefix) and 'non_key_fuse' (FFM and head per keyframe used: 2 in B mode, 1 in P
  mode)."""
  key_read = method.encode_keyframe.read(variables, frames)
  projected, _ = outputs_of("keyframe", method.encode_keyframe, key_read, frames)
  commons = [projected] * (2 if method.schedule.mode == "B" else 1)
  shallow_read = method.encode_shallow.read(variables, frames)
  shallow = outputs_of("non_key_shallow", method.encode_shallow, shallow_read, frames)
  return {"keyframe": (method.encode_keyframe, (key_read, frames)),
          "non_key_shallow": (method.encode_shallow, (shallow_read, frames)),
          "non_key_fuse": (method.fused_logits,
                           (method.fused_logits.read(variables, commons, shallow), commons,
                            shallow))}


def stream_frame_programs(method: DTERNMethod, variables, frames, clip: int,
                          outputs_of: OutputsOf) -> Programs:
  """DTERN's (and SD-CPC's) programs for a video frame once the predictor's clips are full, each
  on the part of the variables it reads (`ProgramOnPart`): 'stream_encode' (the backbone and the
  head's per-frame layers on the new frame [1, H, W, 3]) and 'stream_decode' (the head's temporal
  part on its state and the kept states of the `clip` frames, the new one last)."""
  encode_read = method.encode_frame.read(variables, frames)
  target, reference = outputs_of("stream_encode", method.encode_frame, encode_read, frames)
  references = [reference] * clip
  return {"stream_encode": (method.encode_frame, (encode_read, frames)),
          "stream_decode": (method.decode_states,
                            (method.decode_states.read(variables, target, references), target,
                             references))}


def non_key_frame_as_one_program(method: DCFMMethod) -> ProgramOnPart:
  """DCFM's non-key frame as one program, `(part, projected commons, frames) -> logits`: the
  shallow prefix and the fusion that the predictor runs as two (B mode computes the prefix when the
  frame comes and fuses it when the next keyframe does). The bench's A/B of one launch against two
  (`vssjax/methods/dcfm.py` says what XLA:CPU made of it), not a program the predictor runs."""

  def non_key_frame(part, keyframes, images):
    return method.fused_logits.fn(part, keyframes, method.encode_shallow.fn(part, images))

  return ProgramOnPart(non_key_frame)


def frame_programs(method: Method, variables, frames, outputs_of: OutputsOf) -> Programs:
  """The streaming predictor's programs for one frame: `keyframe_programs` for DCFM,
  `stream_frame_programs` (clips of the config's length) for DTERN and SD-CPC; none for a method
  that predicts each frame with its forward."""
  if isinstance(method, DCFMMethod):
    return keyframe_programs(method, variables, frames, outputs_of)
  if isinstance(method, DTERNMethod):
    return stream_frame_programs(method, variables, frames, clip_length(method.config.clip),
                                 outputs_of)
  return {}
