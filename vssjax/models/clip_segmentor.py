"""A backbone + a video head on clips whose last frame is the target: the network of DTERN and
SD-CPC (`DTERNHead`, `SDCPCHead`).

Submodules are named `backbone` and `decode_head` as in the mmseg checkpoints, so parameter trees
are `{'backbone': ..., 'decode_head': ...}` and the converters are renamings.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from vssjax.models.layers import flatten_time


class ClipSegmentor(nn.Module):
  """`__call__(images [B, T, H, W, 3], *, train)` -> the head's output dict (target = last frame):
  training and the release-style clip forward, the whole network on every frame of the clip.

  The streaming predictor instead keeps per frame what the network computes of each frame alone
  (`encode_frame`) and predicts a clip from those (`decode_states`), so that every frame goes
  through the backbone and the head's per-frame layers once, not once per clip it belongs to.
  The head provides that split: `frame_state(features)` and `predict_from_states(target,
  references)` beside its `__call__(features per frame [B, T, ...], *, train)`.
  """
  backbone: nn.Module
  decode_head: nn.Module

  def __call__(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    # The shared backbone on all B*T frames as one batch (clip-major, time innermost).
    lead = images.shape[:2]
    features = self.backbone(flatten_time(images), train=train)
    return self.decode_head([f.reshape(lead + f.shape[1:]) for f in features], train=train)

  def encode_frame(self, images: jax.Array) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Eval mode: frames [B, H, W, 3] -> the head's `frame_state` of each: (what the frame's own
    prediction needs, what the clips it is a reference of need)."""
    return self.decode_head.frame_state(self.backbone(images, train=False))

  def decode_states(self, target: dict[str, jax.Array], references: dict[str, jax.Array]
                    ) -> jax.Array:
    """Eval mode: the target's first `encode_frame` part, and the second part of every clip frame
    stacked on axis 1 (target last) -> the final logits."""
    return self.decode_head.predict_from_states(target, references)
