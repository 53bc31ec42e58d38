r"""ETC on the synthetic video set: baseline vs + temporal loss vs + distillation (docs/results.md).

  python -m vssjax.main --config=configs/etc/synthetic_psp18.py:teacher --workdir=W/teacher
  python -m vssjax.main --config=configs/etc/synthetic_psp18.py:variant=baseline --workdir=W/base
  python -m vssjax.main --config=configs/etc/synthetic_psp18.py:variant=temporal --workdir=W/tl \
      --config.data.flow.cache_dir=W/flow
  python -m vssjax.main --config=configs/etc/synthetic_psp18.py:variant=distill --workdir=W/kd \
      --config.data.flow.cache_dir=W/flow --config.method.teacher.workdir=W/teacher

Sized for the shared 2-core CPU: PSPNet-18 from scratch (no pretrained weights offline) at
64x64 crops of the 128x128 frames (an 8x8 logit grid), batch 8 (pairs), 300 steps, AdamW at
1e-3 for every parameter with 20 warm-up steps and poly decay (the other synthetic demos'
optimizer: ETC's SGD recipe is meant for ImageNet-initialised backbones), ETC's augmentation
(rotation and blur with p 0.5, flip, no colour jitter); the same seed, steps and sampling for
every variant. DIS flow, cached under `data.flow.cache_dir`. The teacher (`teacher`) is the same
PSPNet-18 trained per frame for twice the steps (600): a bigger teacher does not fit the CPU
budget. The self-similarity and MF pools shrink to 2 to fit the grid. TC is on (every
consecutive frame pair of the validation videos).

Arguments: `quick`, `variant=baseline|temporal|distill` (default temporal), `teacher`.
"""

from vssjax import configs_lib

_BASE = configs_lib.load_sibling(__file__, "cityscapes_psp18_baseline.py")


def get_config(arg=None):
  args = configs_lib.parse_arg(arg, quick=False, variant="temporal", teacher=False)
  c = _BASE["etc_base"]("r18", "baseline" if args.teacher else args.variant)
  c.data.source = "synthetic"
  c.data.num_classes = 9
  c.data.batch_size = 8
  c.data.train_transform.update(crop_size=(64, 64), photometric=False, rotate_degrees=10.0,
                                rotate_prob=0.5, blur_prob=0.5)
  c.eval.temporal_consistency = True
  c.method.self_similarity_pool = 2
  c.method.multi_frame_pool = 2
  if not args.teacher and args.variant == "distill":
    c.method.teacher.config = _BASE["sibling"](__file__, "synthetic_psp18.py") + ":teacher"
  c.optim.update(name="adamw", lr=1e-3, weight_decay=0.01, warmup_steps=20, power=1.0,
                 param_groups=())
  c.train.steps = 600 if args.teacher else 300
  c.train.log_every = 25
  c.train.checkpoint_every = 100
  if args.quick:
    _BASE["quick_variant"](c)
  c.lock()
  return c
