r"""Per-frame SegFormer-MiT-B4 on Cityscapes, SegFormer's 1024x1024 setting (its Table 1 row).

Trained on 1024x1024 crops of frames rescaled to (2048, 1024) x [0.5, 2]; tested on the
full-resolution frame in sliding 1024x1024 windows every 768 pixels, logits averaged where they
overlap (mmseg's 'slide' test mode, `data.eval_transform.slide_crop`/`slide_stride`). The rest of
the recipe, and the use of the annotated frames only, as configs/segformer/cityscapes_mitb0.py,
which builds every variant. The published mIoU shown with the results is recalled from the
SegFormer paper (not available here): [UNVERIFIED].
"""

from vssjax import configs_lib

_BUILDER = configs_lib.load_sibling(__file__, "cityscapes_mitb0.py")


def get_config(arg=None):
  return _BUILDER["segformer_config"]("b4", "cityscapes1024", arg)
