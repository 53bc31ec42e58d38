"""Per-frame SegFormer-MiT-B2 on VSPW: a SegFormer baseline row of DCFM's Table II.

Same recipe, commands and caveats as configs/segformer/vspw_mitb0.py (which builds every variant);
only the backbone, the decoder width and the published numbers differ.
"""

import pathlib
import runpy

# Config files are loaded by path, not as a package: run the sibling file to share its builder.
_B0 = runpy.run_path(str(pathlib.Path(__file__).with_name("vspw_mitb0.py")))


def get_config(arg=None):
  return _B0["vspw_segformer_config"]("b2", arg)
