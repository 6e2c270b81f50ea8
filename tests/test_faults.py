"""Fault injection on the results store, measured: what is kept after kill -9 at random points, kill -9
inside a checkpoint or row write, many concurrent workers on one grid, a corrupt row, and a full disk.

Each scenario runs a small grid with worker processes that use ``ResultsStore`` directly: claim a run,
"train" (compute for a few tens of ms), write a checkpoint with ``atomic_torch_save``, append an ``ok``
row, release. Every attempt at a run leaves a marker, so afterwards we count:

- rows: runs with an ``ok`` row at the end (must be the whole grid);
- lost: ``ok`` row files seen at any point during the scenario and gone at the end (must be 0);
- finished redone: runs with more than one ``ok`` row, i.e. done again after they finished (must be 0);
- interrupted redone: attempts that did not finish (killed, or failed on a full disk) and were redone.

The table is printed at the end of the module (shown by pytest in its summary) and kept on the book's
scaling page. ``slow`` scenarios take ~10-30 s each on a 2-core CPU.
"""
from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import medvit.results as results
from medvit.files import atomic_torch_save
from medvit.results import CorruptRowWarning, ResultsStore

CTX = mp.get_context("fork")  # workers start at once (spawn would re-import torch per worker)
PHASES = ("claim", "train", "checkpoint", "row")  # "claim": between runs (claiming, checking)
TABLE: list[dict] = []


# ---- the worker: a fake run through the store's API -----------------------------------------------------

def grid(n: int) -> list[dict]:
    return [{"experiment": "finetune", "dataset": "faults", "model": f"m{i // 3}", "init": "random",
             "repetition": i % 3} for i in range(n)]


def rid(run: dict) -> str:
    return results.run_id(*(run[k] for k in results.KEY))


@dataclass
class Options:
    train_s: float = 0.03  # compute per run
    checkpoint_floats: int = 50_000  # 200 kB checkpoints
    die_in: str = ""  # "checkpoint" | "row": SIGKILL half-way through that write ...
    die_at: int = 1  # ... of the die_at-th run this worker starts
    full_after: int = -1  # bytes written before every os.write raises ENOSPC (-1: never)


def fake_run(run: dict, opts: Options) -> float:
    """Compute for opts.train_s; a value that depends only on the run (so a redone run gives the same)."""
    rng = np.random.default_rng(zlib.crc32(rid(run).encode()))
    a, deadline, value = rng.standard_normal((64, 64)), time.perf_counter() + opts.train_s, 0.0
    while time.perf_counter() < deadline:
        value = float(np.tanh(a @ a.T).mean())
    return value


