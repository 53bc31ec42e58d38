r"""SD-CPC with a dilated ResNet-101 on CamVid (11 classes): the paper's 78.2 mIoU setting (journal
abstract, split not named; test presumably). RECONSTRUCTION: the Cityscapes recipe of
cityscapes_mitb1.py / cityscapes_r101.py with 640x640 crops of 960x720 frames.

  python -m vssjax.main --config=configs/sdcpc/camvid_r101.py --workdir=D \
      --config.data.camvid.root=/path/to/CamVid \
      --config.init.torch_checkpoint=/path/to/resnet101_v2.pth

Needs the 30 fps frames next to the labelled ones (`frames/`, see docs/data.md) for the
reference frames. Arguments: `quick` as in vspw_mitb0.py.
"""

from vssjax import configs_lib

_CITYSCAPES = configs_lib.load_sibling(__file__, "cityscapes_mitb1.py")


def get_config(arg=None):
  return _CITYSCAPES["cityscapes_config"]("r101", arg, dataset="camvid")
