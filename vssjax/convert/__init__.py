"""Converts released PyTorch checkpoints (Hugging Face and mmseg SegFormer, DTERN, DCFM, semseg
PSPNet, ImageNet ResNets) into Orbax checkpoints of this project's models, for evaluation or as
initial weights. Entry point: `python -m vssjax.convert` (`__main__.py` has the flags)."""
