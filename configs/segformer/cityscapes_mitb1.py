"""Per-frame SegFormer-MiT-B1 on Cityscapes: DCFM's Table III row (74.1 mIoU).

Same recipe, commands and caveats as configs/segformer/cityscapes_mitb0.py (which builds every
variant); no checkpoint of this setting is public, so train it from `mit_b1.pth`.
"""

from vssjax import configs_lib

_B0 = configs_lib.load_sibling(__file__, "cityscapes_mitb0.py")


def get_config(arg=None):
  return _B0["segformer_config"]("b1", "cityscapes", arg)
