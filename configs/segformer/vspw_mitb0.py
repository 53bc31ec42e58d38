r"""Per-frame SegFormer-MiT-B0 on VSPW (124 classes): a SegFormer baseline row of DCFM's Table II.

  # evaluate released weights (see docs/reproducing.md):
  python -m vssjax.convert --config=configs/segformer/vspw_mitb0.py --checkpoint=W.pth --workdir=D
  python -m vssjax.main --config=configs/segformer/vspw_mitb0.py --workdir=D --mode=eval \
      --config.data.vspw.root=/data/VSPW_480p
  # train (160k iterations, fine-tuning a full SegFormer checkpoint):
  python -m vssjax.main --config=configs/segformer/vspw_mitb0.py --workdir=D \
      --config.data.vspw.root=/data/VSPW_480p --config.init.torch_checkpoint=W.pth

The published numbers were measured by the DCFM authors (Table II of arXiv 2403.02689), not by the
SegFormer authors; their SegFormer training recipe is not published. The recipe here is the one of
the SegFormer/CFFM/DTERN mmseg configs: 480x480 crops of frames rescaled to (853, 480) x [0.5, 2],
AdamW 6e-5 (decode head x10, no decay on norms), poly with a 1500-iteration warm-up, 160k
iterations, 8 images per iteration (2 per GPU x 4 GPUs, unverified for DCFM's runs); eval resizes
to fit (853, 480) with sides rounded to multiples of 32. The decode head is 256 wide for every
variant, as Table II's parameter counts show (SegFormer's own B2/B5 head is 768 wide). Metrics in
VSPW's own conventions (the project's defaults); DCFM's text does not say how these rows were
scored (docs/reproducing.md).

This file also holds the builder of the B1/B2/B5 variants (`vspw_segformer_config`) and the recipe
the Cityscapes and CamVid configs share (`segformer_base`).
`:quick` shrinks the model and swaps VSPW for the synthetic set (smoke tests); it carries no
published numbers, which would be meaningless next to synthetic results.
"""

from vssjax import configs_lib
from vssjax.models.segformer import SEGFORMER_EMBED_DIMS

VSPW_NUM_CLASSES = 124
TABLE_II_DECODER_DIM = 256
_SOURCE = "DCFM paper (arXiv 2403.02689), Table II, VSPW val; SegFormer baseline measured by DCFM"
# Table II SegFormer rows (specs/paper_numbers.md), metric -> %.
PUBLISHED = {
    "b0": dict(mIoU=32.9, wIoU=56.8, mVC_8=82.7, mVC_16=77.3),
    "b1": dict(mIoU=36.5, wIoU=58.8, mVC_8=84.7, mVC_16=79.9),
    "b2": dict(mIoU=43.9, wIoU=63.7, mVC_8=86.0, mVC_16=81.2),
    "b5": dict(mIoU=48.2, wIoU=65.1, mVC_8=87.8, mVC_16=83.7),
}


def segformer_base(variant: str):
  """SegFormer's mmseg recipe for MiT-`variant`, unlocked, without a dataset: 8 frames per step,
  the cross-entropy averaged over all pixels (mmseg 0.13), rescale by 0.5-2 then crop
  (cat_max_ratio 0.75), flip, photometric distortion, 160k steps (the optimizer and schedule are
  `base_config`'s). The dataset's builder sets the source, classes and sizes."""
  c = configs_lib.base_config()
  c.method.name = "segformer"
  # mmseg 0.13 (NVlabs SegFormer, CFFM, DTERN) averages the cross-entropy over ALL pixels of the
  # batch, ignored ones included (`weight_reduce_loss`), not over the valid ones.
  c.method.loss_average = "all"
  c.model.backbone = variant
  c.model.decoder_dim = SEGFORMER_EMBED_DIMS[variant]
  c.data.batch_size = 8
  c.data.train_transform.update(ratio_range=(0.5, 2.0), cat_max_ratio=0.75, flip_prob=0.5,
                                photometric=True)
  c.train.steps = 160_000
  c.train.checkpoint_every = 4000
  return c


def vspw_segformer_config(variant: str, arg=None):
  """The VSPW SegFormer config of MiT-`variant`; `arg` as for `get_config`."""
  args = configs_lib.parse_arg(arg, quick=False)
  c = segformer_base(variant)
  c.data.source = "vspw"
  c.data.vspw = configs_lib.ConfigDict(dict(root=""))
  c.data.num_classes = VSPW_NUM_CLASSES
  # Table II's SegFormer rows are 256 wide for every variant (the CFFM/DCFM code base's head):
  # their parameter counts (3.8/13.8/24.8/82.1 M) are those of a 256-wide head; SegFormer's own
  # 768-wide B2/B5 head would add 2.7 M (27.4/84.7 M).
  c.model.decoder_dim = TABLE_II_DECODER_DIM
  c.data.train_transform.update(scale=(853, 480), crop_size=(480, 480))
  c.data.eval_transform.update(scale=(853, 480), size_divisor=32)
  configs_lib.set_published(c, _SOURCE, PUBLISHED[variant])

  if args.quick:
    configs_lib.shrink_to_quick(c)
  c.lock()
  return c


def get_config(arg=None):
  return vspw_segformer_config("b0", arg)
