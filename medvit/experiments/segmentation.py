"""Segmentation (the paper's Fig 2 protocol): DeepLabV3 on the backbone under its init, trained with
``medvit.segment.train_segmentation``; the test Dice and IoU, the trivial baselines, and the checkpoint the
page's example masks come from."""
from __future__ import annotations

from ..data.segmentation import SegmentationDataset, resized
from ..data.transforms import resize_size
from ..params import Params
from ..runs import Experiment, Run
from ..segment import create_segmentation_model, train_segmentation, trivial_baselines
from ..train import seed_everything
from .inputs import load_checkpoint, profile_dataset, save_checkpoint


def load_segmentation_split(params: Params, dataset: str, split: str) -> SegmentationDataset:
    """One split of a segmentation dataset (profile's data root and options), resized once to the pipeline's
    pre-crop size for ``params.seg_img_size``. ``params.train_subset`` (a classification budget) is not applied."""
    raw = profile_dataset(params, dataset, split)
    if not isinstance(raw, SegmentationDataset):
        raise ValueError(f"dataset {dataset!r} is a {type(raw).__name__}, not a segmentation dataset "
                         f"(a SegmentationDataset of images + masks)")
    return resized(raw, resize_size(params.seg_img_size))


def segmentation_run(run: Run, params: Params, device) -> dict:
    splits = {s: load_segmentation_split(params, run.dataset, s) for s in ("train", "val", "test")}
    info = splits["train"].info
    seed = params.seed_for(run.repetition)
    seed_everything(seed)
    model = create_segmentation_model(run.model, run.init, in_chans=info.channels, img_size=params.seg_img_size)
    res = train_segmentation(model, splits["train"], splits["val"], splits["test"], params.seg_train,
                             params.seg_img_size, seed=seed, device=device, precision=params.precision,
                             compile=params.compile, num_workers=params.num_workers)
    if run.repetition < params.checkpoint_repetitions:
        save_checkpoint(model, run, params)
    return {"metric": "dice", "value": res.test_metrics["dice"], "metrics": res.test_metrics, "split": "test",
            "epochs": params.seg_train.epochs, "img_size": params.seg_img_size, "best_epoch": res.best_epoch,
            "best_val": res.best_val, "val_history": res.val_history, "iterations": res.iterations,
            "warmup_iters": res.warmup_iters, "precision": res.precision,
            "n_params": sum(p.numel() for p in model.parameters()), "train_loss": res.train_loss,
            "baselines": trivial_baselines(splits["test"], params.seg_img_size)}


SEGMENTATION = Experiment("segmentation", segmentation_run,
                          settings=("seed", "dataset_options", "seg_img_size", "seg_train", "precision"))


def load_segmentation_model(params: Params, run: Run, device="cpu"):
    """The trained DeepLabV3 of ``run`` (its best-validation checkpoint); CheckpointMissing names the file."""
    def build(info, saved):
        model = create_segmentation_model(run.model, "random", in_chans=info.channels, img_size=saved["seg_img_size"])
        model.backbone.init = run.init
        return model

    return load_checkpoint(params, run, build, device)
