"""A streaming predictor's frames as `--mode=bench` times them and `python -m vssjax.aot` compiles
them: `Method.streamed_frames` returns each kind of video frame on which the predictor runs other
programs (DCFM's keyframes and non-key frames; DTERN's steady-state frame), with those programs and
the arguments the predictor passes them. Neither tool names a method: a method of one's own gets
its streamed rows by returning its frames.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from vssjax.methods.variables_read import ProgramOnPart

# A frame's programs by name, in the order the predictor runs them: (the `ProgramOnPart`, the
# arguments the predictor passes it, the part of the variables it reads first).
Programs = dict[str, tuple[ProgramOnPart, tuple]]
# `outputs_of(name, program, part, *args)`: what a program returns, for the arguments of the next:
# its outputs (the bench compiles and runs it) or their shapes (vssjax/aot.py compiles it).
OutputsOf = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class StreamedFrame:
  """One kind of video frame of a streaming predictor, at batch 1.

  `row`: the bench's row for it. `programs`: what the predictor runs for it (`Programs`); the bench
  compiles each and adds their XLA figures, aot compiles each for its target. `run`: the frame as
  the predictor runs it, its programs bound to the variables (`ProgramOnPart.bound`) and
  dispatched one after the other without waiting, each given the one before's outputs; the bench
  times it. `share`: the frame's share of a video's frames, which weighs it in the video's average
  frame; 0 for an A/B the predictor does not run (timed alone: not compiled by aot, not profiled).
  """
  row: str
  programs: Programs
  run: Callable[[], Any]
  share: float


@dataclasses.dataclass(frozen=True)
class StreamedVideo:
  """A streaming predictor's kinds of frame (`StreamedFrame`); with more than one in the video
  (shares above 0, adding up to 1) the bench adds the row `average_row`, their figures weighted by
  their shares: DCFM's (t_key + (K - 1) t_non_key) / K, the paper's FPS rule."""
  frames: list[StreamedFrame]
  average_row: str = "video_avg"

  def __post_init__(self):
    rows = [frame.row for frame in self.frames]
    if len(set(rows)) < len(rows):
      raise ValueError(f"the streamed frames' rows {rows} repeat a name: each is a row of its own")
    shares = [frame.share for frame in self.in_video]
    if shares and not math.isclose(sum(shares), 1.0, rel_tol=1e-6):
      raise ValueError(f"the streamed frames {[frame.row for frame in self.in_video]} make up "
                       f"{sum(shares)} of a video's frames (their shares), not all of it")

  @property
  def in_video(self) -> list[StreamedFrame]:
    """The frames the predictor runs (share above 0), not the A/Bs."""
    return [frame for frame in self.frames if frame.share > 0]

  def programs(self) -> Programs:
    """The programs the predictor runs for a video's frames, each once, in the frames' order."""
    programs: Programs = {}
    for frame in self.in_video:
      programs.update(frame.programs)
    return programs
