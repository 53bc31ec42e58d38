r"""DCFM with MiT-B1 on Cityscapes (19 classes), the released recipe (specs/dcfm.md §6).

  python -m vssjax.main --config=configs/dcfm/cityscapes_mitb1.py --workdir=D \
      --config.data.cityscapes.root=/data/cityscapes --config.init.torch_checkpoint=mit_b1.pth

Pairs (annotated frame a, a +- 1) from the 30-frame sequence snippets; torchvision
ColorJitter(0.3, 0.3, 0.3, 0.3) of the labelled frame only, then +-10 degree rotation of the
full 1024x2048 frame (image and label filled with 255), a crop of int(512 s) x int(1024 s),
s ~ U[0.5, 2) (padded with 0 / 255 where it is larger than the frame), resized to 512x1024, flip;
all as torchvision's transforms on PIL images (`geometry='torchvision'`, see vspw_mitb2.py);
16 pairs per step, 160k steps, AdamW 6e-5 (FFM/head x10), lambda 0.4 / beta 10; the head has
the extra 1x1 conv + BN + ReLU (head_nums 1).
Test: shorter side 512, logits upsampled to the 1024x2048 labels; the clip [a-1, a, a+1] is
evaluated twice, with a as a B-mode non-key frame and as a keyframe (K = 2), both counted; mIoU
over all 19 classes, as DCFM's metric code (`release_metrics` of vspw_mitb2.py).

ResNet-18/50/101 (cityscapes_r*.py): crops of int(768 s) x int(1536 s) resized to 768x1536 (for
s > 4/3 the box outgrows the frame and is padded), SGD (momentum 0.9, wd 5e-4) at 1e-2 for
every parameter, poly p=0.9 to 1e-4 after 1500 warm-up steps, 80k steps, batch 8 (R-101: 4), a
1x1 conv from the PPM output to d = 320 (R-18) / 1280 (R-50/101); test at shorter side 768, but
R-18 at 1024, i.e. the full 1024x2048 frame (its released infer.yaml, specs/dcfm.md §6.1-6.2);
R-101 with h-flip TTA (cityscapes_r101.py); start from the ImageNet weights with
`--config.init.torch_checkpoint=resnet50_v2.pth` (semseg deep base) or `resnet18-f37072fd.pth`
(torchvision).

Arguments: `quick` (tiny synthetic variant), `k=N` (keyframe interval; published K = 2).
The other Cityscapes/CamVid configs build on `cityscapes_config` here.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "vspw_mitb2.py")
_SOURCE = "DCFM paper (arXiv 2403.02689), Table III, Cityscapes val, K = 2"
PUBLISHED = {"b1": 73.1, "r18": 74.0, "r50": 77.2, "r101": 78.0}
# d for ResNet: 1x1 conv from the PPM output (4096 or 1024 channels).
RESNET_COMMON_DIM = {"r18": 320, "r50": 1280, "r101": 1280}


def resnet_recipe(c, backbone: str, lr: float, min_lr: float):
  """SGD (momentum 0.9, wd 5e-4) at one lr for everything, DCFM's poly p=0.9 from warm-up end."""
  c.model.common_dim = RESNET_COMMON_DIM[backbone]
  c.optim.update(name="sgd", lr=lr, momentum=0.9, weight_decay=5e-4, power=0.9, min_lr=min_lr,
                 poly_after_warmup=True, param_groups=())


def cityscapes_config(backbone: str, arg=None):
  args = configs_lib.parse_arg(arg, quick=False, k=2)
  c = _BASE["dcfm_base"](backbone)
  c.method.keyframe_interval = args.k
  c.method.eval_passes = 2
  c.model.head_hidden = True
  c.data.source = "cityscapes"
  c.data.cityscapes = configs_lib.ConfigDict(dict(root=""))
  c.data.num_classes = 19
  c.data.eval_label_window = (1, 1)
  size = 512 if backbone.startswith("b") else 768  # training crop height, test shorter side
  test_size = 1024 if backbone == "r18" else size  # R-18's infer.yaml: the native 1024x2048
  c.data.batch_size = 16
  c.data.train_transform.update(geometry="torchvision", crop_scale_range=(0.5, 2.0),
                                crop_size=(size, 2 * size), cat_max_ratio=1.0, flip_prob=0.5,
                                photometric=False, color_jitter=(0.3, 0.3, 0.3, 0.3),
                                color_jitter_frames="target", rotate_degrees=10.0, rotate_prob=1.0,
                                rotate_fill=_BASE["WHITE"], pad_fill=_BASE["BLACK"])
  c.data.eval_transform.update(scale=(2 * test_size, test_size), size_divisor=1,
                               resize_backend="pillow")  # torchvision Resize on PIL images
  _BASE["release_metrics"](c)
  c.optim.lr = 6e-5
  c.train.steps = 160_000
  c.train.checkpoint_every = 4000
  if not backbone.startswith("b"):
    resnet_recipe(c, backbone, lr=1e-2, min_lr=1e-4)
    c.data.batch_size = 4 if backbone == "r101" else 8
    c.train.steps = 80_000
  _BASE["published_for_mode"](c, _SOURCE, dict(mIoU=PUBLISHED[backbone]) if args.k == 2 else {})
  if args.quick:
    _BASE["quick_variant"](c)
  c.lock()
  return c


def get_config(arg=None):
  return cityscapes_config("b1", arg)
