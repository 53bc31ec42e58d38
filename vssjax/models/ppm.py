"""PSPNet's pyramid pooling module (specs/dcfm.md §1.2, specs/etc.md §3), NHWC.

Per bin b: adaptive average pooling to b x b (torch's overlapping windows, `ops/pooling.py`) ->
1x1 conv without bias -> BN -> ReLU -> bilinear upsample back with align_corners=True. The input
and the branches are concatenated in the order [x, bin1, bin2, ...], the order the released
weights were trained with. Branch i is `features_{i}/{conv,bn}` (torch `features.{i}.{1,2}`;
index 0 of the torch Sequential is the parameter-free pooling). The convs start from
`kernel_init`: mmcv ConvModule's He fan-out normal unless the caller says otherwise (ETC's
PSPNet passes PyTorch's default, which semseg's PPM keeps).
"""
from collections.abc import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import ConvBNAct, Initializer, conv_init
from vssjax.ops.pooling import adaptive_avg_pool
from vssjax.ops.resize import resize_bilinear


class PPM(nn.Module):
  """`__call__(x [B,H,W,C], *, train) -> [B,H,W,C + len(bins) * features]`.

  `features` is the width of each branch (PSPNet uses C / len(bins): 512 for R-50/101, 128 for
  R-18).
  """
  features: int
  bins: Sequence[int] = (1, 2, 3, 6)
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = conv_init

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    size = x.shape[-3:-1]
    branches = [x]
    for i, bin_size in enumerate(self.bins):
      y = adaptive_avg_pool(x, bin_size)
      y = ConvBNAct(self.features, 1, dtype=self.dtype, kernel_init=self.kernel_init,
                    name=f"features_{i}")(y, train=train)
      branches.append(resize_bilinear(y, size, align_corners=True))
    return jnp.concatenate(branches, axis=-1)
