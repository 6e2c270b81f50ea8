"""Mean attention distance (the paper's Fig 5): per head and block of a ViT, on the dataset's test images,
with ``medvit.attention``; of the backbone as initialised (``attention``) and of the fine-tuned model
(``attention_finetuned``, which reads the ``finetune`` checkpoint of repetition 0)."""
from __future__ import annotations

from ..attention import collect_attention_distance, uniform_attention_distance
from ..data import create_transform
from ..models import create_model
from ..params import Params
from ..runs import PRETRAIN_DINO, Experiment, Run
from .finetune import FINETUNE, load_finetuned
from .inputs import pretrained_weights, profile_dataset

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


def attention_run(run: Run, params: Params, device) -> dict:
    """The pretrained (or random) backbone's attention distances on the dataset's test images."""
    test = _test_images(params, run.dataset)
    model = create_model(run.model, run.init, num_outputs=0, in_chans=test.info.channels, img_size=params.img_size,
                         weights_file=pretrained_weights(params, run))
    return _distance_row(model, test, params, device, "backbone")


def attention_finetuned_run(run: Run, params: Params, device) -> dict:
    """The Fig 1 fine-tuned model's (checkpoint of repetition 0) attention distances; a missing checkpoint
    makes the run ``unavailable`` with the checkpoint's path as the reason."""
    test = _test_images(params, run.dataset)
    model = load_finetuned(params, Run("finetune", run.dataset, run.model, run.init, 0), device)  # may be unavailable
    return _distance_row(model, test, params, device, "fine-tuned")


ATTENTION = Experiment("attention", attention_run, settings=SETTINGS, needs=(PRETRAIN_DINO,))
ATTENTION_FINETUNED = Experiment("attention_finetuned", attention_finetuned_run,
                                 settings=(*SETTINGS, *FINETUNE.settings), needs=("finetune",))
