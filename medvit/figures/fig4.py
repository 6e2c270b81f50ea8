"""Fig 4 — saliency: Grad-CAM of the CNNs beside the ViTs' CLS attention, on the same test images.

No runs of its own: it reads Fig 1's fine-tuned checkpoints (repetition 0), so its plan is those
``finetune`` runs. Book page: ``book/notebooks/fig4_saliency``; figure: ``medvit.plots.fig4``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..data import create_transform
from ..models import ModelError, WeightsUnavailableError, create_model, indomain_start
from ..params import Params, figure_settings
from ..experiments.finetune import load_finetuned
from ..experiments.inputs import pretrained_weights, profile_dataset
from ..layout import Layout
from ..runs import Run, RunUnavailable, runs_here, with_pretraining
from ..saliency import SaliencyMaps, saliency_maps
from .departures import dataset_departures, execution_departures

NAME = "fig4"
TITLE = "Fig 4 — Grad-CAM and attention maps"
NOTEBOOK = "fig4_saliency"


@dataclass(frozen=True)
class Settings:
    """Fig 4's section of a profile: how many test images per dataset its grid shows."""

    images: int = 4

    def __post_init__(self):
        if self.images < 1:
            raise ValueError(f"images={self.images!r}: expected an integer >= 1")


def settings(params: Params) -> Settings:
    return figure_settings(params, NAME, Settings)


def plan(params: Params) -> list[Run]:
    """The fine-tuned checkpoints Fig 4 shows: repetition 0 of each saliency dataset × Fig 1 backbone × init."""
    return with_pretraining([Run("finetune", d, m, i, 0) for d in params.saliency_datasets
                             for m in params.fig1_models for i in params.fig1_inits if runs_here(params, d, m, i)])


def departures(params: Params) -> list[str]:
    return dataset_departures(params.saliency_datasets) + execution_departures(params)


@dataclass
class SaliencyModel:
    """The model Fig 4 shows for (dataset, backbone, init), or why there is none (``model`` None)."""

    dataset: str
    name: str
    init: str
    model: object | None
    source: str = ""  # what the model is: fine-tuned checkpoint or pretrained backbone
    reason: str = ""  # why it is unavailable
    finetuned: bool = False  # a Fig 1 fine-tuned checkpoint (else a pretrained backbone, not trained on the data)
    planned: bool = True  # (dataset, backbone, init) is in the profile's grid (``runs.runs_here``)

    @property
    def available(self) -> bool:
        return self.model is not None


def saliency_model(params: Params, dataset: str, name: str, init: str, device="cpu") -> SaliencyModel:
    """The Fig 1 fine-tuned model (checkpoint of repetition 0) when it exists, else the pretrained
    backbone (imagenet / dino inits), else an unavailable entry with the reason. Never another init.
    An in-domain DINO init that the profile does not pretrain on ``dataset`` is not planned: unavailable,
    and the reason says so (not a missing file)."""
    if indomain_start(init) is not None and not runs_here(params, dataset, name, init):
        return SaliencyModel(dataset, name, init, None, planned=False,
                             reason=f"not in the profile's plan: no in-domain DINO pretraining of {name} on "
                                    f"{dataset} (dino_datasets: {list(params.dino_datasets)}, dino_models: "
                                    f"{list(params.dino_models)})")
    run = Run("finetune", dataset, name, init, 0)
    ckpt = Layout.of(params).checkpoint(run.run_id)
    if ckpt.is_file():
        return SaliencyModel(dataset, name, init, load_finetuned(params, run, device),
                             source=f"fine-tuned on {dataset} (repetition 0)", finetuned=True)
    missing = f"no fine-tuned checkpoint at {ckpt} (run the Fig 1 fine-tuning)"
    if init == "random":
        return SaliencyModel(dataset, name, init, None, reason=f"{missing}; an untrained random-init backbone "
                                                                f"is not shown")
    try:
        info = profile_dataset(params, dataset, "test").info
        model = create_model(name, init, num_outputs=0, in_chans=info.channels, img_size=params.img_size,
                             weights_file=pretrained_weights(params, run))
    except (WeightsUnavailableError, ModelError, RunUnavailable) as err:
        return SaliencyModel(dataset, name, init, None, reason=f"{missing}, and the pretrained backbone: {err}")
    return SaliencyModel(dataset, name, init, model.to(device).eval(), source=f"pretrained {init} backbone "
                                                                               f"(not fine-tuned)")


