"""Mean attention distance per head and block (paper Fig 5; docs/protocol.md §11).

Following Dosovitskiy et al. (2021), the distance of head ``h`` in block ``ℓ`` is the mean over query
patches ``q`` and images of ``Σ_k A[q, k] · ‖pos(q) − pos(k)‖`` in pixels, ``pos`` being patch centres.
[ours] The prefix (CLS) tokens are excluded and the patch block's rows are renormalised to sum to one, so
the distance says how far a patch looks *among the patches*, whatever mass it gives the CLS token.

``attention_distance`` is a pure function of attention tensors; ``collect_attention_distance`` runs a
model over ``N`` test images in batches with running sums (one batch's maps in memory at a time). The
experiments that store them are in ``medvit.figures.fig5``.
"""
from __future__ import annotations

import numpy as np
import torch



def patch_centres(grid_hw: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(h·w, 2) pixel coordinates (y, x) of the patch centres, row-major as ViT patch tokens are ordered."""
    h, w = grid_hw
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    return (torch.stack([ys, xs], -1).reshape(-1, 2) + 0.5) * patch_size


def attention_distance(attn: torch.Tensor, grid_hw: tuple[int, int], patch_size: int,
                       num_prefix_tokens: int) -> torch.Tensor:
    """Per image and head, the mean over query patches of the attention-weighted distance in pixels.

    ``attn`` is (B, heads, T, T) softmaxed attention with ``T = num_prefix_tokens + h·w``; the patch
    block ``attn[..., prefix:, prefix:]`` is renormalised row-wise (rows with no patch mass count as 0).
    Returns (B, heads), float64.
    """
    h, w = grid_hw
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention must be (B, heads, T, T), got shape {tuple(attn.shape)}")
    if attn.shape[-1] != num_prefix_tokens + h * w:
        raise ValueError(f"attention has T={attn.shape[-1]} tokens but the grid {h}x{w} with "
                         f"{num_prefix_tokens} prefix token(s) needs T={num_prefix_tokens + h * w}")
    patches = attn[..., num_prefix_tokens:, num_prefix_tokens:].double()
    patches = patches / patches.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    dist = torch.cdist(patch_centres(grid_hw, patch_size), patch_centres(grid_hw, patch_size)).to(attn.device)
    return (patches * dist).sum(-1).mean(-1)


def uniform_attention_distance(grid_hw: tuple[int, int], patch_size: int) -> float:
    """The distance of uniform attention over the patches: the mean pairwise distance of the grid (px),
    the value of a head that looks everywhere equally (a reference line in Fig 5) [ours]."""
    centres = patch_centres(grid_hw, patch_size)
    return float(torch.cdist(centres, centres).mean())


def mean_attention_distance(attn: torch.Tensor, grid_hw: tuple[int, int], patch_size: int,
                            num_prefix_tokens: int) -> torch.Tensor:
    """(heads,) mean attention distance in pixels over the images of one batch (docs/protocol.md §11)."""
    return attention_distance(attn, grid_hw, patch_size, num_prefix_tokens).mean(0)


@torch.inference_mode()
def collect_attention_distance(model, dataset, num_images: int, batch_size: int = 32,
                               device: str | torch.device = "cpu") -> np.ndarray:
    """(blocks, heads) mean attention distance in pixels of ``model`` over the first ``num_images`` of
    ``dataset`` (which carries its eval transform), from every block's attention. Batches are reduced to
    running sums as they come, so only one batch's attention maps are ever held."""
    if not model.has_attention:
        raise ValueError(f"{model.name} has no attention maps (mean attention distance needs a ViT)")
    n = min(num_images, len(dataset))
    if n < 1:
        raise ValueError(f"no images to average over (num_images={num_images}, dataset has {len(dataset)})")
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    model = model.to(device).eval()
    sums = None
    for x, _ in loader:
        maps = model.attention_maps(x.to(device))
        grid = model.grid_size(x.shape[-2:])
        batch = torch.stack([attention_distance(a, grid, model.patch_size, a.shape[-1] - grid[0] * grid[1]).sum(0)
                             for a in maps])
        sums = batch if sums is None else sums + batch
        del maps
    return (sums / n).cpu().numpy()
