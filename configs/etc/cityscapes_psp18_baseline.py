r"""ETC's PSPNet-18 baseline on Cityscapes: the per-frame student without temporal terms
(specs/etc.md §3, §5, §7).

  # train from ImageNet ResNet-18 (torchvision resnet18.pth):
  python -m vssjax.main --config=configs/etc/cityscapes_psp18_baseline.py --workdir=D \
      --config.data.cityscapes.root=/data/cityscapes --config.init.torch_checkpoint=resnet18.pth
  # evaluate the released baseline checkpoint (format 'pspnet', detected from its keys):
  python -m vssjax.convert --config=configs/etc/cityscapes_psp18_baseline.py \
      --checkpoint=baseline.pth --workdir=D
  python -m vssjax.main --config=configs/etc/cityscapes_psp18_baseline.py --workdir=D \
      --mode=eval --config.data.cityscapes.root=/data/cityscapes

The released recipe: 769x769 crops of the frame scaled by 0.5-2.0, +-10 degree rotation with
p 0.5 (mean-colour fill), 5x5 Gaussian blur with p 0.5, flip; batch 8; SGD momentum 0.9, weight
decay 1e-4 on every parameter, lr 0.01 for the ResNet and 0.1 for PPM and heads, poly p=0.9 per
iteration, 200 epochs of the 2,975 train frames (372 iterations each: the release's
DistributedSampler pads the set to 4 x 744 frames, 2 per GPU; 74,400 steps);
class-weighted CE + 0.4 aux. Test: full 1024x2048 frames, single scale, logits upsampled with
align_corners=True; mIoU on the 500 annotated val frames and TC over every consecutive frame pair
of the 108 "valsam" snippets (`eval.tc_video_list = "cityscapes_valsam.txt"`,
`data_pipelines/lists`): those are predicted whole, the other 392 snippets on their annotated frame
only (`data.eval_label_window = (0, 0)`; the predictions are per frame, so the scores are the same).

Rotation and crop padding fill with the ImageNet mean colour (the data default, rounded to
uint8: within 0.01 of ETC's exact 0 after normalisation); a scaled frame smaller than the crop is
padded on both sides, centred, before the crop is drawn, as semseg's Crop does
(`train_transform.geometry='semseg'`).

Deviation: TC uses OpenCV DIS flow instead of FlowNet2 (same 108 snippets as the release's
published TC).

Arguments: `quick` (tiny synthetic variant). This file holds the builders of the other ETC configs
(`etc_base`, `cityscapes_config`, `quick_variant`).
"""

import pathlib

from data_pipelines.clip_sampling import ETC_PARTNER_OFFSETS
from vssjax import configs_lib
from vssjax.errors import SetupError
from vssjax.methods.etc_losses import (AUX_WEIGHT, CITYSCAPES_CLASS_WEIGHTS, MULTI_FRAME_POOL,
                                       SELF_SIMILARITY_POOL, TEMPORAL_WEIGHT)

VARIANTS = ("baseline", "temporal", "distill")
_SOURCE = ("ETC README (irfanICMLL/ETC-Real-time-Per-frame-Semantic-video-segmentation), "
           "Cityscapes val, PSPNet-18")
PUBLISHED = {"baseline": dict(mIoU=69.79, TC=68.50), "temporal": dict(mIoU=71.72, TC=69.99),
             "distill": dict(mIoU=73.06, TC=70.56)}
# Distillation weights: not released (specs/etc.md §4.3 (e)). PI and PF follow the authors'
# Structured-KD defaults (lambda_pi 10, lambda_pa 1); MF is set to 1. The objective of §4.3 (e)
# has no self-similarity term; we add the release's per-frame criterion (c) at weight 1, as the
# released run's mode string ('..._sd_kd') suggests: self_similarity_weight=0 gives (e) as written.
DISTILLATION_WEIGHTS = dict(pixelwise_weight=10.0, pair_wise_weight=1.0,
                            self_similarity_weight=1.0, multi_frame_weight=1.0)


def sibling(config_file: str, name: str) -> str:
  """Absolute path of config `name` next to `config_file` (a teacher's), whatever the cwd."""
  return str(pathlib.Path(config_file).resolve().with_name(name))


