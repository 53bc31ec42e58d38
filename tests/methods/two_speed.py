"""A method of one's own whose streaming predictor runs two kinds of frame: the bench's and
`vssjax.aot`'s streamed frames (`Method.streamed_frames`) of a method neither knows."""

import dataclasses

import jax

from vssjax.methods.segformer import SegFormerMethod
from vssjax.methods.streamed_frames import StreamedFrame, StreamedVideo
from vssjax.methods.variables_read import ProgramOnPart


class TwoSpeedMethod(SegFormerMethod):
  """SegFormer whose (imagined) predictor runs the network on one frame in four ('full') and only
  refines that frame's logits on the other three ('reuse'): the second program takes the first's
  outputs."""

  def __init__(self, config):
    super().__init__(config)
    self.refine = ProgramOnPart(_refine)

  def streamed_frames(self, variables, frames, outputs_of):
    logits = outputs_of("network", self._predict_logits, frames)
    network, refine = (program.bound(variables) for program in (self._predict_logits, self.refine))
    return StreamedVideo([
        StreamedFrame("full", {"network": (self._predict_logits, (frames,))},
                      lambda: network(frames), 0.25),
        StreamedFrame("reuse", {"refine": (self.refine, (logits,))}, lambda: refine(logits), 0.75),
    ], average_row="video_avg_every4")


def _refine(variables, logits):
  """The logits shifted by the classifier's bias and sharpened: a program that reads one array."""
  bias = variables["params"]["decode_head"]["linear_pred"]["bias"]
  return jax.nn.softmax((logits + bias) * 2.0)


class RefineOnTheFrame(TwoSpeedMethod):
  """A mistake: the 'reuse' frame's program is given the frame instead of the logits it refines."""

  def streamed_frames(self, variables, frames, outputs_of):
    full, reuse = super().streamed_frames(variables, frames, outputs_of).frames
    return StreamedVideo([full, dataclasses.replace(
        reuse, programs={"refine": (self.refine, (frames,))})], average_row="video_avg_every4")


class ReuseReturningNothing(TwoSpeedMethod):
  """A mistake: the 'reuse' frame's `run` dispatches its program and returns None."""

  def streamed_frames(self, variables, frames, outputs_of):
    full, reuse = super().streamed_frames(variables, frames, outputs_of).frames
    run = reuse.run
    return StreamedVideo([full, dataclasses.replace(reuse, run=lambda: [run(), None][1])],
                         average_row="video_avg_every4")
