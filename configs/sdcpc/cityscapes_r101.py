r"""SD-CPC with a dilated ResNet-101 on Cityscapes: the paper's 81.6 mIoU setting (journal
abstract). RECONSTRUCTION: the head, losses and recipe are the spec's guesses (vspw_mitb0.py,
cityscapes_mitb1.py); the head runs on the ResNet's c1..c4 (strides 4/8/8/8). Geometry: [GUESS]
mmseg's for dilated ResNets on Cityscapes, 512x1024 crops of the full frame rescaled by 0.5-2.0 and
whole 2048x1024 frames at test (the MiT configs keep CFFM's half resolution).

  python -m vssjax.main --config=configs/sdcpc/cityscapes_r101.py --workdir=D \
      --config.data.cityscapes.root=/path/to/cityscapes \
      --config.init.torch_checkpoint=/path/to/resnet101_v2.pth

Arguments: `quick` as in vspw_mitb0.py.
"""

from vssjax import configs_lib

_CITYSCAPES = configs_lib.load_sibling(__file__, "cityscapes_mitb1.py")


def get_config(arg=None):
  return _CITYSCAPES["cityscapes_config"]("r101", arg)
