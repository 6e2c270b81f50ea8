"""The results store under concurrent writers: many processes (as many Slurm jobs or local workers do) append
to one store at once; no row is lost or corrupted, a concurrent reader never sees a partial row, and a
writer killed mid-write leaves no row (its run is not done)."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading

import pytest

from medvit.results import ResultsStore

WORKERS, APPENDS, REPETITIONS = 8, 25, 5
PAYLOAD = 20_000  # characters per row: big enough that a non-atomic write would be seen half-done


def _row(worker: int, seq: int) -> dict:
    payload = f"{worker}:{seq}:" + "x" * PAYLOAD
    return {"experiment": "concurrency", "dataset": "d", "model": f"w{worker}", "init": "random",
            "repetition": seq % REPETITIONS, "status": "ok", "worker": worker, "seq": seq, "payload": payload,
            "payload_len": len(payload)}


def _write_rows(root: str, worker: int, start) -> None:
    store = ResultsStore(root)
    start.wait()
    for seq in range(APPENDS):
        store.append(_row(worker, seq))


def _read_until(root: str, stop, report) -> None:
    """Read the store over and over while writers write; report (reads, most rows seen, errors)."""
    store, reads, most, errors = ResultsStore(root), 0, 0, []
    while not stop.is_set():
        try:
            rows = store.rows(history=True)
        except Exception as err:  # noqa: BLE001  any failure to read is what this test looks for
            errors.append(f"{type(err).__name__}: {err}")
            continue
        reads += 1
        most = max(most, len(rows))
        for r in rows.to_dict("records"):
            if len(r["payload"]) != r["payload_len"] or not r["payload"].startswith(f"{r['worker']}:{r['seq']}:"):
                errors.append(f"partial or mixed row {r['run_id']} worker {r['worker']} seq {r['seq']}")
    report.put((reads, most, errors[:5]))


def test_concurrent_appends_from_many_processes_lose_nothing_and_a_reader_never_sees_a_partial_row(tmp_path):
    ctx = mp.get_context("fork")  # forked workers start at once (spawn would re-import torch per worker)
    start, stop, report = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_read_until, args=(str(tmp_path), stop, report))
    writers = [ctx.Process(target=_write_rows, args=(str(tmp_path), w, start)) for w in range(WORKERS)]
    reader.start()
    for p in writers:
        p.start()
    start.set()
    for p in writers:
        p.join(60)
    stop.set()
    reads, most, errors = report.get(timeout=60)
    reader.join(10)

    assert [p.exitcode for p in writers] == [0] * WORKERS
    assert errors == []
    assert reads > 0 and most <= WORKERS * APPENDS
    history = ResultsStore(tmp_path).rows(history=True)
    assert len(history) == WORKERS * APPENDS
    assert sorted(zip(history["worker"], history["seq"])) == [(w, s) for w in range(WORKERS) for s in range(APPENDS)]
    assert (history["payload"].str.len() == history["payload_len"]).all()
    newest = ResultsStore(tmp_path).rows()
    assert len(newest) == WORKERS * REPETITIONS  # one newest row per run
    last_seq = {(w, r): max(s for s in range(APPENDS) if s % REPETITIONS == r)
                for w in range(WORKERS) for r in range(REPETITIONS)}
    assert all(row.seq == last_seq[(row.worker, row.repetition)] for row in newest.itertuples())
    assert not list(tmp_path.glob("rows/*/.tmp-*")), "no temporary file is left behind"


def test_threads_of_one_process_appending_the_same_run_never_overwrite_each_other(tmp_path):
    store = ResultsStore(tmp_path)
    threads = [threading.Thread(target=lambda w=w: [store.append({**_row(w, s), "model": "same", "repetition": 0})
                                                    for s in range(APPENDS)]) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(tmp_path.glob("rows/*/*.json"))) == WORKERS * APPENDS
    assert len(store.rows(history=True)) == WORKERS * APPENDS


def _killed_mid_write(root: str) -> None:
    """Append a row but die (SIGKILL) after half of it reached the file."""
    real_write = os.write

    def half_then_die(fd, data):
        real_write(fd, bytes(data[:len(data) // 2]))
        os.kill(os.getpid(), signal.SIGKILL)

    os.write = half_then_die
    ResultsStore(root).append({**_row(0, 0), "experiment": "finetune"})


def test_a_writer_killed_mid_write_leaves_no_row_and_its_run_is_not_done(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({**_row(1, 0), "experiment": "finetune"})
    p = mp.get_context("fork").Process(target=_killed_mid_write, args=(str(tmp_path),))
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    leftovers = list(tmp_path.glob("rows/*/.tmp-*"))
    assert len(leftovers) == 1 and leftovers[0].read_text().startswith('{\n "experiment"'), "killed while writing"
    rows = store.rows(history=True)
    assert list(rows["model"]) == ["w1"]
    assert store.done() == {"finetune__d__w1__random__r0"}


@pytest.mark.parametrize("name", [".tmp-abc.json", ".tmp-abc.partial"])
def test_a_leftover_temporary_file_of_any_version_is_not_read_as_a_row(tmp_path, name):
    folder = tmp_path / "rows" / "finetune__d__m__random__r0"
    folder.mkdir(parents=True)
    (folder / name).write_text('{"experiment": "fine')
    assert ResultsStore(tmp_path).rows().empty
    assert ResultsStore(tmp_path).done() == set()
