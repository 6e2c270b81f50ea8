"""How a profile departs from the paper's protocol, computed from its values and the ``paper`` profile's
(the protocol's values live there, once; docs/protocol.md says where each comes from)."""
from __future__ import annotations

from functools import lru_cache

from ..data import dataset_facts
from ..models import indomain_start
from ..paper import paper_counterpart
from ..params import Params, load_params


@lru_cache(maxsize=1)
def protocol() -> Params:
    """The authors' protocol: the ``paper`` profile."""
    return load_params("paper")


def dataset_departures(datasets) -> list[str]:
    out = []
    for d in datasets:
        counterpart, relation = paper_counterpart(d)
        if dataset_facts(d).synthetic:
            out.append(f"{d} is SYNTHETIC data: its numbers test the code, not the paper's claim.")
        elif relation == "analogue":
            out.append(f"{d} is an analogue of the paper's {counterpart}, not the same data: "
                       f"the paper's numbers are shown for context, not as a target.")
        elif relation == "none":
            out.append(f"{d} is not one of the paper's datasets.")
    return out


def execution_departures(params: Params) -> list[str]:
    """Repetitions and precision: what every experiment shares."""
    paper, out = protocol(), []
    if params.repetitions != paper.repetitions:
        out.append(f"{params.repetitions} repetition(s) per setting instead of {paper.repetitions}.")
    if params.precision != "fp32":
        out.append(f"precision {params.precision} (auto: bf16 on a GPU that has it, fp16 with a gradient scaler on "
                   f"one that does not, fp32 on the CPU); the authors trained and evaluated in fp32.")
    return out


def training_departures(config, paper_config, what: str) -> list[str]:
    out = []
    for key, label in (("epochs", "epochs"), ("batch_size", "batch size"), ("lr", "learning rate"),
                       ("weight_decay", "weight decay"), ("grad_clip", "gradient clipping")):
        ours, theirs = getattr(config, key), getattr(paper_config, key)
        if ours != theirs:
            out.append(f"{what}: {label} {ours} instead of {theirs}.")
    if config.effective_warmup(10**9) != paper_config.effective_warmup(10**9) or \
            config.warmup_max_fraction != paper_config.warmup_max_fraction:
        out.append(f"{what}: warm-up capped at {config.warmup_max_fraction:.0%} of all iterations "
                   f"(the authors: {paper_config.warmup_iters} iterations).")
    return out


def classification_departures(params: Params, datasets, models, inits, knn: bool = False,
                              sweep: bool = False) -> list[str]:
    paper, out = protocol(), dataset_departures(datasets)
    if params.train_subset:
        steps = params.train_subset // params.train.batch_size * params.train.epochs
        out.append(f"training splits larger than {params.train_subset} images are subsampled to a fixed "
                   f"seeded subset of {params.train_subset}: a fine-tuning takes at most {steps} Adam steps "
                   f"({params.train_subset} images / batch {params.train.batch_size} × {params.train.epochs} "
                   f"epochs), the CPU budget of this profile; from random init a model may not leave chance in "
                   f"so few, and the verdicts name any that did not (`benchmarks/budget_curve.py` measures "
                   f"larger budgets).")
    if params.img_size != paper.img_size:
        out.append(f"input {params.img_size} px instead of {paper.img_size} px (ViT patch grid "
                   f"{params.img_size // 16}×{params.img_size // 16} instead of "
                   f"{paper.img_size // 16}×{paper.img_size // 16}).")
    out += execution_departures(params)
    out += training_departures(params.train, paper.train, "fine-tuning")
    if not sweep:  # a sweep (Fig 3) compares its own models and inits with the paper's
        missing = [i for i in paper.fig1_inits if i not in inits]
        if missing:
            out.append(f"inits {', '.join(inits)} (the paper also has {', '.join(missing)}).")
    if knn:
        if (params.knn_k, params.knn_temperature) != (paper.knn_k, paper.knn_temperature):
            out.append(f"k-NN with k={params.knn_k}, T={params.knn_temperature} instead of "
                       f"k={paper.knn_k}, T={paper.knn_temperature}.")
        if params.train_subset and params.knn_k >= params.train_subset / 5:
            out.append(f"k-NN: k={params.knn_k} neighbours among a bank of at most {params.train_subset} training "
                       f"images is a large share of the bank (the paper's banks hold thousands).")
    return out


