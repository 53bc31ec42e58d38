"""DCFM with a dilated ResNet-18 + PPM on Cityscapes (specs/dcfm.md §1.2, §6).

  python -m vssjax.main --config=configs/dcfm/cityscapes_r18.py --workdir=D \
      --config.data.cityscapes.root=/data/cityscapes --config.init.torch_checkpoint=resnet18.pth

The Cityscapes recipe of cityscapes_mitb1.py with the ResNet changes: 768x1536 crops, SGD
(momentum 0.9, wd 5e-4) at 1e-2 for every parameter, poly p=0.9 to 1e-4 after 1500 warm-up steps,
80k steps, batch 8 (R-101: 4), 1x1 conv from the PPM output to d = 320 (R-18) / 1280 (R-50/101).

Arguments: `quick`, `k=N` as in cityscapes_mitb1.py.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "cityscapes_mitb1.py")


def get_config(arg=None):
  return _BASE["cityscapes_config"]("r18", arg)
