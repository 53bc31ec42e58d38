r"""DTERN with MiT-B0 on VSPW 480p (specs/dtern.md §1, §7): the released recipe, K = 250.

  python -m vssjax.main --config=configs/dtern/vspw_mitb0.py --workdir=workdirs/dtern_vspw_b0 \
      --config.data.vspw.root=/path/to/VSPW_480p \
      --config.init.torch_checkpoint=/path/to/mit_b0.pth   # or a released DTERN checkpoint

480x480 crops of 4-frame clips [t-9, t-6, t-3, t] (video reversed with p 0.5), 8 clips per step,
AdamW 6e-5 (decode_head x10), poly with 1500 warm-up steps, 160k steps, mmseg 0.13's loss mean over
all pixels. Every other DTERN config builds on `vspw_base` here.

Arguments (`--config=...py:quick`): `quick` is a tiny CPU variant on synthetic data for smoke tests.
"""

from vssjax import configs_lib

# Released configs, per backbone: (K = number of local exemplars, CAM depth-wise kernel sizes).
RELEASED = {"b0": (250, (13, 11, 9, 7)), "b1": (200, (11, 9, 7, 5)),
            "b2": (150, (11, 9, 7, 5)), "b5": (124, (11, 9, 7, 5))}

NOT_PUBLISHED = ("DTERN's paper tables (ICCV 2025) were not available when this config was "
                 "written (specs/paper_numbers.md); no published numbers are shown. Take them from "
                 "the paper before using them as targets.")


def dtern_vspw_config(backbone, arg=None):
  """The locked VSPW config of `backbone` (`arg`: 'quick' or nothing)."""
  args = configs_lib.parse_arg(arg, quick=False)
  c = vspw_base(backbone)
  if args.quick:
    quick_variant(c)
  c.lock()
  return c


def vspw_base(backbone):
  """The unlocked VSPW recipe of `backbone`: the base of every DTERN config."""
  c = configs_lib.base_config()
  c.method.name = "dtern"
  c.method.loss_average = "all"  # mmseg 0.13 divides by all pixels, ignored ones included
  c.method.frame_loss_target_only = False  # True for Cityscapes: only the target is annotated
  num_clusters, kernels = RELEASED[backbone]
  c.model.backbone = backbone
  c.model.decoder_dim = 256
  c.model.num_clusters = num_clusters
  c.model.cam_kernels = kernels
  c.clip.update(kind="offsets", offsets=(-9, -6, -3, 0), reverse_prob=0.5)

  c.data.source = "vspw"
  c.data.vspw = dict(root="")
  c.data.num_classes = 124
  c.data.batch_size = 8
  c.data.train_transform.update(scale=(853, 480), ratio_range=(0.5, 2.0), crop_size=(480, 480),
                                cat_max_ratio=0.75, flip_prob=0.5, photometric=True)
  c.data.eval_transform.update(scale=(853, 480), size_divisor=32)
  c.published.source = NOT_PUBLISHED
  return c


def quick_variant(c):
  """Tiny widths, K and kernels on a small synthetic set: builds and trains in seconds on a CPU."""
  configs_lib.shrink_to_quick(c, num_frames=12)
  c.model.decoder_dim = 16
  c.model.num_clusters = 6
  c.model.cam_kernels = (5, 3, 3, 3)


def get_config(arg=None):
  return dtern_vspw_config("b0", arg)
