"""The results store's safety rules, one at a time: rows are strict JSON (non-finite floats come back),
a corrupt row of any kind is moved aside with a warning naming it and its run is redone, a run is claimed
by one process (a dead or silent holder's claim is taken over), and files are written atomically under
unique temporary names (checkpoints included)."""
from __future__ import annotations

import errno
import json
import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import medvit.claims as claims
from medvit.files import atomic_torch_save, atomic_write_bytes
from medvit.results import CorruptRowWarning, ResultsStore, aggregate

RUN = "finetune__retinamnist__resnet50__random__r0"


def row(repetition=0, status="ok", value=0.5, **extra):
    return {"experiment": "finetune", "dataset": "retinamnist", "model": "resnet50", "init": "random",
            "repetition": repetition, "status": status, "metric": "quadratic_kappa" if status == "ok" else "",
            "value": value, **extra}


def strict_json(text: str):
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


# ---- strict JSON ----------------------------------------------------------------------------------------

def test_rows_are_strict_json_and_non_finite_floats_come_back(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(row(value=float("nan"), best_val=float("-inf"), metrics={"auc": np.float32("nan"), "acc": 0.5},
                     train_loss=np.array([1.0, np.inf]), history=[{"dice": float("nan")}], **{"a/b~c": math.inf}))
    store.append(row(repetition=1, status="failed", value=float("nan"), reason="crashed"))
    files = sorted(tmp_path.glob("rows/*/*.json"))
    assert len(files) == 2
    parsed = [strict_json(f.read_text()) for f in files]  # raises on NaN / Infinity
    assert parsed[0]["value"] is None and parsed[0]["best_val"] is None and parsed[0]["metrics"]["auc"] is None
    assert parsed[0]["nonfinite"] == {"/value": "NaN", "/best_val": "-Infinity", "/metrics/auc": "NaN",
                                      "/train_loss/1": "Infinity", "/history/0/dice": "NaN", "/a~1b~0c": "Infinity"}

    back = store.rows().set_index("repetition")
    first = back.loc[0]
    assert math.isnan(first["value"]) and first["best_val"] == -math.inf and first["a/b~c"] == math.inf
    assert math.isnan(first["metrics"]["auc"]) and first["metrics"]["acc"] == 0.5
    assert first["train_loss"][0] == 1.0 and first["train_loss"][1] == math.inf
    assert math.isnan(first["history"][0]["dice"])
    assert "nonfinite" not in back.columns
    assert math.isnan(back.loc[1, "value"]) and back["value"].dtype == float


def test_a_strict_writer_s_null_value_reads_as_nan(tmp_path):
    folder = tmp_path / "rows" / RUN
    folder.mkdir(parents=True)
    (folder / "x.json").write_text(json.dumps(row(status="failed", value=None) | {
        "run_id": RUN, "created_at": "2024-01-01T00:00:00+00:00"}))
    value = ResultsStore(tmp_path).rows()["value"].iloc[0]
    assert isinstance(value, float) and math.isnan(value)


def test_rows_written_by_older_versions_with_bare_nan_tokens_are_still_read(tmp_path):
    folder = tmp_path / "rows" / RUN
    folder.mkdir(parents=True)
    legacy = row(value=0.7, best_val=float("-inf")) | {"run_id": RUN, "created_at": "2024-01-01T00:00:00+00:00"}
    (folder / "legacy.json").write_text(json.dumps(legacy))  # Python's default writes -Infinity
    assert "-Infinity" in (folder / "legacy.json").read_text()
    store = ResultsStore(tmp_path)
    assert store.done() == {RUN} and store.rows()["best_val"].iloc[0] == -math.inf
    assert not (tmp_path / "quarantine").exists()


# ---- corrupt rows ---------------------------------------------------------------------------------------

GOOD = row(repetition=1) | {"run_id": RUN.replace("r0", "r1"), "created_at": "2024-01-01T00:00:00+00:00"}
CORRUPT = {
    "half a file": ('{"experiment": "finetune", "sta', "not valid JSON"),
    "empty file": ("", "not valid JSON"),
    "not UTF-8": (b"\xff\xfe{}", "not valid JSON"),
    "a JSON list": ("[1, 2]", "a JSON list, not an object"),
    "JSON null": ("null", "a JSON NoneType, not an object"),
    "missing keys": (json.dumps({"experiment": "finetune", "status": "ok"}), "lacks"),
    "unknown status": (json.dumps(row(status="done") | {"run_id": RUN, "created_at": "2024"}), "status 'done'"),
    "another run's row": (json.dumps(GOOD), r"run_id '\S+__r1' is not its folder's"),
}


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_a_corrupt_row_of_any_kind_is_moved_aside_with_a_warning_and_its_run_is_redone(tmp_path, kind):
    content, problem = CORRUPT[kind]
    store = ResultsStore(tmp_path)
    good = store.append(row(repetition=1))
    bad = store.append(row(repetition=0))
    (bad.write_bytes if isinstance(content, bytes) else bad.write_text)(content)

    with pytest.warns(CorruptRowWarning, match=f"corrupt result row {bad}: {problem}") as caught:
        done = store.done()
    assert done == {RUN.replace("r0", "r1")} and store.is_done(RUN) is False
    assert len(caught) == 1 and str(tmp_path / "quarantine" / RUN / bad.name) in str(caught[0].message)
    assert not bad.exists() and good.exists()
    quarantined = tmp_path / "quarantine" / RUN / bad.name
    assert quarantined.read_bytes() == (content if isinstance(content, bytes) else content.encode())

    assert store.rows()["repetition"].tolist() == [1]  # nothing left to warn about
    assert aggregate(store.rows())["n"].tolist() == [1]
    store.append(row(repetition=0, value=0.9))  # the run is redone
    assert store.done() == {RUN, RUN.replace("r0", "r1")}


def test_two_readers_of_one_corrupt_row_both_carry_on(tmp_path):
    store = ResultsStore(tmp_path)
    bad = store.append(row())
    bad.write_text("[]")
    barrier = threading.Barrier(4)
    seen, errors = [], []

    def read():
        barrier.wait()
        try:
            seen.append(len(store.rows()))
        except Exception as err:  # noqa: BLE001  any failure is what this test looks for
            errors.append(err)

    with pytest.warns(CorruptRowWarning):
        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == [] and seen == [0, 0, 0, 0]
    assert [p.name for p in (tmp_path / "quarantine" / RUN).iterdir()] == [bad.name]


# ---- claims ---------------------------------------------------------------------------------------------

def claim_info(path):
    return json.loads(path.read_text())


def test_a_claimed_run_cannot_be_claimed_again_until_released(tmp_path):
    store, other = ResultsStore(tmp_path), ResultsStore(tmp_path)
    with store.claims.claim(RUN) as claim:
        assert claim is not None and claim.generation == 0
        info = claim_info(claim.path)
        assert (info["host"], info["pid"], info["released_at"]) == (claims.HOST, os.getpid(), None)
        assert info["started_at"] <= info["heartbeat_at"] <= time.time()
        assert other.claims.try_claim(RUN) is None
        assert other.claims.holder(RUN)["token"] == info["token"]
    assert claim_info(claim.path)["released_at"] is not None and other.claims.holder(RUN) is None
    again = other.claims.try_claim(RUN)
    assert again.generation == 1 and again.path.name == "000001.json"
    again.release()
    assert sorted(p.name for p in (tmp_path / "claims" / RUN).iterdir()) == ["000000.json", "000001.json"]


def test_a_claim_is_released_when_the_run_raises(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(RuntimeError, match="run crashed"):
        with store.claims.claim(RUN) as claim:
            raise RuntimeError("run crashed")
    assert claim_info(claim.path)["released_at"] is not None
    assert store.claims.try_claim(RUN).generation == 1


def write_claim(tmp_path, generation=0, **info):
    folder = tmp_path / "claims" / RUN
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    info = {"run_id": RUN, "generation": generation, "host": claims.HOST, "pid": os.getpid(), "token": "t",
            "started_at": now, "heartbeat_at": now, "released_at": None} | info
    (folder / f"{generation:06d}.json").write_text(json.dumps(info))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    write_claim(tmp_path, pid=dead_pid())
    claim = ResultsStore(tmp_path).claims.try_claim(RUN)
    assert claim is not None and claim.generation == 1
    claim.release()


def test_a_claim_of_a_killed_but_not_yet_reaped_process_is_taken_over(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_claim(tmp_path, pid=p.pid)
        assert ResultsStore(tmp_path).claims.try_claim(RUN) is None  # alive
        os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while claims._pid_running(p.pid) and time.monotonic() < deadline:  # a zombie until waited for
            time.sleep(0.01)
        claim = ResultsStore(tmp_path).claims.try_claim(RUN)
        assert claim is not None and claim.generation == 1
        claim.release()
    finally:
        p.kill()
        p.wait()


def test_another_host_s_claim_is_taken_over_only_when_its_heartbeat_is_older_than_the_timeout(tmp_path):
    write_claim(tmp_path, host="node-17", pid=1, heartbeat_at=time.time() - 100)
    store = ResultsStore(tmp_path, stale_after=120, heartbeat_every=10)
    assert store.claims.try_claim(RUN) is None and store.claims.holder(RUN)["host"] == "node-17"
    write_claim(tmp_path, host="node-17", pid=1, heartbeat_at=time.time() - 121)
    claim = store.claims.try_claim(RUN)
    assert claim is not None and claim.generation == 1
    claim.release()


def test_an_unreadable_claim_file_is_judged_by_its_age(tmp_path):
    write_claim(tmp_path)
    path = tmp_path / "claims" / RUN / "000000.json"
    path.write_text("{")
    store = ResultsStore(tmp_path, stale_after=60, heartbeat_every=10)
    assert store.claims.try_claim(RUN) is None
    os.utime(path, (time.time() - 61, time.time() - 61))
    assert store.claims.try_claim(RUN).generation == 1


def test_the_heartbeat_keeps_a_claim_alive_and_a_silent_holder_loses_it(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path, stale_after=0.6, heartbeat_every=0.1)
    claim = store.claims.try_claim(RUN)
    first = claim_info(claim.path)["heartbeat_at"]
    monkeypatch.setattr(claims, "HOST", "another-host")  # judge by heartbeat alone, as another host does
    time.sleep(1.0)
    assert claim_info(claim.path)["heartbeat_at"] > first + 0.5
    assert store.claims.try_claim(RUN) is None  # older than stale_after, but heartbeating

    claim._stop.set()  # the holder hangs: no more heartbeats
    claim._thread.join()
    time.sleep(0.7)
    taker = store.claims.try_claim(RUN)
    assert taker is not None and taker.generation == 1
    claim.release()  # the old holder finds out, and does not mark the new claim released
    assert claim.lost and claim_info(taker.path)["released_at"] is None
    assert claim_info(claim.path)["released_at"] is None
    taker.release()


def test_a_heartbeat_shorter_than_the_timeout_is_required(tmp_path):
    with pytest.raises(ValueError, match="heartbeat_every .* must be shorter than stale_after"):
        ResultsStore(tmp_path, stale_after=10, heartbeat_every=10)


def _race(root: str, start, out) -> None:
    start.wait()
    claim = ResultsStore(root).claims.try_claim(RUN)
    out.put(None if claim is None else claim.generation)
    time.sleep(0.5)  # hold it while the others look


@pytest.mark.parametrize("stale", [False, True], ids=["fresh run", "stale claim"])
def test_of_many_processes_racing_for_one_run_exactly_one_wins(tmp_path, stale):
    if stale:
        write_claim(tmp_path, pid=dead_pid())
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), start, out)) for _ in range(8)]
    for p in procs:
        p.start()
    start.set()
    got = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(30)
    assert sorted(got, key=str) == [int(stale)] + [None] * 7


