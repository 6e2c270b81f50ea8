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

**Claims.** ``try_claim(run_id)`` returns a :class:`Claim` (or ``None`` while another live process holds
the run). Claims are generations ``claims/<run_id>/000000.json, 000001.json, ...``, created with
``os.link`` (atomic and exclusive on POSIX and NFS), never deleted, so each generation has exactly one
creator. The newest generation is the run's claim; it is free when released, or *stale* when its holder is
gone: on the same host its pid no longer runs; on any host its heartbeat (rewritten every
``heartbeat_every`` seconds by a thread of the holder) is older than ``stale_after``. Taking over a free or
stale claim creates the next generation; of two processes racing for it, one wins. A holder whose claim was
taken over (its heartbeat stopped for longer than ``stale_after``) sees ``claim.lost``; its row is still
kept, like any row. The caller checks ``is_done`` after claiming (the holder before it may have finished)::

    with store.claim(run_id) as claim:
        if claim is not None and not store.is_done(run_id):
            store.append(do_the_run())
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import secrets
import socket
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .files import atomic_write_bytes, create_exclusive, fsync_folder

log = logging.getLogger(__name__)

STATUSES = ("ok", "unavailable", "failed")
KEY = ("experiment", "dataset", "model", "init", "repetition")
GROUP = ("experiment", "dataset", "model", "init")
REQUIRED = (*KEY, "status", "run_id", "created_at")
STALE_AFTER_S = 300.0  # a claim without a heartbeat for this long is taken over
HEARTBEAT_EVERY_S = 30.0
HOST = socket.gethostname()


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

def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class Claim:
    """One process's hold on one run (a file ``claims/<run_id>/<generation>.json``), kept alive by a
    heartbeat thread until :meth:`release`."""

    def __init__(self, path: Path, run_id: str, generation: int, info: dict, heartbeat_every: float):
        self.path, self.run_id, self.generation, self.info = path, run_id, generation, info
        self.lost = False  # set when a later generation exists: this claim was taken over
        self.released = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_released, args=(heartbeat_every,),
                                        name=f"claim-heartbeat-{run_id}", daemon=True)

    def __repr__(self) -> str:
        return f"Claim({self.run_id!r}, generation={self.generation}, host={HOST!r}, pid={self.info['pid']})"

    def _start(self) -> "Claim":
        self._thread.start()
        return self

    def heartbeat(self) -> None:
        """Record that the holder is alive (rewrites the claim with a new ``heartbeat_at``); sets ``lost`` if
        another process has taken the run over."""
        if self._taken_over():
            return
        self.info["heartbeat_at"] = time.time()
        atomic_write_bytes(self.path, json.dumps(self.info).encode())

    def _taken_over(self) -> bool:
        if not self.lost and _generations(self.path.parent)[-1:] != [self.generation]:
            self.lost = True
            log.warning("claim on %s (generation %d) was taken over by another process after its heartbeat "
                        "stopped for more than the stale timeout; this process's row is kept as well",
                        self.run_id, self.generation)
        return self.lost

    def _beat_until_released(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.heartbeat()
            except OSError as err:  # e.g. a full disk: the claim may go stale, the work goes on
                log.warning("claim heartbeat for %s failed: %s", self.run_id, err)

    def release(self) -> None:
        """Give the run back (it is then free to be claimed; a finished run is skipped through ``is_done``)."""
        if self.released:
            return
        self.released = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        if self._taken_over():
            return
        self.info["released_at"] = time.time()
        try:
            atomic_write_bytes(self.path, json.dumps(self.info).encode())
        except OSError as err:  # the claim then goes stale when this process ends
            log.warning("could not release the claim on %s: %s", self.run_id, err)


def _generations(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def _claim_file(folder: Path, generation: int) -> Path:
    return folder / f"{generation:06d}.json"


# ---- the store ------------------------------------------------------------------------------------------

class ResultsStore:
    """Rows and claims of one profile under ``root`` (e.g. ``results/quick``).

    ``stale_after``: seconds without a heartbeat after which another process takes a claim over (a
    same-host claim whose process is gone is taken over at once); ``heartbeat_every``: how often a claim's
    holder renews it.
    """

    def __init__(self, root: str | os.PathLike, stale_after: float = STALE_AFTER_S,
                 heartbeat_every: float = HEARTBEAT_EVERY_S):
        if not heartbeat_every < stale_after:
            raise ValueError(f"heartbeat_every ({heartbeat_every} s) must be shorter than stale_after "
                             f"({stale_after} s), or live claims would be taken over")
        self.root = Path(root)
        self.stale_after, self.heartbeat_every = float(stale_after), float(heartbeat_every)

    # -- rows --

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
        folder = self.root / "rows" / row["run_id"]
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
        for path in sorted(self.root.glob(f"rows/{run_pattern}/*.json")):
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
        dest = self.root / "quarantine" / path.parent.name / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, dest)
        except FileNotFoundError:  # another reader moved it first (and warned)
            return
        warnings.warn(f"corrupt result row {path}: {problem}; moved to {dest}, its run counts as not done "
                      "and will be redone", CorruptRowWarning, stacklevel=4)

    # -- claims --

    def try_claim(self, run_id: str) -> Claim | None:
        """Claim ``run_id`` for this process, or None while another live process holds it. A free or stale
        claim (see the module's doc) is taken over. The claim's heartbeat runs until ``release()``."""
        folder = self.root / "claims" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):
            generations = _generations(folder)
            if generations and self._holder(folder, generations[-1]) is not None:
                return None
            generation = generations[-1] + 1 if generations else 0
            now = time.time()
            info = {"run_id": run_id, "generation": generation, "host": HOST, "pid": os.getpid(),
                    "thread": threading.get_ident(), "token": secrets.token_hex(8), "started_at": now,
                    "heartbeat_at": now, "released_at": None}
            if not create_exclusive(folder, _claim_file(folder, generation).name, json.dumps(info).encode()):
                time.sleep(random.uniform(0, 0.01))  # another process created it first: look again (after a
                continue  # moment, so that a folder listing cached by NFS can catch up)
            if _generations(folder)[-1] != generation:  # only if claim files were deleted by hand
                continue
            return Claim(_claim_file(folder, generation), run_id, generation, info, self.heartbeat_every)._start()
        raise RuntimeError(f"could not claim {run_id} in {folder}: claim files keep changing")

    @contextlib.contextmanager
    def claim(self, run_id: str) -> Iterator[Claim | None]:
        """``with store.claim(run_id) as claim:`` — a :class:`Claim` (released on exit) or None when another
        live process holds the run."""
        claim = self.try_claim(run_id)
        try:
            yield claim
        finally:
            if claim is not None:
                claim.release()

    def holder(self, run_id: str) -> dict | None:
        """The live claim on ``run_id`` (host, pid, started_at, heartbeat_at, ...), or None if it is free."""
        folder = self.root / "claims" / run_id
        generations = _generations(folder)
        return self._holder(folder, generations[-1]) if generations else None

    def _holder(self, folder: Path, generation: int) -> dict | None:
        """The claim file's content when it is live; None when it is released or stale."""
        path = _claim_file(folder, generation)
        try:
            info = json.loads(path.read_text())
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
            heartbeat = float(info["heartbeat_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):  # unreadable: judge by its age alone
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                return None
            return {"unreadable": str(path)} if age < self.stale_after else None
        if info.get("released_at") is not None:
            return None
        if info.get("host") == HOST and not _pid_running(int(info.get("pid", -1))):
            return None
        if time.time() - heartbeat > self.stale_after:
            return None
        return info


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
