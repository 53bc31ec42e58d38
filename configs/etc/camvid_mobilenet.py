r"""ETC-Mobile on CamVid (11 classes): a MobileNetV2 student trained with ETC
(specs/etc.md §3, §7).

  python -m vssjax.main --config=configs/etc/camvid_mobilenet.py --workdir=D \
      --config.data.camvid.root=/data/CamVid --config.data.flow.cache_dir=/data/flow_cache \
      --config.method.teacher.workdir=T   # T: a run of camvid_psp101.py

A RECONSTRUCTION: the release has neither the MobileNet model (`model.mobile.DenseASPP` is
missing) nor a CamVid recipe. Student: dilated MobileNetV2 (output stride 8) + PPM + PSPNet-18's
heads (`methods/etc.py`). Recipe: Cityscapes ETC's terms and optimizer on CamVid, pairs from the
30 fps frames (`frames/`, see docs/data.md), 640x640 crops of the 720x960 frames scaled by
0.5-2.0, +-10 degree rotation (p 0.5), blur (p 0.5), flip, batch 8, 200 epochs of the 367 train
frames (9,000 steps: 45 full batches each), unweighted CE; test on the labelled test frames at
720x960. There is no converter for ImageNet MobileNetV2 weights yet: without one the student
starts from scratch, which the published number (PapersWithCode's "ETC-Mobile", CamVid 76.3
mIoU, probably Cityscapes-pretrained) did not.

Arguments: `quick`, `variant=baseline|temporal|distill` (default distill, the published model;
under `quick` its teacher, camvid_psp101.py:quick, stays randomly initialised unless given).
This file holds `camvid_config`, which camvid_psp101.py (the teacher) builds on.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "cityscapes_psp18_baseline.py")
_SOURCE = "PapersWithCode archive, ETC-Mobile, CamVid (test presumably)"


def camvid_config(backbone: str, variant: str):
  """The unlocked CamVid recipe for `backbone` and `variant`."""
  c = _BASE["etc_base"](backbone, variant)
  c.data.source = "camvid"
  c.data.camvid = configs_lib.ConfigDict(dict(root=""))
  c.data.num_classes = 11
  c.data.eval_split = "test"
  c.data.eval_label_window = (0, 0)  # mIoU needs the labelled frames only
  c.data.batch_size = 8
  c.data.train_transform.update(
      scale=(960, 720), ratio_range=(0.5, 2.0), crop_size=(640, 640), cat_max_ratio=1.0,
      flip_prob=0.5, photometric=False, rotate_degrees=10.0, rotate_prob=0.5, blur_prob=0.5)
  c.data.eval_transform.update(scale=(960, 720), size_divisor=1)
  # ETC's test code averages IoU over every class, as its Cityscapes configs score (every CamVid
  # class appears in the test split, so the 'vspw' convention gives the same on all of it).
  c.eval.miou_convention = "all_classes"
  if variant == "distill":
    c.method.teacher.config = _BASE["sibling"](__file__, "camvid_psp101.py")
  c.train.steps = 200 * (367 // 8)
  c.train.checkpoint_every = 1000
  return c


def quick_variant(c):
  _BASE["quick_variant"](c)
  c.data.eval_label_window = ()


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, variant="distill")
  c = camvid_config("mobilenet_v2", args.variant)
  if args.variant == "distill":
    configs_lib.set_published(c, _SOURCE, dict(mIoU=76.3))
  if args.quick:
    quick_variant(c)
  c.lock()
  return c
