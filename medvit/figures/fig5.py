"""Fig 5 — mean attention distance per head and block, pretrained backbones and fine-tuned ViTs.

Runs: ``attention`` (the backbone as initialised) and ``attention_finetuned`` (Fig 1's fine-tuned checkpoint,
repetition 0) for each saliency dataset × Fig 1 ViT × init. Book page: ``book/notebooks/fig5_attention_distance``;
figure: ``medvit.plots.fig5``.
"""
from __future__ import annotations

from ..attention import collect_attention_distance, uniform_attention_distance
from ..data import create_transform
from ..models import create_model
from ..models.backbones import get_spec
from ..params import Params
from ..runs import PRETRAIN_DINO, Experiment, Run, pretrained_weights, profile_dataset, runs_here, with_pretraining
from .departures import dataset_departures, execution_departures
from .fig1 import FINETUNE, load_finetuned

NAME = "fig5"
TITLE = "Fig 5 — Mean attention distance"
NOTEBOOK = "fig5_attention_distance"
SETTINGS = ("seed", "dataset_options", "img_size", "attention_images")


def _test_images(params: Params, dataset: str):
    test = profile_dataset(params, dataset, "test")
    return test.with_transform(create_transform(test.info, params.img_size, train=False))


def _distance_row(model, test, params: Params, device, source: str) -> dict:
    d = collect_attention_distance(model, test, params.attention_images, params.train.batch_size, device)
    grid = model.grid_size((params.img_size, params.img_size))
    return {"metric": "mean_attention_distance_px", "value": float(d.mean()), "metrics": {},
            "distances": d.tolist(), "source": source, "n_images": min(params.attention_images, len(test)),
            "img_size": params.img_size, "patch_size": model.patch_size,
            "uniform_px": uniform_attention_distance(grid, model.patch_size)}


def _attention_backbone(run: Run, params: Params, device) -> dict:
    """The pretrained (or random) backbone's attention distances on the dataset's test images."""
    test = _test_images(params, run.dataset)
    model = create_model(run.model, run.init, num_outputs=0, in_chans=test.info.channels, img_size=params.img_size,
                         weights_file=pretrained_weights(params, run))
    return _distance_row(model, test, params, device, "backbone")


def _attention_finetuned(run: Run, params: Params, device) -> dict:
    """The Fig 1 fine-tuned model's (checkpoint of repetition 0) attention distances; a missing checkpoint
    makes the run ``unavailable`` with the checkpoint's path as the reason."""
    test = _test_images(params, run.dataset)
    model = load_finetuned(params, Run("finetune", run.dataset, run.model, run.init, 0), device)  # may be unavailable
    return _distance_row(model, test, params, device, "fine-tuned")


def plan(params: Params) -> list[Run]:
    """Fig 5's runs: each ViT of Fig 1 under each Fig 1 init that exists for it, as a backbone and fine-tuned,
    on each saliency dataset's test images."""
    vits = [m for m in params.fig1_models if get_spec(m).family == "vit"]
    return with_pretraining([Run(e, d, m, i, 0) for e in ("attention", "attention_finetuned")
                             for d in params.saliency_datasets for m in vits for i in params.fig1_inits
                             if runs_here(params, d, m, i)])


ATTENTION = Experiment("attention", _attention_backbone, settings=SETTINGS, needs=(PRETRAIN_DINO,))
ATTENTION_FINETUNED = Experiment("attention_finetuned", _attention_finetuned,
                                 settings=(*SETTINGS, *FINETUNE.settings), needs=("finetune",))
EXPERIMENTS = (ATTENTION, ATTENTION_FINETUNED)


def departures(params: Params) -> list[str]:
    return dataset_departures(params.saliency_datasets) + execution_departures(params)
