"""The executors: one module per kind of run, each an :class:`~medvit.runs.Experiment` (``execute(run, params,
device) -> row fields``, the settings its result reads, the experiments whose output it needs), listed in
:data:`EXPERIMENTS`, the one registry. Here also what the registry answers for any run: the settings its
result depends on (:func:`settings_hash`) and the runs it reads (:func:`prerequisites`, :func:`waves`)."""
from __future__ import annotations

from ..params import Params, digest
from ..runs import PRETRAIN_DINO, PRETRAIN_SETTINGS, Experiment, Run, pretraining_run
from .attention import ATTENTION, ATTENTION_FINETUNED
from .finetune import FINETUNE
from .knn import KNN
from .pretrain_dino import PRETRAIN
from .segmentation import SEGMENTATION

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (PRETRAIN, FINETUNE, KNN, SEGMENTATION, ATTENTION,
                                                           ATTENTION_FINETUNED)}


def experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def settings_hash(params: Params, run: Run) -> str:
    """The hash of the values of the settings ``run`` reads (its experiment's, and the pretraining's for a run
    from an in-domain DINO init), stored as the row's ``settings_hash``: a row made with another hash is
    history. "" for an experiment that does not exist (its failed row has "")."""
    if run.experiment not in EXPERIMENTS:
        return ""
    keys = EXPERIMENTS[run.experiment].settings + (PRETRAIN_SETTINGS if pretraining_run(run) is not None else ())
    return digest(params.settings(dict.fromkeys(keys)))


def prerequisites(run: Run) -> list[Run]:
    """The runs whose outputs ``run`` reads (``Experiment.needs``, per run): the in-domain DINO pretraining its
    init starts from, and the run of repetition 0 of an experiment whose checkpoint it reads (Fig 5's
    fine-tuned attention reads the ``finetune`` checkpoint of the same dataset, model and init)."""
    needs = EXPERIMENTS[run.experiment].needs if run.experiment in EXPERIMENTS else ()
    out = []
    for need in needs:
        pre = pretraining_run(run) if need == PRETRAIN_DINO else Run(need, run.dataset, run.model, run.init, 0)
        if pre is not None:
            out.append(pre)
    return out


def waves(runs: list[Run]) -> list[list[Run]]:
    """``runs`` in waves: a run comes after the runs among ``runs`` that it reads (:func:`prerequisites`), so a
    launcher can start every run of a wave at once (pretrainings, then what starts from them, then what reads
    their fine-tuned checkpoints); the others start in the first wave."""
    present = set(runs)
    levels: dict[Run, int] = {}

    def level(run: Run, seen=()) -> int:
        if run not in levels:
            if run in seen:
                raise ValueError(f"runs read each other in a cycle: {' -> '.join(r.run_id for r in (*seen, run))}")
            levels[run] = 1 + max((level(p, (*seen, run)) for p in prerequisites(run) if p in present), default=-1)
        return levels[run]

    by_level: dict[int, list[Run]] = {}
    for run in runs:
        by_level.setdefault(level(run), []).append(run)
    return [by_level[i] for i in sorted(by_level)]
