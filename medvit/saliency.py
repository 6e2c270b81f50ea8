"""Saliency for Fig 4 (docs/protocol.md §10): Grad-CAM for CNNs, the CLS token's attention for ViTs.

* CNNs: Grad-CAM (pytorch-grad-cam's ``GradCAM``) at ``model.saliency_layer()`` (the last bottleneck
  block, ResNet ``layer4[-1]``) for a target class: by default the predicted class; a one-logit binary
  model's single logit; [ours] a headless backbone (k-NN features, no classes) the L2 norm of its pooled
  features. Maps are upsampled bilinearly to the image (pytorch-grad-cam's own resize) and scaled to [0, 1].
* ViTs: the last block's CLS→patch attention ``attention_maps(x)[-1][:, :, 0, prefix:]``, each head's row
  renormalised over the patches [ours], reshaped to the patch grid, per head and averaged over heads; and
  the "top-50%" mask: the smallest set of patches holding at least half of the attention mass (sort,
  cumulative sum, threshold). Maps and masks are upsampled to the image with **nearest** neighbours, so
  each patch covers exactly its own pixels.

:func:`saliency_maps` dispatches on the model interface (``has_attention``), never on names; which model
Fig 4 shows for a (dataset, backbone, init) is ``medvit.figures.fig4.saliency_model``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TOP_MASS = 0.5  # the "top-50%" attention mask of Fig 4


@dataclass
class SaliencyMaps:
    """Saliency of one model on a batch of B images of size H×W (all numpy).

    ``maps`` (B, H, W) in [0, 1]: Grad-CAM, or the head-averaged CLS attention divided by its maximum.
    For ViTs also ``masks`` (B, H, W) bool, the top-50% mask of the head average, and ``head_maps`` /
    ``head_masks`` (B, heads, H, W), the same per head. ``grid`` (B, heads, h, w) holds the renormalised
    CLS→patch attention on the patch grid (each head sums to 1).
    """

    method: str  # "gradcam" | "cls_attention"
    maps: np.ndarray
    masks: np.ndarray | None = None
    head_maps: np.ndarray | None = None
    head_masks: np.ndarray | None = None
    grid: np.ndarray | None = None

    @property
    def num_heads(self) -> int:
        return 0 if self.head_maps is None else self.head_maps.shape[1]

    def select(self, head: int | str = "mean") -> tuple[np.ndarray, np.ndarray | None]:
        """(maps, masks) of ``head`` (an index, or ``"mean"`` for the head average)."""
        if head == "mean":
            return self.maps, self.masks
        if self.head_maps is None:
            raise ValueError(f"{self.method} maps have no heads; use head='mean'")
        if not isinstance(head, (int, np.integer)) or not 0 <= head < self.num_heads:
            raise ValueError(f"head must be 'mean' or an index in 0..{self.num_heads - 1}, got {head!r}")
        return self.head_maps[:, head], self.head_masks[:, head]


class PooledFeatureNormTarget:
    """[ours] Grad-CAM's target for a headless backbone: the L2 norm of its pooled features."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output.norm()


def gradcam(model, images: torch.Tensor, targets: list[int] | None = None) -> np.ndarray:
    """(B, H, W) Grad-CAM in [0, 1] of a CNN at ``model.saliency_layer()`` for ``targets`` (class indices;
    default: the predicted class, the single logit of a one-output model, the feature norm if headless)."""
    from pytorch_grad_cam import GradCAM  # lazy: grad-cam (and OpenCV) load only where a Grad-CAM is computed
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.saliency_layer()
    model.eval()
    images = images.to(next(model.parameters()).device)
    if targets is not None:
        if len(targets) != len(images):
            raise ValueError(f"{len(targets)} targets for {len(images)} images")
        cam_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    elif model.net.num_classes == 0:
        cam_targets = [PooledFeatureNormTarget() for _ in images]
    else:
        with torch.no_grad():
            predicted = model(images).argmax(1)  # a one-logit model: always 0, its single logit
        cam_targets = [ClassifierOutputTarget(int(t)) for t in predicted]
    with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=images, targets=cam_targets).astype(np.float32)


def top_mass_mask(weights: torch.Tensor, mass: float = TOP_MASS) -> torch.Tensor:
    """The smallest set of cells holding at least ``mass`` of the total, over the last two dims (…, h, w):
    cells sorted by weight, kept while the mass before them is below the threshold (docs/protocol.md §10)."""
    flat = weights.flatten(-2).double()
    values, order = flat.sort(-1, descending=True)
    before = values.cumsum(-1) - values
    keep = before < mass * flat.sum(-1, keepdim=True)
    return torch.zeros_like(keep).scatter(-1, order, keep).reshape(weights.shape)


def cls_attention(model, images: torch.Tensor) -> torch.Tensor:
    """(B, heads, h, w) CLS→patch attention of the last block, each head renormalised over the patches."""
    images = images.to(next(model.parameters()).device)
    with torch.no_grad():
        last = model.eval().attention_maps(images)[-1]
    h, w = model.grid_size(images.shape[-2:])
    prefix = last.shape[-1] - h * w
    cls = last[:, :, 0, prefix:]
    cls = cls / cls.sum(-1, keepdim=True)
    return cls.reshape(len(images), -1, h, w)


def attention_saliency(model, images: torch.Tensor, mass: float = TOP_MASS) -> SaliencyMaps:
    """The ViT side of Fig 4: CLS attention per head and head-averaged, with top-``mass`` masks, at image size."""
    grid = cls_attention(model, images).float()
    size = tuple(images.shape[-2:])
    per_head = torch.cat([grid, grid.mean(1, keepdim=True)], 1)  # heads + the head average last
    masks = top_mass_mask(per_head, mass)
    up = F.interpolate(per_head, size=size, mode="nearest")
    up = up / up.flatten(-2).amax(-1)[..., None, None].clamp_min(1e-12)
    up_masks = F.interpolate(masks.float(), size=size, mode="nearest") > 0.5
    up, up_masks = up.cpu().numpy(), up_masks.cpu().numpy()
    return SaliencyMaps("cls_attention", maps=up[:, -1], masks=up_masks[:, -1], head_maps=up[:, :-1],
                        head_masks=up_masks[:, :-1], grid=grid.cpu().numpy())


def saliency_maps(model, images: torch.Tensor, targets: list[int] | None = None) -> SaliencyMaps:
    """Fig 4's saliency of ``model`` on normalised ``images`` (B, C, H, W): CLS attention with top-50% masks
    for a model with attention, Grad-CAM otherwise (``targets`` are Grad-CAM's classes)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if model.has_attention:
        return attention_saliency(model, images)
    return SaliencyMaps("gradcam", maps=gradcam(model, images, targets))


__all__ = ["SaliencyMaps", "gradcam", "top_mass_mask", "cls_attention", "attention_saliency", "saliency_maps"]
