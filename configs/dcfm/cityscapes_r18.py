"""DCFM with a dilated ResNet-18 + PPM on Cityscapes: `cityscapes_config("r18")` of
cityscapes_mitb1.py, whose docstring has the commands and the ResNet recipe (specs/dcfm.md §6)."""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "cityscapes_mitb1.py")


def get_config(arg=None):
  return _BASE["cityscapes_config"]("r18", arg)
