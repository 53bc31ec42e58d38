"""DCFM with a dilated ResNet-101 + PPM on Cityscapes: `cityscapes_config("r101")` of
cityscapes_mitb1.py, whose docstring has the commands and the ResNet recipe (specs/dcfm.md §6),
evaluated with h-flip test-time augmentation (`method.eval_flip`): the logits of every frame and of
its mirror image are summed, as R-101's released infer.yaml (`use_flip: True`) does. Whether Table
III's 78.0 was measured with it is unverified (specs/dcfm.md §6.2, §11 item 7); compare with
`--config.method.eval_flip=False` too.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "cityscapes_mitb1.py")


def get_config(arg=None):
  c = _BASE["cityscapes_config"]("r101", arg)
  # The release's R-101 infer.yaml flips; the other DCFM infer.yaml files do not. Unverified
  # whether the published row used it (specs/dcfm.md §11 item 7).
  c.method.eval_flip = True
  return c
