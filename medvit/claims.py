"""Claims: who is doing a run. A process claims a run before it starts it, so any number of processes (local
workers, Slurm tasks on several hosts sharing the results folder) work through the same grid without doing a
run twice.

``try_claim(run_id)`` returns a :class:`Claim` (or ``None`` while another live process holds the run): one
file, created exclusively, holding the holder's host, pid, start and heartbeat times. Claims are generations ``claims/<run_id>/000000.json, 000001.json, ...``, created with
``os.link`` (atomic and exclusive on POSIX and NFS), never deleted, so each generation has exactly one
creator. The newest generation is the run's claim; it is free when released, or *stale* when its holder is
gone: on the same host its pid no longer runs; on any host its heartbeat (rewritten every
``heartbeat_every`` seconds by a thread of the holder) is older than ``stale_after``. Taking over a free or
stale claim creates the next generation; of two processes racing for it, one wins (a single file per run
could not be taken over so: two processes that both found it stale could both replace it). A holder whose claim was
taken over (its heartbeat stopped for longer than ``stale_after``) sees ``claim.lost``; its row is still
kept, like any row. The caller looks for the run's row after claiming (the holder before it may have
finished), as ``medvit.execution.execute_run`` does::

    with store.claims.claim(run_id) as claim:
        if claim is not None and not store.is_done(run_id):
            store.append(do_the_run())
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from .files import atomic_write_bytes, create_exclusive

log = logging.getLogger(__name__)

STALE_AFTER_S = 300.0  # a claim without a heartbeat for this long is taken over
HEARTBEAT_EVERY_S = 30.0
HOST = socket.gethostname()


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

class Claims:
    """The claims of one results store, one folder per run under ``folder`` (``<store>/claims``).

    ``stale_after``: seconds without a heartbeat after which another process takes a claim over (a same-host
    claim whose process is gone is taken over at once); ``heartbeat_every``: how often a holder renews it."""

    def __init__(self, folder: str | os.PathLike, stale_after: float = STALE_AFTER_S,
                 heartbeat_every: float = HEARTBEAT_EVERY_S):
        if not heartbeat_every < stale_after:
            raise ValueError(f"heartbeat_every ({heartbeat_every} s) must be shorter than stale_after "
                             f"({stale_after} s), or live claims would be taken over")
        self.folder = Path(folder)
        self.stale_after, self.heartbeat_every = float(stale_after), float(heartbeat_every)

    def try_claim(self, run_id: str) -> Claim | None:
        """Claim ``run_id`` for this process, or None while another live process holds it. A free or stale
        claim (see the module's doc) is taken over. The claim's heartbeat runs until ``release()``."""
        folder = self.folder / run_id
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
        folder = self.folder / run_id
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
