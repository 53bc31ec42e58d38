"""The method interface: a Flax module, a loss, and a streaming predictor.

Every method (SegFormer, DTERN, DCFM, ETC, SD-CPC) plugs into the one train loop and the one
evaluator through this interface, so neither knows which method it runs:

- training: `init` builds the variables from a batch; `loss_and_metrics` runs the module on a batch
  of clips and returns the scalar loss, logged metrics and updated BatchNorm statistics;
- evaluation and inference: `predictor(variables)` returns a fresh `StreamingPredictor` for one
  video. It is fed frames in order and may answer later (DCFM's B mode waits for the keyframe
  after a frame), so `push` returns whatever predictions became ready and `flush` the rest.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import numpy as np

from data_pipelines.eval_transforms import check_eval_transform
from data_pipelines.transforms import whole_numbers_at_least
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.methods.losses import LOSS_AVERAGES
from vssjax.methods.sliding_window import SlidingWindows
from vssjax.methods.streamed_frames import OutputsOf, StreamedVideo

Batch = dict[str, jax.Array]
Variables = dict[str, Any]
# (frame index within the video, int32 label map [H, W]). The map may still be computing on the
# device (a jax.Array): predictors never wait for it, the consumer fetches it (`np.asarray`) when it
# needs the values, so the device works on the next frame while the host scores or saves this one.
Prediction = tuple[int, np.ndarray | jax.Array]


def _check_head_settings(model: ConfigDict) -> None:
  """The head settings of `base_config` every method's model reads, checked as the method is
  built: a 0-wide head or a dropout probability of 1 or more would otherwise fail deep in the
  first trace (a ZeroDivisionError of the init), with no word of the field."""
  if not whole_numbers_at_least([model.decoder_dim], 1):
    raise SetupError(f"model.decoder_dim={model.decoder_dim!r}: the head's width, a whole number "
                     "of at least 1")
  if not 0.0 <= model.dropout_rate < 1.0:
    raise SetupError(f"model.dropout_rate={model.dropout_rate}: a probability in [0, 1)")


class StreamingPredictor(abc.ABC):
  """Predicts one video, frame by frame, at the frames' original resolution."""

  @abc.abstractmethod
  def push(self, frame: np.ndarray) -> list[Prediction]:
    """Takes the next uint8 RGB frame [H, W, 3]; returns the predictions that became ready."""

  def flush(self) -> list[Prediction]:
    """Returns the predictions still held back at the end of the video."""
    return []

  def keyframes(self) -> list[int] | None:
    """The frames so far (indices from the video's first) that ran the whole network where the
    others ran less of it (DCFM's keyframes), in order; None for a predictor without such frames.
    The evaluator scores the two kinds apart as well (`mIoU_keyframes`, `mIoU_non_key`)."""
    return None


class Method(abc.ABC):
  """Base class; subclasses set `module` in `__init__` and implement the abstract methods.

  `predicts_frames_alone`: its predictor runs the network on each frame by itself (SegFormer,
  ETC), however many frames a training clip holds; `--mode=bench` times its forward so.
  `sliding_window_inference`: the method's predictor implements mmseg's 'slide' test mode
  (`sliding_windows`, from `data.eval_transform.slide_crop`/`slide_stride`); the others refuse
  those settings rather than ignore them.
  `module_takes_clips`: `module.apply(variables, images, train=False)` takes clips of images
  [B, T, H, W, 3] (DTERN, SD-CPC), not frames [B*T, H, W, 3]; the bench's forward rows pass them so.
  """

  predicts_frames_alone = False
  sliding_window_inference = False
  module_takes_clips = False

  def __init__(self, config: ConfigDict):
    self.config = config
    self.num_classes = config.data.num_classes
    check_eval_transform(config.data.eval_transform)
    _check_head_settings(config.model)
    if config.method.loss_average not in LOSS_AVERAGES:  # read by each method's loss, traced later
      raise SetupError(f"method.loss_average must be one of {LOSS_AVERAGES}, got "
                       f"{config.method.loss_average!r}")
    self.sliding_windows = SlidingWindows.from_config(config.data.eval_transform)
    if self.sliding_windows is not None and not self.sliding_window_inference:
      raise SetupError(
          f"data.eval_transform.slide_crop/slide_stride are set, but {config.method.name} has no "
          "sliding-window inference (segformer has: mmseg's 'slide' test mode); set both to () "
          "to predict whole frames")

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> Variables:
    """Builds the variables ({'params', 'batch_stats', ...}) for a batch of this shape."""

  @abc.abstractmethod
  def loss_and_metrics(
      self, params: Any, model_state: Variables, batch: Batch, rng: jax.Array
  ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Variables]]:
    """Training forward pass: (loss, (metrics, new model_state)). Differentiated w.r.t. params."""

  @abc.abstractmethod
  def predictor(self, variables: Variables) -> StreamingPredictor:
    """A fresh predictor for one video."""

  @property
  def warm_up_frames(self) -> int:
    """How many frames of a video bring up every program its predictors run at a frame size: a
    new size's programs compile ahead on that many black frames (`vssjax/eval/compile_ahead.py`).
    One for a predictor that runs the same programs on every frame; a streaming method whose
    programs change as a video goes on (a clip filling up, keyframes) says when they stop."""
    return 1

  def fixed_variables(self) -> Variables:
    """Non-trained variables read from elsewhere when a run starts from scratch, as
    {collection: tree} to replace those of the fresh `model_state` (ETC's frozen teacher). They
    are then checkpointed and resumed with the state. `{}` (none) by default."""
    return {}

  def video_predictors(self, variables: Variables, protocol_index: int
                       ) -> list[StreamingPredictor]:
    """The predictors the evaluator runs the split's `protocol_index`-th evaluated video through
    (`EvalVideo.protocol_index`: a label window counts as a video); every one's predictions are
    scored. One by default; DCFM's protocol rotates its first keyframe across videos and scores
    more than one keyframe phase of each clip (specs/dcfm.md §3.1).
    """
    del protocol_index
    return [self.predictor(variables)]

  def streamed_frames(self, variables: Variables, frames: Any, outputs_of: OutputsOf
                      ) -> StreamedVideo:
    """The predictor's kinds of video frame, each with the programs it runs for it and the
    arguments it passes them (`vssjax/methods/streamed_frames.py`), given `variables` and one
    frame `frames` uint8 [1, H, W, 3] (arrays on the bench's device, or `vssjax.aot`'s shapes):
    `--mode=bench` times each as the predictor runs it, `python -m vssjax.aot` compiles their
    programs. A program's outputs, for the arguments of the next, come from `outputs_of`. No
    frames by default: a predictor that runs the network on each frame, which the bench's
    `forward` rows time."""
    del variables, frames, outputs_of
    return StreamedVideo([])
