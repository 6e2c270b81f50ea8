"""Fine-tuning (the paper's classification protocol): the backbone under its init, trained end to end with
``medvit.train.finetune``; the test metric, the learning curve, and the checkpoint Figs 4 and 5 read."""
from __future__ import annotations

from ..layout import Layout
from ..models import create_model
from ..params import Params
from ..predictions import save_predictions
from ..runs import DATA_SETTINGS, PRETRAIN_DINO, Experiment, Run
from ..stats import convergence
from ..train import finetune, seed_everything
from .inputs import load_checkpoint, load_splits, pretrained_weights, save_checkpoint


def finetune_run(run: Run, params: Params, device) -> dict:
    splits = load_splits(params, run.dataset)
    info = splits["train"].info
    seed = params.seed_for(run.repetition)
    seed_everything(seed)
    model = create_model(run.model, run.init, num_outputs=info.num_outputs, in_chans=info.channels,
                         img_size=params.img_size, weights_file=pretrained_weights(params, run))
    res = finetune(model, splits["train"], splits["val"], splits["test"], params.train, params.img_size, seed=seed,
                   device=device, precision=params.precision, compile=params.compile, num_workers=params.num_workers)
    if run.repetition < params.checkpoint_repetitions:
        save_checkpoint(model, run, params)
    save_predictions(Layout.of(params).root, run.run_id, splits["test"].labels, res.test_scores)
    val_metric = [epoch[info.target_metric] for epoch in res.val_history]  # the learning curve, per epoch
    return {"metric": info.target_metric, "value": res.test_metrics[info.target_metric],
            "metrics": res.test_metrics, "split": "test", "epochs": params.train.epochs,
            "best_epoch": res.best_epoch, "best_val": res.best_val, "iterations": res.iterations,
            "warmup_iters": res.warmup_iters, "precision": res.precision,
            "n_params": sum(p.numel() for p in model.parameters()), "train_loss": res.train_loss,
            "val_metric": val_metric, "converged": convergence(val_metric)}


FINETUNE = Experiment("finetune", finetune_run, settings=(*DATA_SETTINGS, "train", "precision"),
                      needs=(PRETRAIN_DINO,))


def load_finetuned(params: Params, run: Run, device="cpu"):
    """The fine-tuned classifier of ``run`` (Figs 4 and 5 read the first repetition's)."""
    def build(info, saved):
        model = create_model(run.model, "random", num_outputs=info.num_outputs, in_chans=info.channels,
                             img_size=saved["img_size"])
        model.init = run.init  # the weights loaded next are the fine-tuned ones of this init
        return model

    return load_checkpoint(params, run, build, device)
