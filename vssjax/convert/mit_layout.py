"""Which MiT a checkpoint holds, read from its keys, so that a checkpoint of another size than the
config's backbone is reported in one line naming both sizes, not as hundreds of missing and
mis-shaped keys."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vssjax.convert.common import StateDict
from vssjax.models.mit import MIT_VARIANTS, MixTransformer


def _name(embed_dims: tuple[int, ...], depths: tuple[int, ...]) -> str:
  """'MiT-b2 (embed_dims ..., depths ...)', or 'a MiT (...)' of no released size."""
  sizes = [v for v, f in MIT_VARIANTS.items() if (f["embed_dims"], f["depths"]) == (embed_dims,
                                                                                   depths)]
  return (f"{'MiT-' + sizes[0] if sizes else 'a MiT'} (embed_dims {embed_dims}, "
          f"depths {depths})")


def mit_mismatch(state_dict: StateDict, backbone: MixTransformer,
                 patch_embed_weight: Callable[[int], str],
                 block_prefix: Callable[[int], str]) -> str | None:
  """The line that says the checkpoint holds another MiT than `backbone`; None when they agree or
  the checkpoint holds no MiT under those names. `patch_embed_weight(i)` is the key of stage i's
  patch-embedding conv weight (its output width is the stage's), `block_prefix(i)` what the keys
  of stage i's blocks start with, followed by the block's index."""
  dims, depths = [], []
  for stage in range(len(backbone.depths)):
    weight = state_dict.get(patch_embed_weight(stage))
    if weight is None:
      return None
    prefix = block_prefix(stage)
    dims.append(int(np.shape(weight)[0]))
    depths.append(len({key[len(prefix):].split(".")[0] for key in state_dict
                       if key.startswith(prefix)}))
  found = (tuple(dims), tuple(depths))
  wanted = (tuple(backbone.embed_dims), tuple(backbone.depths))
  if found == wanted:
    return None
  return (f"the checkpoint holds {_name(*found)}, the config's model.backbone is "
          f"{_name(*wanted)}: use the config of the checkpoint's size (or set model.backbone; "
          "its results are then not set against the config's published numbers)")
