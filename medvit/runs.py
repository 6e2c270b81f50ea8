"""What a run is: the :class:`Run` (experiment, dataset, model, init, repetition), the :class:`Experiment` its
executor belongs to, which runs a profile's grid holds, and the in-domain pretraining a run starts from.

Nothing here executes a run (``medvit.experiments`` holds the executors, ``medvit.execution`` does runs) or
knows which figure asks for what (``medvit.figures``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .models import indomain_start, model_inits
from .params import Params
from .results import run_id

PRETRAIN_DINO = "pretrain_dino"  # the experiment of the in-domain DINO pretrainings
DATA_SETTINGS = ("seed", "dataset_options", "img_size", "train_subset")  # the Params fields a run's data reads
PRETRAIN_SETTINGS = (*DATA_SETTINGS, "dino", "precision")  # what a pretraining's result (its checkpoint) reads


class RunUnavailable(RuntimeError):
    """A run's prerequisite cannot be had here (weights offline, data not downloaded, a checkpoint not yet
    made): its row is ``unavailable`` with this message as the reason, never a substitute."""


class CheckpointMissing(RunUnavailable, FileNotFoundError):
    """No fine-tuned checkpoint for a run; the message names the file and how to make it."""


@dataclass(frozen=True)
class Run:
    experiment: str  # a key of medvit.experiments.EXPERIMENTS
    dataset: str
    model: str
    init: str
    repetition: int

    @property
    def run_id(self) -> str:
        return run_id(self.experiment, self.dataset, self.model, self.init, self.repetition)


@dataclass(frozen=True)
class Experiment:
    """One kind of run: ``execute(run, params, device) -> row fields`` (metric, value, metrics, ...).

    ``settings``: the Params fields whose values change its result: a stored row made with other values is
    stale and the run is done again (a run from an in-domain DINO init also reads the pretraining's
    settings). ``needs``: experiments whose output it reads, so their runs must end first
    (``medvit.experiments.prerequisites``)."""

    name: str
    execute: Callable
    settings: tuple[str, ...]
    needs: tuple[str, ...] = ()


def grid(experiment: str, params: Params, models, inits, datasets) -> list[Run]:
    """Runs of ``experiment`` for datasets × models × inits (those that exist) × repetitions; an in-domain
    DINO init only where its pretraining is planned (``params.dino_datasets`` × ``params.dino_models``)."""
    return [Run(experiment, d, m, i, r) for d in datasets for m in models for i in inits if runs_here(params, d, m, i)
            for r in range(params.repetitions)]


def runs_here(params: Params, dataset: str, model: str, init: str) -> bool:
    """Whether (dataset, model, init) is in the profile's grid: the init exists for the backbone, and an
    in-domain DINO init is pretrained for this dataset and backbone."""
    if init not in model_inits(model):
        return False
    return indomain_start(init) is None or (dataset in params.dino_datasets and model in params.dino_models)


def pretraining_run(run: Run) -> Run | None:
    """The in-domain DINO pretraining that ``run`` starts from (one per dataset × backbone × start init,
    shared by every repetition and experiment), or None for the other inits."""
    if indomain_start(run.init) is None:
        return None
    return Run(PRETRAIN_DINO, run.dataset, run.model, run.init, 0)


def with_pretraining(runs: list[Run]) -> list[Run]:
    """``runs`` preceded by the in-domain DINO pretrainings they start from, each once."""
    first = list(dict.fromkeys(p for p in map(pretraining_run, runs) if p is not None and p not in runs))
    return first + runs


def split_pretraining(rows):
    """(the in-domain DINO pretraining rows, the others) of a figure's rows: a page shows the pretrainings
    its inits start from apart from its own evaluations."""
    if rows.empty:
        return rows, rows
    pre = rows["experiment"] == PRETRAIN_DINO
    return rows[pre], rows[~pre]
