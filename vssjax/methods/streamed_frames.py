"""A streaming predictor's frames as `--mode=bench` times them and `python -m vssjax.aot` compiles
them: `Method.streamed_frames` returns each kind of video frame on which the predictor runs other
programs (DCFM's keyframes and non-key frames; DTERN's steady-state frame), with those programs and
the arguments the predictor passes them. Neither tool names a method: a method of one's own gets
its streamed rows by returning its frames. Both call it through `streamed_video`, which checks
what it returns and names the method in what it refuses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from vssjax.methods.variables_read import ProgramOnPart, call_signature

# A frame's programs by name, in the order the predictor runs them: name -> (the `ProgramOnPart`,
# the arguments the predictor passes it after the variables). The tools give each program the part
# of the variables it reads (`ProgramOnPart.read`), as a predictor's bound call does.
Programs = dict[str, tuple[ProgramOnPart, tuple]]
# `outputs_of(name, program, *args)`: what the program `name` of a frame returns, for the next
# program's arguments: its outputs (the bench compiles and runs it) or their shapes (vssjax/aot.py
# compiles nothing then). A method calls no program itself: under aot the variables and frames are
# shapes (`jax.ShapeDtypeStruct`), which no program runs on.
OutputsOf = Callable[..., Any]

# The bench's rows of its own, which a streamed frame's row would be confused with (and PyTorch's,
# every row whose name starts with "torch").
_BENCH_ROWS = ("forward", "train_step", "slide_frame")


@dataclasses.dataclass(frozen=True)
class StreamedFrame:
  """One kind of video frame of a streaming predictor, at batch 1.

  `row`: the bench's row for it. `programs`: what the predictor runs for it (`Programs`); the bench
  compiles each and adds their XLA figures, aot compiles each for its target. `run`: the frame as
  the predictor runs it, returning its outputs (arrays, which the bench waits for): its programs
  bound to the variables (`ProgramOnPart.bound`) and dispatched one after the other without
  waiting, each given the one before's outputs; the bench times it. A method whose predictor and
  `run` call one per-frame function (docs/extending.md's KeyStream) keeps them from drifting apart.
  `share`: the frame's share of a video's frames,
  which weighs it in the video's average frame; 0 for an A/B the predictor does not run (timed
  alone: not compiled by aot, not profiled).
  """
  row: str
  programs: Programs
  run: Callable[[], Any]
  share: float


@dataclasses.dataclass(frozen=True)
class StreamedVideo:
  """A streaming predictor's kinds of frame (`StreamedFrame`). With more than one in the video
  (shares above 0, adding up to 1) the bench adds the row `average_row`, their figures weighted by
  their shares (DCFM's (t_key + (K - 1) t_non_key) / K, the paper's FPS rule), and gives each later
  one's time as a share of the first's (DCFM's non-key frame against its keyframe)."""
  frames: list[StreamedFrame]
  average_row: str = "video_avg"

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


def streamed_video(method: Any, variables: Any, frames: Any, outputs_of: OutputsOf
                   ) -> StreamedVideo:
  """`method.streamed_frames(variables, frames, outputs_of)`, checked: a `StreamedVideo` whose rows
  are its own (none twice, none of the bench's or PyTorch's), whose programs are `ProgramOnPart`s
  with a tuple of arguments each, one name one program and its arguments' shapes, whose shares are
  not negative and, in the video, make up a video, and whose `outputs_of` calls name a program of
  its frames with the arguments' shapes it lists (the bench compiles it there, aot from the list).
  Anything else is a `TypeError` or `ValueError` naming the method."""
  where = f"{type(method).__name__}.streamed_frames"
  asked: list[tuple[str, Any, tuple]] = []

  def recorded(name: str, program: Any, *args) -> Any:
    asked.append((name, program, call_signature(args)))
    return outputs_of(name, program, *args)

  video = method.streamed_frames(variables, frames, recorded)
  if not isinstance(video, StreamedVideo):
    raise TypeError(f"{where} returned a {type(video).__name__}, not a StreamedVideo")
  rows = [frame.row for frame in video.frames] + [video.average_row]
  if (len(set(rows)) < len(rows) or set(rows) & set(_BENCH_ROWS)
      or any(row.startswith("torch") for row in rows)):
    raise ValueError(f"{where}: the rows {rows} (the frames', then the average's) must differ "
                     f"from each other, from the bench's own {_BENCH_ROWS} and from PyTorch's "
                     "(torch...)")
  programs: dict[str, tuple[ProgramOnPart, tuple]] = {}  # name -> (program, arguments' shapes)
  for frame in video.frames:
    if frame.share < 0:
      raise ValueError(f"{where}: frame {frame.row!r}'s share is {frame.share}: 0 (an A/B) or "
                       "its part of a video's frames")
    for name, entry in frame.programs.items():
      if (not isinstance(entry, tuple) or len(entry) != 2
          or not isinstance(entry[0], ProgramOnPart) or not isinstance(entry[1], tuple)):
        raise TypeError(f"{where}: frame {frame.row!r}'s program {name!r} is {entry!r}, not a "
                        "(ProgramOnPart, tuple of its arguments after the variables) pair")
      listed = (entry[0], call_signature(entry[1]))
      if programs.setdefault(name, listed) != listed:
        raise ValueError(f"{where}: two frames list a program {name!r}, with other programs or "
                         "arguments: a name is one program on arguments of one shape")
  shares = [frame.share for frame in video.in_video]
  if shares and not math.isclose(sum(shares), 1.0, rel_tol=1e-6):
    raise ValueError(f"{where}: the frames {[frame.row for frame in video.in_video]} make up "
                     f"{sum(shares):g} of a video's frames (their shares), not all of it")
  for name, program, signature in asked:
    if name not in programs or programs[name] != (program, signature):
      raise ValueError(f"{where} asked outputs_of for {name!r} with a program or arguments that "
                       f"its frames do not list so (they run {list(programs)}): name it as its "
                       "frame does, with the same arguments")
  return video
