"""The results store: one JSON file per result row, written atomically (``medvit.files``), never overwritten;
runs claimed before they start, so any number of processes (local workers, Slurm jobs on several hosts sharing
the folder) can work through the same grid. Its folders under ``root`` (``<results_dir>/<profile>``) are
``rows/``, ``claims/`` and ``quarantine/`` (``medvit.layout`` lists them with the rest).

**Rows are strict JSON.** A non-finite float (NaN, ±Infinity) is written as ``null`` and its JSON pointer
recorded in the row's ``nonfinite`` map (``{"/value": "NaN"}``); reading puts the float back, and a
``value`` of ``null`` reads as NaN. Rows written by older versions with bare ``NaN`` tokens are still read.

**Which row counts.** :func:`current` is the one rule: per run, its newest ``ok`` row among the rows that
count, else its newest row (``unavailable`` or ``failed``, which are retried); a later failure never hides a
finished result. ``rows()`` applies it with every row counting; ``medvit.execution.current_rows`` with only the
rows made with the run's current settings. ``rows(history=True)`` gives every row.

**Corrupt rows.** A row file that is not a JSON object with the required keys (``KEY``, ``status``,
``run_id``, ``created_at``) is moved to ``quarantine/`` with a :class:`CorruptRowWarning` naming it; its run
then counts as not done and is redone. Nothing else stops reading.

**Claims** (``store.claims``, ``medvit.claims``): a run is claimed before it starts, so that no two processes
do it at once.
"""
from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .claims import HEARTBEAT_EVERY_S, STALE_AFTER_S, Claims
from .files import atomic_write_bytes, fsync_folder
from .layout import Layout

log = logging.getLogger(__name__)

STATUSES = ("ok", "unavailable", "failed")
KEY = ("experiment", "dataset", "model", "init", "repetition")
GROUP = ("experiment", "dataset", "model", "init")
REQUIRED = (*KEY, "status", "run_id", "created_at")


class CorruptRowWarning(UserWarning):
    """A row file could not be used; it was moved to the store's ``quarantine/`` folder and its run is redone."""


def run_id(experiment: str, dataset: str, model: str, init: str, repetition: int) -> str:
    return f"{experiment}__{dataset}__{model}__{init}__r{repetition}"


# ---- strict JSON ----------------------------------------------------------------------------------------

def _strict(obj, pointer: str, nonfinite: dict):
    """``obj`` with numpy values made plain and non-finite floats replaced by None (recorded in ``nonfinite``
    under their JSON pointer)."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        nonfinite[pointer or "/"] = "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
        return None
    if isinstance(obj, dict):
        return {k: _strict(v, f"{pointer}/{_escape(str(k))}", nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v, f"{pointer}/{i}", nonfinite) for i, v in enumerate(obj)]
    return obj


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _restore_nonfinite(row: dict) -> None:
    """Put back the floats a row's ``nonfinite`` map records (and drop the map)."""
    for pointer, text in (row.pop("nonfinite", None) or {}).items():
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        parent = row
        try:
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            last = parts[-1]
            if isinstance(parent, list):
                parent[int(last)] = float(text)
            elif last in parent:
                parent[last] = float(text)
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # a pointer that does not resolve changes nothing
    if row.get("value", 0) is None:
        row["value"] = float("nan")


def _dumps(row: dict) -> bytes:
    nonfinite: dict[str, str] = {}
    row = _strict(row, "", nonfinite)
    if nonfinite:
        row["nonfinite"] = nonfinite
    return json.dumps(row, indent=1, default=_json_default, allow_nan=False).encode()


def _json_default(o):
    raise TypeError(f"cannot store {type(o).__name__} in a result row")


# ---- claims ---------------------------------------------------------------------------------------------