# ---- atomic files ---------------------------------------------------------------------------------------

def test_atomic_write_bytes_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "model.pt"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second" and os.listdir(path.parent) == ["model.pt"]


def test_atomic_torch_save_round_trips_and_concurrent_saves_of_one_path_never_collide(tmp_path):
    path = tmp_path / "checkpoints" / f"{RUN}.pt"
    states = [{"state_dict": {"w": torch.full((64, 64), float(i))}, "run": {"repetition": i}} for i in range(8)]
    errors = []

    def save(state):
        try:
            atomic_torch_save(state, path)
        except Exception as err:  # noqa: BLE001  a collision of temporary names is what this test looks for
            errors.append(err)

    threads = [threading.Thread(target=save, args=(s,)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    saved = torch.load(path, weights_only=True)
    i = saved["run"]["repetition"]
    assert torch.equal(saved["state_dict"]["w"], states[i]["state_dict"]["w"])  # one whole save, not a mix
    assert os.listdir(path.parent) == [path.name]


def _killed_mid_save(path: str) -> None:
    real_write = os.write

    def half_then_die(fd, data):
        real_write(fd, bytes(data[:len(data) // 2]))
        os.kill(os.getpid(), signal.SIGKILL)

    os.write = half_then_die
    atomic_torch_save({"w": torch.ones(1000)}, path)


def test_a_checkpoint_save_killed_mid_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    atomic_torch_save({"w": torch.zeros(1000)}, path)
    p = mp.get_context("fork").Process(target=_killed_mid_save, args=(str(path),))
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(1000))
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".partial")]) == 1  # harmless, never read


def test_a_full_disk_fails_the_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    atomic_write_bytes(path, b"old")
    store = ResultsStore(tmp_path / "store")
    store.append(row(repetition=1))

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"new")
    with pytest.raises(OSError, match="No space left"):
        store.append(row(repetition=0))
    with pytest.raises(OSError, match="No space left"):
        store.claims.try_claim(RUN)
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and not list(tmp_path.rglob("*.partial"))
    assert store.done() == {RUN.replace("r0", "r1")}
    claim = store.claims.try_claim(RUN)  # the failed attempt left no claim behind
    assert claim.generation == 0
    claim.release()
