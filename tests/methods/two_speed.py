"""A method of one's own whose streaming predictor runs two kinds of frame: the bench's and
`vssjax.aot`'s streamed frames (`Method.streamed_frames`) of a method neither knows."""

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
    network_read = self._predict_logits.read(variables, frames)
    logits = outputs_of("network", self._predict_logits, network_read, frames)
    refine_read = self.refine.read(variables, logits)
    network, refine = (program.bound(variables) for program in (self._predict_logits, self.refine))
    return StreamedVideo([
        StreamedFrame("full", {"network": (self._predict_logits, (network_read, frames))},
                      lambda: network(frames), 0.25),
        StreamedFrame("reuse", {"refine": (self.refine, (refine_read, logits))},
                      lambda: refine(logits), 0.75),
    ], average_row="video_avg_every4")


def _refine(variables, logits):
  """The logits shifted by the classifier's bias and sharpened: a program that reads one array."""
  bias = variables["params"]["decode_head"]["linear_pred"]["bias"]
  return jax.nn.softmax((logits + bias) * 2.0)
