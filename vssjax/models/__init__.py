"""Backbones, heads and shared layers (NHWC, parameter paths mirroring the mmseg checkpoints).

mit.py: MiT-B0..B5 backbone; segformer_head.py: SegFormer all-MLP head; segformer.py: the
per-frame SegFormer; layers.py: depthwise conv, torch-exact BatchNorm, ConvModule, DropPath,
image normalisation, torch's L2 normalisation; resnet.py: dilated ResNet-18/50/101 (output
stride 8); ppm.py: PSPNet's pyramid pooling; pspnet.py: PSPNet (ETC's student and teacher);
mobilenet_v2.py: MobileNetV2 (ETC-Mobile's backbone); conv_lstm.py: ETC's distillation ConvLSTM
cell; dcfm.py: DCFM's network (common encoder, FFM, classifier); dtern_head.py: DTERN's decode
head (LTEM, GTEM); sdcpc_attention.py: SD-CPC's dense and window cross-attention; sdcpc_head.py:
SD-CPC's decode head (SSEA, DSSA, embedding projector); sdcpc_prototypes.py: SD-CPC's MCP-CL
class prototypes and contrastive loss.
"""
