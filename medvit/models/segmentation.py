"""DeepLabV3 on the paper's backbones (Fig 2, docs/protocol.md §9).

``create_segmentation_model("resnet50", init="imagenet")`` takes the backbone from the registry
(``medvit.models.create_model``, so the same inits and the same failure when pretrained weights are
missing) and puts torchvision's own ``DeepLabHead`` (ASPP with rates 12/24/36, then 3×3 conv, BN, ReLU,
1×1 conv) on its spatial feature map; the logits are upsampled bilinearly to the input size.

- ResNets are dilated to output stride 8 as torchvision's ``deeplabv3_resnet50``
  (``replace_stride_with_dilation`` for layer3 and layer4), through timm's ``output_stride=8``.
  Dilation changes no parameter shape, so the registry backbone's weights load unchanged.
- ViTs (DeiT): the patch tokens without CLS, after the final norm, reshaped to the patch grid
  (14×14 at 224 px, stride 16): ``Backbone.feature_map``.

[ours] No auxiliary FCN head (torchvision's ``aux_loss``); one output channel (foreground logit) by default.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from .backbones import Backbone, create_model, get_spec

RESNET_OUTPUT_STRIDE = 8  # torchvision's deeplabv3_resnet50: layer3 dilation 2, layer4 dilation 4


class DeepLabV3(nn.Module):
    """A registry :class:`Backbone`'s feature map → torchvision ``DeepLabHead`` → bilinear upsampling."""

    def __init__(self, backbone: Backbone, num_classes: int = 1):
        super().__init__()
        self.backbone = backbone
        self.head = DeepLabHead(backbone.feature_dim, num_classes)
        self.num_classes = num_classes

    name = property(lambda self: self.backbone.name)
    init = property(lambda self: self.backbone.init)
    family = property(lambda self: self.backbone.family)
    has_attention = property(lambda self: self.backbone.has_attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, H, W) at the input's size."""
        logits = self.head(self.backbone.feature_map(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def create_segmentation_model(name: str, init: str = "random", in_chans: int = 3, img_size: int = 224,
                              num_classes: int = 1, weights_file: str | os.PathLike | None = None) -> DeepLabV3:
    """DeepLabV3 on registry backbone ``name`` with ``init`` weights (docs/protocol.md §9).

    ``img_size`` sets a ViT's patch grid; ``num_classes=1`` gives one foreground logit (BCE loss).
    Pretrained weights that cannot be had raise ``WeightsUnavailableError`` (never a random fallback).
    """
    stride = RESNET_OUTPUT_STRIDE if get_spec(name).family == "resnet" else None
    backbone = create_model(name, init, num_outputs=0, in_chans=in_chans, img_size=img_size,
                            weights_file=weights_file, output_stride=stride)
    return DeepLabV3(backbone, num_classes)
