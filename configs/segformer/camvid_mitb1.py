r"""Per-frame SegFormer-MiT-B1 on CamVid (11 classes, SegNet layout): no published number.

  python -m vssjax.main --config=configs/segformer/camvid_mitb1.py --workdir=D \
      --config.data.camvid.root=/data/CamVid --config.init.torch_checkpoint=mit_b1.pth

The Cityscapes recipe of cityscapes_mitb0.py with CamVid's sizes ([GUESS], as SD-CPC's CamVid
config): 640x640 crops of 960x720 frames rescaled by 0.5-2, whole-frame test on the test split
(960x720 resized to 960x736, the recipe's multiples of 32), 40k steps of 8 frames. Needs only the labelled frames (no `frames/`).
"""

from vssjax import configs_lib

_B0 = configs_lib.load_sibling(__file__, "cityscapes_mitb0.py")


def get_config(arg=None):
  return _B0["segformer_config"]("b1", "camvid", arg)
