r"""Per-frame SegFormer-MiT-B0 on Cityscapes, SegFormer's 1024x1024 setting (its Table 1 row).

  # evaluate the released weights (HF hub: nvidia/segformer-b0-finetuned-cityscapes-1024-1024;
  # B1-B5: segformer-b<N>-finetuned-cityscapes-1024-1024 with cityscapes1024_mitb<N>.py):
  python -m vssjax.convert --config=configs/segformer/cityscapes1024_mitb0.py \
      --checkpoint=/weights/segformer-b0-finetuned-cityscapes-1024-1024 --workdir=D
  python -m vssjax.main --config=configs/segformer/cityscapes1024_mitb0.py --workdir=D \
      --mode=eval --config.data.cityscapes.root=/data/cityscapes
  # train (160k steps of 8 1024x1024 crops, from the ImageNet MiT weights):
  python -m vssjax.main --config=configs/segformer/cityscapes1024_mitb0.py --workdir=D \
      --config.data.cityscapes.root=/data/cityscapes --config.init.torch_checkpoint=mit_b0.pth

Trained on 1024x1024 crops of frames rescaled to (2048, 1024) x [0.5, 2]; tested on the
full-resolution frame in sliding 1024x1024 windows every 768 pixels, logits averaged where they
overlap (mmseg's 'slide' test mode, `data.eval_transform.slide_crop`/`slide_stride`). The rest of
the recipe, and the use of the annotated frames only, as configs/segformer/cityscapes_mitb0.py,
which builds every variant. The published mIoU shown with the results is recalled from the
SegFormer paper (not available here): [UNVERIFIED]. cityscapes1024_mitb{1..5}.py are the same
with their backbone (and, from B2, the 768-wide decoder).
"""

from vssjax import configs_lib

_BUILDER = configs_lib.load_sibling(__file__, "cityscapes_mitb0.py")


def get_config(arg=None):
  return _BUILDER["segformer_config"]("b0", "cityscapes1024", arg)
