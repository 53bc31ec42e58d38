r"""DCFM with MiT-B2 on VSPW (124 classes), the released recipe (specs/dcfm.md §1.1, §4, §6).

  # evaluate released weights (encoder + decoder files of the release, see docs/reproducing.md):
  python -m vssjax.convert --config=configs/dcfm/vspw_mitb2.py \
      --checkpoint=encoder_epoch_160000.pth,decoder_epoch_160000.pth --workdir=D
  python -m vssjax.main --config=configs/dcfm/vspw_mitb2.py --workdir=D --mode=eval \
      --config.data.vspw.root=/data/VSPW_480p
  # train from ImageNet MiT weights:
  python -m vssjax.main --config=configs/dcfm/vspw_mitb2.py --workdir=D \
      --config.data.vspw.root=/data/VSPW_480p --config.init.torch_checkpoint=mit_b2.pth

Pairs [x_U, x_L], every training frame once per epoch as x_L, with x_U one frame before or after
(R = 1, clamped); torchvision ColorJitter(0.2, 0.2, 0.2, 0.2) of each frame (own draws), rescale
of 480x853 by 0.5-2.0 (aspect ratio ignored), +-20 degree rotation (image filled with 0, label
255), 480x853 crops (padded 0 / 255), flip, all as torchvision's transforms on PIL images
(`geometry='torchvision'`: Pillow resizes, nearest rotation, pad-if-needed crops); 16 pairs per
step, 160k steps; AdamW (wd 0.01 on everything) at 6e-5 for the encoder (MiT + MLP decoder) and
6e-4 for FFM and classifier (B5: 4e-5 and 6e-4); poly p=1 with 1500 warm-up steps; lambda 0.4 /
beta 10 as released.
Test (specs/dcfm.md §3.1, §6.2, §7): every frame resized to exactly 480x853 (bilinear, aspect
ratio ignored) and its label too (nearest), metrics scored at 480x853
(`data.eval_transform.exact_size`); keyframe interval K = 2, B mode, first keyframe rotating across
videos; mIoU averaged over all 124 classes (`eval.miou_convention='all_classes'`) and mVC as DCFM's
code computes it (`eval.vc_convention='dcfm'`: windows without GT-stable pixels count 0, no video
skipped). The published row is Table II's K = 2.

Arguments (`--config=...py:quick,table1`): `quick` is a tiny synthetic CPU variant; `table1` uses
the paper's Table I values instead of the released config (lambda 0.2, beta 5, lr 3e-5 / 3e-4);
`k=N` sets the keyframe interval (published numbers follow K = 1, 2, 6); `mode=P` predicts a
non-key frame from the previous keyframe alone (published: Table IX's mIoU at K = 2).

This file also holds the builders the other DCFM configs use (`dcfm_base`, `release_metrics`,
`quick_variant`, `published_for_mode`).
"""

from data_pipelines.clip_sampling import dcfm_partner_offsets
from vssjax import configs_lib

_SOURCE = "DCFM paper (arXiv 2403.02689), Table II, VSPW val"
_SOURCE_P = "DCFM paper (arXiv 2403.02689), Table IX (P mode), VSPW val, K = 2"
# Table IX's P-mode rows (specs/paper_numbers.md; mode labels inferred there), backbone -> %.
PUBLISHED_P = {"b2": dict(mIoU=44.5), "b5": dict(mIoU=48.9)}
# Table II DCFM rows (specs/dcfm.md §8), (backbone, K) -> metric -> %; B mode.
PUBLISHED = {
    ("b2", 1): dict(mIoU=45.0, wIoU=64.3, mVC_8=86.6, mVC_16=82.0),
    ("b2", 2): dict(mIoU=44.8, wIoU=64.2, mVC_8=88.1, mVC_16=83.5),
    ("b2", 6): dict(mIoU=43.5, wIoU=63.0, mVC_8=90.8, mVC_16=86.5),
    ("b5", 1): dict(mIoU=49.5, wIoU=66.0, mVC_8=89.0, mVC_16=85.5),
    ("b5", 2): dict(mIoU=49.3, wIoU=65.9, mVC_8=90.2, mVC_16=86.7),
    ("b5", 6): dict(mIoU=47.6, wIoU=64.7, mVC_8=92.3, mVC_16=88.9),
}
ENCODER_LR = {"b2": 6e-5, "b5": 4e-5}
DECODER_LR = 6e-4  # FFM and classifier, both backbones (specs/dcfm.md §6.1)
# DCFM fills before normalising (specs/dcfm.md §6.2): rotation black (VSPW) or white (Cityscapes,
# CamVid), crop padding black; not the data default's mean colour.
BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def dcfm_base(backbone: str):
  """The unlocked DCFM recipe shared by every config; datasets override what differs."""
  c = configs_lib.base_config()
  c.method.name = "dcfm"
  c.method.update(
      key_weight=1.0,  # CE of the keyframe path (Table VI's ablation drops it: 0)
      nonkey_weight=0.4,  # lambda (released configs; Table I says 0.2 for VSPW)
      consistency_weight=10.0,  # beta (released configs; Table I says 5 for VSPW)
      consistency_distance="mse",  # L_sc's distance: 'mse' (release) | 'l1' (Table VII)
      # L_key's and L_nonkey's: 'ce' (release) | 'ohem' | 'ce_dice' (Table VII; CE + a soft
      # Dice, mmseg's, 1:1: the release has no Dice)
      segmentation_loss="ce",
      keyframe_interval=2,  # K
      mode="B",  # 'B': previous + next keyframe; 'P': previous only
      aks=False,  # adaptive keyframe scheduling (off in every released config)
      aks_threshold=0.0,
      aks_max_interval=5,
      eval_passes=1,  # passes per video, the first keyframe rotating (Cityscapes/CamVid: 2)
      eval_flip=False,  # h-flip TTA: logits of each frame and its mirror image summed (use_flip)
  )
  c.model.backbone = backbone
  c.model.decoder_dim = 256  # E = 256 for every MiT variant (not SegFormer's 768)
  # d, the release's bot_ch: 0 = no 1x1 conv, the common feature keeps the encoder's width
  # (decoder_dim on MiT, as in every MiT release config); resnet_recipe sets ResNet's
  c.model.common_dim = 0
  c.model.head_hidden = False  # head_nums 0 (VSPW) / 1 (Cityscapes, CamVid)
  c.model.shallow_blocks = 1  # split after the first block of stage 1
  # Table V's ablation: features the key or non-key path fuses without, at training and test,
  # of 'key_common', 'key_independent', 'non_key_common', 'non_key_independent' (none released)
  c.model.left_out = ()
  c.clip.update(kind="pair", offsets=dcfm_partner_offsets(1))  # R = 1: one frame before or after
  # Two optimizers in the release: encoder at lr, bot_aspp/FFM/classifier at 10 x lr, weight
  # decay on every parameter.
  c.optim.param_groups = (("^(bot_aspp|ffm|final)/", 10.0, 1.0),)
  c.optim.warmup_steps = 1500
  c.optim.power = 1.0
  # The release's own PolyScheduler (specs/dcfm.md §6.1), MiT and ResNet alike: the warm-up ramps
  # the base lr, the poly decay runs over the steps after it.
  c.optim.poly_after_warmup = True
  return c


