"""The results store: one JSON file per result row, written atomically, never overwritten.

``results/<profile>/rows/<run_id>/<timestamp>-<pid>-<random>.json``: concurrent writers (processes,
threads, Slurm jobs on several hosts) never touch the same file; a row appears only complete: it is
written and fsynced under a hidden temporary name that readers never match (``.tmp-*.partial``), then
renamed, and the folder is fsynced so the rename survives a crash. A writer killed mid-way leaves at
most a hidden temporary file, never a row, so its run is not done. Reading gathers every row file; for
each run the newest row counts (older ones stay as history). A row holds the run's
settings, its status (``ok`` | ``unavailable`` | ``failed``) with a reason, the target metric and
all metrics, and its provenance (git sha, params hash, seed, device, wall time).
"""
from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

STATUSES = ("ok", "unavailable", "failed")
KEY = ("experiment", "dataset", "model", "init", "repetition")
GROUP = ("experiment", "dataset", "model", "init")


def run_id(experiment: str, dataset: str, model: str, init: str, repetition: int) -> str:
    return f"{experiment}__{dataset}__{model}__{init}__r{repetition}"


def git_sha() -> str:
    """The working tree's commit (with ``-dirty`` if it has uncommitted changes), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def provenance(device) -> dict:
    import torch

    device = str(device)
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else platform.processor()
    return {"git_sha": git_sha(), "device": device, "device_name": name or platform.machine(),
            "host": socket.gethostname(), "torch": torch.__version__}


class ResultsStore:
    """Rows of one profile under ``root`` (e.g. ``results/quick``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def append(self, row: dict) -> Path:
        """Write one row atomically; returns its file."""
        missing = [k for k in (*KEY, "status") if k not in row]
        if missing:
            raise ValueError(f"result row lacks {missing}")
        if row["status"] not in STATUSES:
            raise ValueError(f"result row status {row['status']!r} not in {STATUSES}")
        row = {**row, "run_id": run_id(*(row[k] for k in KEY)),
               "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds")}
        folder = self.root / "rows" / row["run_id"]
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(folder.parent)
        stamp = row["created_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
        # pid alone is not unique across hosts (Slurm nodes) nor across threads of one process
        final = folder / f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}.json"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".partial")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(row, f, indent=1, default=_json_default, allow_nan=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        return final

    def rows(self, history: bool = False) -> pd.DataFrame:
        """Every run's newest row (or, with ``history``, every row), as a DataFrame."""
        records = []
        for path in sorted(self.root.glob("rows/*/*.json")):
            if path.name.startswith("."):  # a writer's temporary file (older versions named them .tmp-*.json)
                continue
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"unreadable result row {path}: {err}") from None
        df = pd.DataFrame(records)
        if df.empty or history:
            return df
        return df.sort_values("created_at").groupby("run_id", as_index=False).tail(1).reset_index(drop=True)

    def done(self) -> set[str]:
        """run_ids whose newest row has status ``ok`` (unavailable and failed runs are retried)."""
        df = self.rows()
        return set() if df.empty else set(df.loc[df["status"] == "ok", "run_id"])


def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in a result row")


def aggregate(rows: pd.DataFrame, by=GROUP) -> pd.DataFrame:
    """Median ± std (ddof 1, as numpy/pandas) of ``value`` over repetitions per setting, as the paper
    reports; unavailable settings keep one row with their reason and NaN values."""
    if rows.empty:
        return pd.DataFrame(columns=[*by, "metric", "median", "std", "n", "status", "reason"])
    out = []
    for key, g in rows.groupby(list(by), sort=False):
        ok = g[g["status"] == "ok"]
        vals = ok["value"].astype(float)
        status = "ok" if len(ok) else g["status"].iloc[-1]
        reason = "" if len(ok) else str(g.get("reason", pd.Series([""])).iloc[-1])
        metric = (ok if len(ok) else g)["metric"].iloc[0]  # a failed row's metric is ""
        out.append({**dict(zip(by, key)), "metric": metric, "median": vals.median(),
                    "std": vals.std() if len(vals) > 1 else float("nan"), "n": len(vals),
                    "status": status, "reason": reason})
    return pd.DataFrame(out)


def timed():
    """A wall-clock timer: ``t = timed(); ...; t()`` seconds since."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