def work(root: str, runs: list[dict], log: str, opts: Options, phase=None) -> None:
    """Do every run of ``runs`` that is not done, claiming each; return when all are done."""
    store = ResultsStore(root)
    set_phase = (lambda p: setattr(phase, "value", PHASES.index(p))) if phase is not None else (lambda p: None)
    started = 0
    real_write, written = os.write, [0]

    def faulty_write(fd, data):
        if opts.full_after >= 0 and written[0] + len(data) > opts.full_after:  # what fits is written
            written[0] += real_write(fd, bytes(data[:max(0, opts.full_after - written[0])]))
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        if opts.die_in and PHASES[phase.value] == opts.die_in and started == opts.die_at:
            real_write(fd, bytes(data[:len(data) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        n = real_write(fd, data)
        written[0] += n
        return n

    os.write = faulty_write  # this worker process only
    while True:
        pending = [r for r in runs if not store.is_done(rid(r))]
        if not pending:
            return
        random.Random(os.getpid()).shuffle(pending)
        for run in pending:
            with store.claims.claim(rid(run)) as claim:
                if claim is None or store.is_done(rid(run)):
                    continue
                started += 1
                marker = Path(log) / rid(run) / f"{os.getpid()}-{time.time_ns()}"  # this attempt, before it starts
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                set_phase("train")
                value = fake_run(run, opts)
                set_phase("checkpoint")
                atomic_torch_save({"run_id": rid(run), "w": torch.full((opts.checkpoint_floats,), value)},
                                  Path(root) / "checkpoints" / f"{rid(run)}.pt")
                set_phase("row")
                store.append({**run, "status": "ok", "metric": "score", "value": value, "worker": os.getpid()})
                set_phase("claim")
        time.sleep(0.01)  # the rest are claimed by other workers: look again


def start(root, runs, log, opts=Options(), phase=None):
    p = CTX.Process(target=work, args=(str(root), runs, str(log), opts, phase))
    p.start()
    return p


# ---- measuring ------------------------------------------------------------------------------------------

def ok_row_files(root: Path) -> set[str]:
    out = set()
    for path in root.glob("rows/*/*.json"):
        try:
            if json.loads(path.read_text()).get("status") == "ok":
                out.add(str(path))
        except (OSError, ValueError):
            pass
    return out


@dataclass
class Scenario:
    name: str
    root: Path
    log: Path
    runs: list[dict]
    workers: int = 1
    faults: dict = field(default_factory=dict)  # (fault, phase) -> count
    seen: set = field(default_factory=set)  # ok row files observed during the scenario

    def fault(self, kind: str, phase) -> None:
        key = (kind, PHASES[phase.value] if phase is not None else "?")
        self.faults[key] = self.faults.get(key, 0) + 1
        self.observe()

    def observe(self) -> None:
        self.seen |= ok_row_files(self.root)

    def kill(self, proc, phase) -> None:
        self.observe()
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        self.fault("kill -9", phase)

    def measure(self) -> dict:
        """Count what is kept and check it: every run done, nothing lost, nothing finished redone."""
        store = ResultsStore(self.root)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = store.rows(history=True)
        ok = history[history["status"] == "ok"]
        per_run = ok["run_id"].value_counts()
        attempts = {d.name: len(list(d.iterdir())) for d in self.log.iterdir()} if self.log.exists() else {}
        for path in self.root.glob("rows/*/*.json"):  # every row is strict JSON
            json.loads(path.read_text(), parse_constant=lambda t: (_ for _ in ()).throw(ValueError(t)))
        bad_checkpoints = 0
        for run_id in per_run.index:
            saved = torch.load(self.root / "checkpoints" / f"{run_id}.pt", weights_only=True)
            value = float(ok.loc[ok["run_id"] == run_id, "value"].iloc[0])
            bad_checkpoints += saved["run_id"] != run_id or not torch.allclose(saved["w"][:1], torch.tensor([value]))
        result = {
            "scenario": self.name, "runs": len(self.runs), "workers": self.workers,
            "faults": sum(self.faults.values()),
            "where": ", ".join(f"{n}× {k} in {p}" for (k, p), n in sorted(self.faults.items())) or "-",
            "rows": int(len(per_run)), "lost": len(self.seen - ok_row_files(self.root)),
            "finished redone": int((per_run - 1).sum()),
            "interrupted redone": sum(attempts.values()) - int(len(ok)),
            "bad checkpoints": int(bad_checkpoints),
            "quarantined": len(list(self.root.glob("quarantine/*/*"))),
            "partial files": len(list(self.root.rglob(".tmp-*.partial"))), "warnings": len(caught),
        }
        TABLE.append(result)
        print(" | ".join(f"{k}: {v}" for k, v in result.items()))
        assert result["rows"] == len(self.runs), "every run of the grid has an ok row"
        assert result["lost"] == 0, "no ok row once written is ever lost"
        assert result["finished redone"] == 0, "no finished run is done again"
        assert result["bad checkpoints"] == 0, "every ok run's checkpoint is complete and its own"
        in_run = sum(n for (_, p), n in self.faults.items() if p in ("train", "checkpoint"))
        # a fault in a row write may come after the row is complete; one "between runs" may come just after an
        # attempt was logged: those may or may not interrupt a run, other faults never do
        assert in_run <= result["interrupted redone"] - result["quarantined"] <= result["faults"], \
            "a run is redone only when a fault stopped it before its row was written"
        return result


@pytest.fixture(scope="module", autouse=True)
def print_table(request):
    yield
    if not TABLE:
        return
    cols = ["scenario", "runs", "workers", "faults", "where", "rows", "lost", "finished redone",
            "interrupted redone", "quarantined", "partial files"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in TABLE]
    text = "\nfault injection on the results store (rows = runs with an ok row at the end):\n" + "\n".join(lines)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(text, flush=True)


def scenario(tmp_path, name, n, **kw) -> Scenario:
    return Scenario(name, tmp_path / "store", tmp_path / "attempts", grid(n), **kw)


# ---- the scenarios --------------------------------------------------------------------------------------

def test_kill_9_during_training(tmp_path):
    s = scenario(tmp_path, "kill -9 during training", 8)
    for _ in range(3):
        phase = CTX.Value("i", 0)
        p = start(s.root, s.runs, s.log, Options(train_s=0.5), phase)
        deadline = time.monotonic() + 30
        while PHASES[phase.value] != "train" and time.monotonic() < deadline:
            time.sleep(0.005)
        s.kill(p, phase)
    p = start(s.root, s.runs, s.log)
    p.join(60)
    assert p.exitcode == 0
    r = s.measure()
    assert r["faults"] == r["interrupted redone"] == 3 and r["partial files"] == 0


def test_kill_9_inside_a_checkpoint_write(tmp_path):
    s = scenario(tmp_path, "kill -9 inside a checkpoint write", 8)
    for die_at in (1, 2, 1):
        phase = CTX.Value("i", 0)
        p = start(s.root, s.runs, s.log, Options(die_in="checkpoint", die_at=die_at), phase)
        p.join(60)
        assert p.exitcode == -signal.SIGKILL
        s.fault("kill -9", phase)
    p = start(s.root, s.runs, s.log)
    p.join(60)
    assert p.exitcode == 0
    r = s.measure()
    assert r["interrupted redone"] == 3 and r["partial files"] == 3  # each kill left one temporary, never read


def test_kill_9_inside_a_row_write(tmp_path):
    s = scenario(tmp_path, "kill -9 inside a row write", 8)
    for die_at in (1, 3, 2):
        phase = CTX.Value("i", 0)
        p = start(s.root, s.runs, s.log, Options(die_in="row", die_at=die_at), phase)
        p.join(60)
        assert p.exitcode == -signal.SIGKILL
        s.fault("kill -9", phase)
    p = start(s.root, s.runs, s.log)
    p.join(60)
    assert p.exitcode == 0
    r = s.measure()
    assert r["interrupted redone"] == 3  # a half-written row is no row: its run is redone, nothing else


def test_concurrent_workers_on_one_grid_do_each_run_once(tmp_path):
    s = scenario(tmp_path, "8 concurrent workers, no fault", 24, workers=8)
    procs = [start(s.root, s.runs, s.log) for _ in range(s.workers)]
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * s.workers
    r = s.measure()
    assert r["interrupted redone"] == 0 and r["partial files"] == 0
    assert len(set(ResultsStore(s.root).rows()["worker"])) > 1, "the work was shared"


def test_a_corrupt_row_is_quarantined_and_only_its_run_redone(tmp_path):
    s = scenario(tmp_path, "a corrupt row file", 8)
    p = start(s.root, s.runs, s.log)
    p.join(60)
    victim = sorted(ok_row_files(s.root))[3]
    Path(victim).write_text('{"experiment": "fine')  # e.g. a disk error
    s.observe()
    s.seen.discard(victim)  # destroyed by the fault itself, not by the store
    with pytest.warns(CorruptRowWarning, match="corrupt result row .* moved to"):
        assert len(ResultsStore(s.root).done()) == 7
    p = start(s.root, s.runs, s.log)
    p.join(60)
    assert p.exitcode == 0
    r = s.measure()
    assert r["quarantined"] == 1 and r["interrupted redone"] == 1  # the one run, redone


def test_a_full_disk_fails_the_worker_and_a_later_one_finishes_the_grid(tmp_path):
    s = scenario(tmp_path, "full disk (ENOSPC injected in os.write)", 8)
    for full_after in (500_000, 1_200_000):  # ~2 and ~5 runs' worth of bytes; the write that crosses fails
        phase = CTX.Value("i", 0)
        p = start(s.root, s.runs, s.log, Options(full_after=full_after), phase)
        p.join(60)
        assert p.exitcode == 1  # the worker's run raised OSError ENOSPC
        s.fault("ENOSPC", phase)
    assert 0 < len(s.seen) < len(s.runs)
    p = start(s.root, s.runs, s.log)
    p.join(60)
    assert p.exitcode == 0
    r = s.measure()
    assert r["interrupted redone"] == 2 and r["partial files"] == 0  # a failed write removes its temporary


@pytest.fixture
def tiny_disk(tmp_path):
    """A 600 KiB tmpfs (root only; skipped where mounting is not allowed), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_real_full_disk(tmp_path, tiny_disk):
    s = Scenario("full disk (a real 600 KiB tmpfs)", tiny_disk / "store", tmp_path / "attempts", grid(8))
    opts = Options(checkpoint_floats=30_000)  # 120 kB checkpoints: ~4 fit
    phase = CTX.Value("i", 0)
    p = start(s.root, s.runs, s.log, opts, phase)
    p.join(60)
    assert p.exitcode == 1
    s.fault("ENOSPC", phase)
    assert 0 < len(s.seen) < len(s.runs)
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_disk)], check=True)  # space freed
    p = start(s.root, s.runs, s.log, opts)
    p.join(60)
    assert p.exitcode == 0
    s.measure()


@pytest.mark.slow
def test_kill_9_at_random_points(tmp_path):
    s = scenario(tmp_path, "kill -9 at random points, 1 worker", 24)
    rng, opts = random.Random(0), Options(train_s=0.1)
    for _ in range(30):
        phase = CTX.Value("i", 0)
        p = start(s.root, s.runs, s.log, opts, phase)
        time.sleep(rng.uniform(0.05, 0.5))
        if not p.is_alive():
            break  # the grid is done
        s.kill(p, phase)
    p = start(s.root, s.runs, s.log, opts)
    p.join(120)
    assert p.exitcode == 0
    s.measure()


@pytest.mark.slow
def test_kill_9_at_random_points_of_concurrent_workers(tmp_path):
    s = scenario(tmp_path, "kill -9 at random points, 4 concurrent workers", 64, workers=4)
    rng, opts = random.Random(1), Options(train_s=0.3)
    procs = [(start(s.root, s.runs, s.log, opts, ph), ph) for ph in [CTX.Value("i", 0) for _ in range(4)]]
    for _ in range(30):
        time.sleep(rng.uniform(0.02, 0.3))
        i = rng.randrange(len(procs))
        p, ph = procs[i]
        if not p.is_alive():
            break  # the grid is done
        s.kill(p, ph)
        ph = CTX.Value("i", 0)
        procs[i] = (start(s.root, s.runs, s.log, opts, ph), ph)
    for p, _ in procs:
        p.join(120)
    assert [p.exitcode for p, _ in procs] == [0] * 4
    s.measure()
