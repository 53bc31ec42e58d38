"""Per-frame SegFormer-MiT-B5 on Cityscapes, SegFormer's 1024x1024 setting (its Table 1 row).

Same recipe, sliding-window test, commands and caveats as configs/segformer/cityscapes1024_mitb0.py;
the released weights are nvidia/segformer-b5-finetuned-cityscapes-1024-1024.
"""

from vssjax import configs_lib

_BUILDER = configs_lib.load_sibling(__file__, "cityscapes_mitb0.py")


def get_config(arg=None):
  return _BUILDER["segformer_config"]("b5", "cityscapes1024", arg)
