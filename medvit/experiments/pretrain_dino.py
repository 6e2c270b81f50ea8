"""In-domain DINO pretraining (the CVAMD "ImageNet + DINO" row): DINO from the init's start weights on the
run's training images, with ``medvit.pretrain.pretrain_dino``; the kept teacher is the checkpoint the
``<start>+dino_indomain`` inits start from."""
from __future__ import annotations

from ..models import create_model, indomain_start
from ..params import Params
from ..pretrain import pretrain_dino
from ..runs import PRETRAIN_DINO, PRETRAIN_SETTINGS, Experiment, Run
from ..train import seed_everything
from .inputs import load_splits, pretraining_checkpoint


def pretrain_dino_run(run: Run, params: Params, device) -> dict:
    """In-domain DINO on the run's training split (the images fine-tuning uses; labels unused), from the
    init's start weights; resumes its own checkpoint, so an interrupted pretraining continues. The validation
    split selects the teacher kept (``dino.keep``: the best validation k-NN epoch's by default); the row's
    ``best_epoch`` and ``best_val`` are the kept epoch and its validation k-NN metric."""
    splits = load_splits(params, run.dataset)
    train = splits["train"]
    info = train.info
    seed_everything(params.dino.seed)  # the start weights (random init) do not depend on what ran before
    model = create_model(run.model, indomain_start(run.init), num_outputs=0, in_chans=info.channels,
                         img_size=params.img_size)
    path = pretraining_checkpoint(params, run)
    res = pretrain_dino(model, train, params.dino, device=device, checkpoint=path,
                        amp=params.precision != "fp32",
                        num_workers=params.num_workers, val_dataset=splits["val"])
    last = res.history[-1]
    return {"metric": "dino_loss", "value": last["loss"], "metrics": {k: last[k] for k in
                                                                   ("loss", "teacher_entropy", "feature_std")},
            "split": "train", "epochs": params.dino.epochs, "n_train": len(train), "history": res.history,
            "iterations": res.iterations_per_epoch * params.dino.epochs, "local_crop_size": res.local_crop_size,
            "checkpoint": path.name, "precision": res.precision, "kept": params.dino.keep,
            "best_epoch": res.kept_epoch, "best_val": res.kept_knn_val,
            "n_params": sum(p.numel() for p in model.parameters())}


PRETRAIN = Experiment(PRETRAIN_DINO, pretrain_dino_run, settings=PRETRAIN_SETTINGS)
