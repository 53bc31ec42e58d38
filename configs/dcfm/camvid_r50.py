r"""DCFM with a dilated ResNet-50 + PPM on CamVid (11 classes), specs/dcfm.md §6.

  python -m vssjax.main --config=configs/dcfm/camvid_r50.py --workdir=D \
      --config.data.camvid.root=/data/CamVid --config.init.torch_checkpoint=resnet50_v2.pth

Needs the 30 fps frames next to the labelled ones (`frames/`, see docs/data.md) for the
neighbours. +-10 degree rotation (image and label filled with 255), a square crop of side
int(640 u), u ~ U[0.5, 1), of the 720x960 frame resized to 640x640, flip (the release flips before
resizing: the same distribution), as torchvision's transforms on PIL images, no colour jitter;
batch 8, SGD 2e-2 with poly p=0.9 to 1e-5 and no warm-up, 40k steps; test on the test split
(Table IV is CamVid test; the release's test dataset reads test.txt) at the native 720x960 on
[a-1, a, a+1], twice (K = 2, the labelled frame once non-key and once a keyframe); mIoU over all
11 classes, as DCFM's metric code.

Arguments: `quick`, `k=N` as in cityscapes_mitb1.py.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb2.py")
_CITYSCAPES = configs_lib.load_sibling(__file__, "cityscapes_mitb1.py")


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, k=2)
  c = _BASE["dcfm_base"]("r50")
  _CITYSCAPES["resnet_recipe"](c, "r50", lr=2e-2, min_lr=1e-5)
  c.method.keyframe_interval = args.k
  c.method.eval_passes = 2
  c.model.head_hidden = True
  c.data.source = "camvid"
  c.data.camvid = configs_lib.ConfigDict(dict(root=""))
  c.data.num_classes = 11
  c.data.eval_split = "test"
  c.data.eval_label_window = (1, 1)
  c.data.batch_size = 8
  c.data.train_transform.update(geometry="torchvision", crop_scale_range=(0.5, 1.0),
                                crop_size=(640, 640), cat_max_ratio=1.0, flip_prob=0.5,
                                photometric=False, rotate_degrees=10.0, rotate_prob=1.0,
                                rotate_fill=_BASE["WHITE"], pad_fill=_BASE["BLACK"])
  c.data.eval_transform.update(scale=(960, 720), size_divisor=1)
  _BASE["release_metrics"](c)
  c.optim.warmup_steps = 0
  c.train.steps = 40_000
  c.train.checkpoint_every = 2000
  _BASE["published_for_mode"](c, "DCFM paper (arXiv 2403.02689), Table IV, CamVid test, K = 2",
                              dict(mIoU=73.1) if args.k == 2 else {})
  if args.quick:
    _BASE["quick_variant"](c)
  c.lock()
  return c
