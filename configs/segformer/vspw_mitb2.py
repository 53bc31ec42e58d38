"""Per-frame SegFormer-MiT-B2 on VSPW: a SegFormer baseline row of DCFM's Table II.

Same recipe, commands and caveats as configs/segformer/vspw_mitb0.py (which builds every variant);
only the backbone and the published numbers differ (the head is 256 wide, as B0's).
"""

from vssjax import configs_lib

_B0 = configs_lib.load_sibling(__file__, "vspw_mitb0.py")


def get_config(arg=None):
  return _B0["vspw_segformer_config"]("b2", arg)