def load_test_images(params: Params, dataset: str, indices) -> tuple[torch.Tensor, np.ndarray]:
    """Test images ``indices`` of ``dataset`` through the eval transform: (normalised batch, display images
    (N, H, W, C) in [0, 1], the same pixels un-normalised)."""
    test = profile_dataset(params, dataset, "test")
    bad = [i for i in indices if not 0 <= i < len(test)]
    if bad:
        raise IndexError(f"{dataset} test split has {len(test)} images; indices {bad} are out of range")
    tf = create_transform(test.info, params.img_size, train=False)
    batch = torch.stack([tf(test.load_image(i)) for i in indices])
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (test.info.mean, test.info.std))
    shown = (batch * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return batch, shown


@dataclass
class SaliencyGrid:
    """Fig 4's content: per dataset, test images; per (backbone, init) row and dataset, the resolved model's
    description and its saliency on those images (or the reason it is unavailable)."""

    datasets: tuple[str, ...]
    indices: dict[str, list[int]]
    images: dict[str, np.ndarray]  # dataset -> (N, H, W, C) in [0, 1]
    rows: list[tuple[str, str]]  # (backbone, init)
    cells: dict[tuple[str, str, str], tuple[SaliencyModel, SaliencyMaps | None]]  # (backbone, init, dataset)

    def sources(self) -> pd.DataFrame:
        """Which model each (backbone, init, dataset) shows (fine-tuned checkpoint or pretrained backbone),
        or why none."""
        return pd.DataFrame([{"dataset": d, "model": m, "init": i, "method": "" if maps is None else maps.method,
                              "shown": resolved.source or "unavailable", "reason": resolved.reason,
                              "planned": resolved.planned}
                             for (m, i, d), (resolved, maps) in self.cells.items()])


def saliency_grid(params: Params, models=None, inits=None, datasets=None, num_images: int | None = None,
                  device="cpu") -> SaliencyGrid:
    """Fig 4: the first ``num_images`` (Fig 4's ``images``) test images of each saliency dataset and
    the saliency of each (backbone, init) pair that exists (default: Fig 1's backbones and inits)."""
    models = params.fig1_models if models is None else tuple(models)
    inits = params.fig1_inits if inits is None else tuple(inits)
    datasets = params.saliency_datasets if datasets is None else tuple(datasets)
    n = settings(params).images if num_images is None else num_images
    if not datasets:
        raise ValueError(f"profile {params.profile!r} names no saliency_datasets for Fig 4")
    indices, images, batches, no_images = {}, {}, {}, {}
    for d in datasets:
        try:
            size = len(profile_dataset(params, d, "test"))
        except RunUnavailable as err:  # the data is not on this machine: its cells say so, the page still renders
            no_images[d] = f"the test images of {d} are unavailable: {err}"
            indices[d], images[d] = [], np.zeros((0, 1, 1, 3))
            continue
        indices[d] = list(range(min(n, size)))
        batches[d], images[d] = load_test_images(params, d, indices[d])
    rows = [(m, i) for i in inits for m in models if any(runs_here(params, d, m, i) for d in datasets)]
    cells = {}
    for m, i in rows:
        for d in datasets:
            if d in no_images:
                cells[m, i, d] = (SaliencyModel(d, m, i, None, reason=no_images[d]), None)
                continue
            resolved = saliency_model(params, d, m, i, device)
            maps = saliency_maps(resolved.model, batches[d]) if resolved.available else None
            cells[m, i, d] = (resolved, maps)
            resolved.model = None  # keep the grid light: the maps are what it shows
    return SaliencyGrid(tuple(datasets), indices, images, rows, cells)
