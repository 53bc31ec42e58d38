r"""PSPNet-101 (semseg, deep base) on CamVid (11 classes): the teacher of camvid_mobilenet.py.

  python -m vssjax.main --config=configs/etc/camvid_psp101.py --workdir=T \
      --config.data.camvid.root=/data/CamVid --config.init.torch_checkpoint=resnet101_v2.pth

ETC publishes no CamVid teacher or recipe (specs/etc.md §9); this is camvid_mobilenet.py's recipe
with the PSPNet-101 of cityscapes_psp101.py and no temporal terms.

Arguments: `quick`.
"""

from vssjax import configs_lib

_MOBILE = configs_lib.load_sibling(__file__, "camvid_mobilenet.py")


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False)
  c = _MOBILE["camvid_config"]("r101", "baseline")
  if args.quick:
    _MOBILE["quick_variant"](c)
  c.lock()
  return c
