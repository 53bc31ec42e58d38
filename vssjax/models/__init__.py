"""Backbones, heads and shared layers (NHWC, parameter paths mirroring the mmseg checkpoints).

mit.py: MiT-B0..B5 backbone; segformer_head.py: SegFormer all-MLP head; segformer.py: the
per-frame SegFormer; layers.py: depthwise conv, torch-exact BatchNorm, ConvModule, DropPath,
image normalisation.
"""