class ResultsStore:
    """Rows of one profile under ``root`` (e.g. ``results/quick``), and its ``claims`` (``medvit.claims.Claims``,
    ``stale_after`` and ``heartbeat_every`` are theirs)."""

    def __init__(self, root: str | os.PathLike, stale_after: float = STALE_AFTER_S,
                 heartbeat_every: float = HEARTBEAT_EVERY_S):
        self.root = Path(root)
        self.layout = Layout(self.root)
        self.claims = Claims(self.layout.claims, stale_after, heartbeat_every)

    def append(self, row: dict) -> Path:
        """Write one row atomically; returns its file."""
        missing = [k for k in (*KEY, "status") if k not in row]
        if missing:
            raise ValueError(f"result row lacks {missing}")
        if row["status"] not in STATUSES:
            raise ValueError(f"result row status {row['status']!r} not in {STATUSES}")
        row = {**row, "run_id": run_id(*(row[k] for k in KEY)),
               "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds")}
        data = _dumps(row)
        folder = self.layout.rows / row["run_id"]
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            fsync_folder(folder.parent)
        stamp = row["created_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
        # pid alone is not unique across hosts (Slurm nodes) nor across threads of one process
        return atomic_write_bytes(folder / f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}.json", data)

    def rows(self, history: bool = False, run_ids=None) -> pd.DataFrame:
        """The row that counts per run (:func:`current`, every row counting), or with ``history`` every row;
        of every run, or of ``run_ids`` only (then only their folders are read). Corrupt row files are moved
        to ``quarantine/`` with a :class:`CorruptRowWarning`."""
        patterns = ["*"] if run_ids is None else list(run_ids)
        df = pd.DataFrame([row for pattern in patterns for row in self._read(pattern)])
        if df.empty:
            return df
        if "value" in df:
            df["value"] = pd.to_numeric(df["value"], errors="coerce")
        return df if history else current(df).sort_values("created_at", kind="stable").reset_index(drop=True)

    def is_done(self, run_id: str) -> bool:
        """Whether the row that counts of ``run_id`` is ``ok`` (reads only that run's rows)."""
        rows = self.rows(run_ids=[run_id])
        return not rows.empty and bool((rows["status"] == "ok").any())

    def done(self) -> set[str]:
        """run_ids whose row that counts is ``ok`` (every row counting: :func:`current`)."""
        rows = self.rows()
        return set() if rows.empty else set(rows.loc[rows["status"] == "ok", "run_id"])

    def _read(self, run_pattern: str) -> Iterator[dict]:
        for path in sorted(self.layout.rows.glob(f"{run_pattern}/*.json")):
            if path.name.startswith("."):  # a writer's temporary file (older versions named them .tmp-*.json)
                continue
            try:
                text = path.read_bytes()
            except FileNotFoundError:  # moved to quarantine by a concurrent reader
                continue
            except OSError as err:
                warnings.warn(f"result row {path} cannot be read ({err}); its run counts as not done",
                              CorruptRowWarning, stacklevel=3)
                continue
            row, problem = _parse_row(text, path.parent.name)
            if problem:
                self._quarantine(path, problem)
                continue
            yield row

    def _quarantine(self, path: Path, problem: str) -> None:
        dest = self.layout.quarantine / path.parent.name / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, dest)
        except FileNotFoundError:  # another reader moved it first (and warned)
            return
        warnings.warn(f"corrupt result row {path}: {problem}; moved to {dest}, its run counts as not done "
                      "and will be redone", CorruptRowWarning, stacklevel=4)

def _parse_row(text: bytes, folder_run_id: str) -> tuple[dict | None, str]:
    """(the row, "") or (None, what is wrong with it)."""
    try:
        row = json.loads(text)  # accepts the bare NaN/Infinity tokens of rows written by older versions
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"not valid JSON ({err})"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return None, f"lacks {missing}"
    if row["status"] not in STATUSES:
        return None, f"status {row['status']!r} not in {STATUSES}"
    if row["run_id"] != folder_run_id:
        return None, f"run_id {row['run_id']!r} is not its folder's {folder_run_id!r}"
    if not isinstance(row.get("nonfinite", {}), dict):
        return None, "its 'nonfinite' is not an object"
    _restore_nonfinite(row)
    return row, ""


def current(rows: pd.DataFrame, counts=None) -> pd.DataFrame:
    """The rule for the row that counts, one per run, used by every reader (workers, launchers, pages): among
    a run's rows that count (``counts``: a boolean per row, by default all; ``medvit.execution.current_rows``
    counts only rows made with the run's current settings whose kept checkpoint is still there), its newest
    ``ok`` row, else its newest row. A later failure never hides a finished result."""
    if counts is not None:
        rows = rows[counts]
    ok = (rows["status"] == "ok").rename("_ok")
    return (rows.assign(_ok=ok).sort_values(["_ok", "created_at"], kind="stable")
            .groupby("run_id", as_index=False).tail(1).drop(columns="_ok"))


def aggregate(rows: pd.DataFrame, by=GROUP) -> pd.DataFrame:
    """Median ± std of ``value`` over repetitions per setting, as the paper reports (std: the sample standard
    deviation, ddof 1, pandas' default; numpy's default would be ddof 0); unavailable settings keep one row
    with their reason and NaN values."""
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
