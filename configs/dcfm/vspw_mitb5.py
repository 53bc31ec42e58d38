r"""DCFM with MiT-B5 on VSPW: the B2 recipe (vspw_mitb2.py) with encoder lr 4e-5
(FFM and classifier stay at 6e-4, i.e. 15x).

  python -m vssjax.main --config=configs/dcfm/vspw_mitb5.py --workdir=D \
      --config.data.vspw.root=/data/VSPW_480p --config.init.torch_checkpoint=mit_b5.pth

Arguments: as in vspw_mitb2.py (`quick`, `table1`, `k=N`, `mode=P`).
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb2.py")


def get_config(arg=None):
  return _BASE["dcfm_vspw_config"]("b5", arg)