def etc_base(backbone: str, variant: str):
  """The unlocked ETC recipe: every term's weight, SGD with 10x heads; datasets fill the rest."""
  if variant not in VARIANTS:
    raise SetupError(f"ETC variant must be one of {VARIANTS}, got {variant!r}")
  c = configs_lib.base_config()
  c.method.name = "etc"
  c.method.update(
      aux_weight=AUX_WEIGHT,
      class_weights=(),  # () = unweighted CE; Cityscapes: CriterionDSN's weights
      temporal_weight=0.0,  # st_weight; 0.1 in the released config
      temporal_formulation="released",  # 'released' (logits, M^2) | 'paper' (probabilities, M)
      pixelwise_weight=0.0,
      pixelwise_temperature=1.0,
      pair_wise_weight=0.0,
      pair_wise_maps="logits",  # 'logits' (release default) | 'features'
      pair_wise_released_normaliser=False,  # True: the release's transposed normaliser
      self_similarity_weight=0.0,
      self_similarity_pool=SELF_SIMILARITY_POOL,
      multi_frame_weight=0.0,
      multi_frame_pool=MULTI_FRAME_POOL,
      multi_frame_rule="frozen",  # 'frozen' | 'adversarial' | 'joint' (models/conv_lstm.py)
      # The frozen teacher: an 'etc' config ('path.py[:arg]') and its trained weights, either
      # its Orbax workdir or a PyTorch checkpoint. smoke_run_random_init (set by the `quick`
      # variants only): without either, keep the teacher's random initialisation, so that a smoke
      # run exercises the pipeline (it is not a distillation); otherwise a missing teacher is an
      # error.
      teacher=configs_lib.ConfigDict(dict(config="", workdir="", torch_checkpoint="",
                                          smoke_run_random_init=False)),
  )
  c.model.backbone = backbone
  # ETC builds on hszhao/semseg: cv2 resizes and rotation, and a crop that centres a frame
  # smaller than it in the padding (specs/etc.md §2).
  c.data.train_transform.geometry = "semseg"
  c.clip.update(kind="single")
  if variant != "baseline":
    c.clip.update(kind="pair", offsets=ETC_PARTNER_OFFSETS)
    c.data.flow.method = "dis"
    c.method.temporal_weight = TEMPORAL_WEIGHT
  if variant == "distill":
    c.method.update(DISTILLATION_WEIGHTS)
  c.optim.update(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, power=0.9, min_lr=0.0,
                 warmup_steps=0, param_groups=(("^(ppm|cls|aux|distill_lstm)/", 10.0, 1.0),))
  return c


def quick_variant(c):
  """Tiny synthetic set, small crops: the pools shrink to fit the 6x6 logit grid. A distilling
  config's teacher is its config's quick variant, randomly initialised unless weights are given
  (a smoke run has no trained teacher to read). TC covers every synthetic video: the names in a
  real set's TC list (Cityscapes' valsam) are not among them, and a list naming videos the split
  lacks is refused."""
  configs_lib.shrink_to_quick(c)
  c.method.class_weights = ()
  c.method.self_similarity_pool = 2
  c.method.multi_frame_pool = 2
  c.eval.tc_video_list = ""
  if c.method.teacher.config:
    c.method.teacher.config += ",quick" if ":" in c.method.teacher.config else ":quick"
    c.method.teacher.smoke_run_random_init = True


def cityscapes_data(c, crop: int):
  """Cityscapes snippets, ETC's joint augmentation, full-resolution single-scale test with TC."""
  c.data.source = "cityscapes"
  c.data.cityscapes = configs_lib.ConfigDict(dict(root=""))
  c.data.num_classes = 19
  c.data.batch_size = 8
  c.data.train_transform.update(
      scale=(2048, 1024), ratio_range=(0.5, 2.0), crop_size=(crop, crop), cat_max_ratio=1.0,
      flip_prob=0.5, photometric=False, rotate_degrees=10.0, rotate_prob=0.5, blur_prob=0.5)
  c.data.eval_transform.update(scale=(2048, 1024), size_divisor=1)
  c.eval.temporal_consistency = True
  c.eval.tc_video_list = "cityscapes_valsam.txt"  # TC on ETC's 108 "valsam" snippets
  # mIoU scores the annotated frame alone: the other 392 snippets predict only it (the valsam
  # ones, TC's, are evaluated whole), 3,632 frames instead of all 15,000 at 1024x2048.
  c.data.eval_label_window = (0, 0)
  # ETC's and semseg's test code average IoU over all 19 classes (np.mean(I / (U + 1e-10))): the
  # same as 'vspw' on the full val set, where every class appears, not on a part (eval.max_videos).
  c.eval.miou_convention = "all_classes"


def cityscapes_config(variant: str, arg=None):
  args = configs_lib.parse_arg(arg, quick=False)
  c = etc_base("r18", variant)
  cityscapes_data(c, crop=769)
  c.method.class_weights = CITYSCAPES_CLASS_WEIGHTS
  if variant == "distill":
    c.method.teacher.config = sibling(__file__, "cityscapes_psp101.py")
  c.train.steps = 74_400
  c.train.checkpoint_every = 2000
  # The published TC is over the 108 valsam snippets only (eval.tc_video_list).
  configs_lib.set_published(
      c, _SOURCE + {"baseline": "", "temporal": " + temporal loss",
                    "distill": " + temporal loss + distillation"}[variant],
      PUBLISHED[variant], assumes=(("eval.tc_video_list", c.eval.tc_video_list, ("TC",)),))
  if args.quick:
    quick_variant(c)
  c.lock()
  return c


def get_config(arg=None):
  return cityscapes_config("baseline", arg)
