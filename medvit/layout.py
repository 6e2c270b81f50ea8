"""Where everything of one profile's results lives: one :class:`Layout` names every path under
``<results_dir>/<profile>/``, so no other module joins those paths itself.

    rows/<run_id>/<timestamp>-<pid>-<random>.json   one result row (``medvit.results.ResultsStore``)
    claims/<run_id>/<generation>.json               who is doing a run (``ResultsStore.claim``)
    quarantine/<run_id>/<file>                      corrupt row files moved aside
    checkpoints/<run_id>.pt                         a trained run's best checkpoint
    pretrain/<run_id>__<settings hash>.pt           an in-domain DINO pretraining's teacher
    predictions/<run_id>.npz, features/<run_id>.npz a run's test scores and k-NN features
    features_cache/                                 frozen-backbone features, extracted once
    logs/<run_id>.log                               a run's stderr when it ran in a worker process
    jobs/                                           submitit's job folders (launchers)
    reproduce.log                                   what ``medvit reproduce`` printed
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def resolve_results_dir(results_dir: str | os.PathLike) -> Path:
    """``results_dir`` made absolute against the current directory (the user's, not the repository): jobs,
    notebooks and ``medvit list runs`` started elsewhere then share one results folder."""
    return Path(results_dir).expanduser().resolve()


@dataclass(frozen=True)
class Layout:
    root: Path  # <results_dir>/<profile>

    @classmethod
    def of(cls, params) -> "Layout":
        """The layout of ``params``' results (``params.results_dir`` / ``params.profile``)."""
        return cls(Path(params.results_dir) / params.profile)

    @property
    def rows(self) -> Path:
        return self.root / "rows"

    @property
    def claims(self) -> Path:
        return self.root / "claims"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def predictions(self, run_id: str) -> Path:
        return self.root / "predictions" / f"{run_id}.npz"

    def features(self, run_id: str) -> Path:
        return self.root / "features" / f"{run_id}.npz"

    def checkpoint(self, run_id: str) -> Path:
        return self.root / "checkpoints" / f"{run_id}.pt"

    def pretraining(self, run_id: str, settings_hash: str) -> Path:
        """An in-domain pretraining's checkpoint; the hash of the settings it read is in its name, so a
        pretraining made with other settings is another file and is never reused."""
        return self.root / "pretrain" / f"{run_id}__{settings_hash}.pt"

    @property
    def features_cache(self) -> Path:
        return self.root / "features_cache"

    def log(self, run_id: str) -> Path:
        return self.root / "logs" / f"{run_id}.log"

    @property
    def jobs(self) -> Path:
        """submitit's job folders (Slurm: one per task ``<array id>_<task>``; local: one per launch)."""
        return self.root / "jobs"

    @property
    def reproduce_log(self) -> Path:
        return self.root / "reproduce.log"