def release_metrics(c):
  """DCFM's metric code (specs/dcfm.md §7), which its published tables use: mIoU over all classes,
  one absent from both GT and prediction counting 0, and its mVC. Not in `dcfm_base`: the synthetic
  config compares with the other methods' demos in the project's default conventions."""
  c.eval.update(miou_convention="all_classes", vc_convention="dcfm")


def quick_variant(c):
  """Tiny widths on a small synthetic set: builds and trains in seconds on a CPU."""
  configs_lib.shrink_to_quick(c, num_frames=8)
  c.model.decoder_dim = 32
  if c.model.common_dim:  # ResNet's 1x1 conv to d
    c.model.common_dim = 32


def published_for_mode(c, source: str, metrics: dict) -> None:
  """The published numbers `source` (`metrics`) of the config's DCFM mode and K (and ResNet's
  common-feature width), which they assume: a run that overrides one is not compared with them
  (`report.published_for`)."""
  configs_lib.set_published(c, source if metrics else "", metrics,
                            assumes=(("method.mode", c.method.mode),
                                     ("method.keyframe_interval", c.method.keyframe_interval),
                                     ("model.common_dim", c.model.common_dim)))


def dcfm_vspw_config(backbone: str, arg=None):
  args = configs_lib.parse_arg(arg, quick=False, table1=False, k=2, mode="B")
  c = dcfm_base(backbone)
  c.method.keyframe_interval = args.k
  c.method.mode = args.mode
  c.data.source = "vspw"
  c.data.vspw = configs_lib.ConfigDict(dict(root=""))
  c.data.num_classes = 124
  c.data.batch_size = 16
  c.data.train_epoch = "frames"  # every frame once per epoch as x_L (specs/dcfm.md §4.1)
  c.data.train_transform.update(scale=(853, 480), keep_ratio=False, geometry="torchvision",
                                ratio_range=(0.5, 2.0), crop_size=(480, 853),
                                cat_max_ratio=1.0, flip_prob=0.5, photometric=False,
                                color_jitter=(0.2, 0.2, 0.2, 0.2), color_jitter_frames="all",
                                rotate_degrees=20.0, rotate_prob=1.0, rotate_fill=BLACK,
                                pad_fill=BLACK)
  c.data.eval_transform.update(scale=(853, 480), size_divisor=1, exact_size=(480, 853))
  release_metrics(c)
  c.optim.lr, decoder_lr = ENCODER_LR[backbone], DECODER_LR
  if args.table1:
    c.method.nonkey_weight, c.method.consistency_weight = 0.2, 5.0
    c.optim.lr, decoder_lr = 3e-5, 3e-4
  c.optim.param_groups = (("^(bot_aspp|ffm|final)/", decoder_lr / c.optim.lr, 1.0),)
  c.train.steps = 160_000
  c.train.checkpoint_every = 4000
  if args.mode == "B":
    published_for_mode(c, _SOURCE + f", K = {args.k}", PUBLISHED.get((backbone, args.k), {}))
  else:
    published_for_mode(c, _SOURCE_P, PUBLISHED_P[backbone] if args.k == 2 else {})
  if args.quick:
    quick_variant(c)
  c.lock()
  return c


def get_config(arg=None):
  return dcfm_vspw_config("b2", arg)