def dino_departures(params: Params, inits) -> list[str]:
    """How the in-domain DINO pretraining departs from the authors' (only where an in-domain init is shown)."""
    shown = [i for i in inits if indomain_start(i) is not None]
    if not shown:
        return []
    paper, out = protocol(), []
    out.append(f"in-domain DINO ({', '.join(shown)}) is pretrained on {', '.join(params.dino_datasets)} for "
               f"{', '.join(params.dino_models)} only, on the training images fine-tuning uses.")
    ours, theirs = params.dino.to_dict(), paper.dino.to_dict()
    stated_below = ("img_size", "steps_per_batch", "keep")
    changed = [f"{k} {ours[k]} instead of {theirs[k]}" for k in ours if k not in stated_below and ours[k] != theirs[k]]
    if changed:
        out.append(f"in-domain DINO: {'; '.join(changed)}.")
    out += dino_stage_notes(params.dino)
    if "random+dino_indomain" in shown:
        out.append("random + in-domain DINO starts from random weights; the paper's DINO row (CVAMD Table 1) starts "
                   "from ImageNet weights (imagenet + in-domain DINO here).")
    return out


def dino_stage_notes(config) -> list[str]:
    """What every in-domain DINO pretraining does beside the authors' trainer (docs/protocol.md §7), whatever the
    profile: the optimiser steps per batch, the teacher kept, the validation k-NN's images, the crops."""
    if config.steps_per_batch == 2:
        steps = ("in-domain DINO takes two Adam steps per batch on the same gradients, as the authors' DINO trainer "
                 "does (a second clip and optimiser step after the first); DINO and the authors' BYOL trainer take "
                 "one (dino.steps_per_batch: 1).")
    else:
        steps = ("in-domain DINO takes one Adam step per batch; the authors' DINO trainer takes two on the same "
                 "gradients (a second clip and optimiser step after the first), and the paper's DINO numbers came "
                 "from it.")
    if config.keep == "best_knn":
        kept = ("in-domain DINO keeps the teacher of the epoch with the best validation k-NN target metric (k 200, "
                "T 0.1), as the authors do; their k-NN bank drops the last incomplete batch of the training images "
                "(up to 63) and their validation loader a random incomplete batch, medvit's uses every image.")
    else:
        kept = ("in-domain DINO keeps the last epoch's teacher; the authors keep the teacher of the epoch with the "
                "best validation k-NN target metric.")
    crops = ("in-domain DINO's crops are resized with bicubic interpolation (lightly's DINOTransform); the authors' "
             "torchvision crops are bilinear.")
    return [steps, kept, crops]


def segmentation_departures(params: Params, datasets) -> list[str]:
    paper, out = protocol(), []
    for d in datasets:
        if dataset_facts(d).synthetic:
            out.append(f"{d} is SYNTHETIC data: its numbers test the code, not the paper's claim.")
        else:
            out.append(f"{d}: the paper does not publish its segmentation datasets or splits; this dataset "
                       f"and its split are ours ({dataset_facts(d).description}).")
    if params.seg_img_size != paper.seg_img_size:
        s = params.seg_img_size
        out.append(f"input {s} px instead of {paper.seg_img_size} px (DeiT patch grid {s // 16}×{s // 16} instead "
                   f"of {paper.seg_img_size // 16}×{paper.seg_img_size // 16}; ResNet map {s // 8}×{s // 8} at "
                   f"output stride 8).")
    out += execution_departures(params)
    out += training_departures(params.seg_train, paper.seg_train, "segmentation")
    out.append(f"{params.seg_train.epochs} epochs at batch size {params.seg_train.batch_size} (the paper publishes "
               f"neither for segmentation); loss: BCE-with-logits on one foreground channel; no auxiliary head.")
    out.append("Dice and IoU are per image at the network's input resolution (the resized, centre-cropped "
               "ground truth), then averaged; an image with empty ground truth and empty prediction scores 1.")
    return out
