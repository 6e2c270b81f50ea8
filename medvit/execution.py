"""Doing runs: ``execute_run`` performs one run and appends its one row to the results store;
``run_grid`` does every figure's missing runs, each once (with ``cpu_runs`` > 1 on a CPU, that many at once in
worker processes); ``figure_rows`` gives a page the rows of its figure, doing first what the store lacks
unless the grid already ran (``run_missing=False``).

A row counts for the current profile only when it was made with the same values of the settings its
experiment reads (``medvit.experiments.settings_hash``): change ``train.epochs`` and the fine-tuning runs are
done again, while their k-NN rows stay. Weights or data that cannot be had give an ``unavailable`` row with the
reason, never another setting; a real error gives a ``failed`` row, the other runs still run, and
:class:`RunFailed` (one line naming the run and the reason) is raised at the end. An ``ok`` row of a run that
keeps a checkpoint (an in-domain pretraining; a fine-tuning or segmentation of the first
``checkpoint_repetitions``) counts only while that file exists: a deleted checkpoint is made again.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import platform
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from .claims import HOST
from .device import available_cores, resolve_device
from .experiments import experiment, prerequisites, settings_hash, waves
from .experiments.inputs import pretraining_checkpoint
from .figures import FIGURES, check_sections, figure
from .layout import Layout
from .models import WeightsUnavailableError
from .params import Params
from .resources import VERSION, source_revision
from .results import ResultsStore, current, timed
from .runs import PRETRAIN_DINO, Run, RunUnavailable


class RunFailed(RuntimeError):
    """A run of ``do_runs`` / ``figure_rows`` / ``run_grid`` failed: its ``failed`` row (with the traceback) is
    in the store; the message is one line naming the run and the reason (and how many others failed too)."""

    def __init__(self, run_id: str, reason: str, others: int = 0):
        super().__init__(run_id, reason, others)
        self.run_id, self.reason, self.others = run_id, reason, others

    def __str__(self) -> str:
        first = (self.reason.splitlines() or [""])[0]
        also = f"; {self.others} other run(s) failed too (their lines are above)" if self.others else ""
        return f"run {self.run_id} failed: {first} (its failed row holds the traceback){also}"


def grid_runs(params: Params, figures: list[str] | None = None) -> list[Run]:
    """Every run of ``figures`` (default: every registered figure), each once, in figure order."""
    unknown = sorted(set(figures or ()) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; registered: {', '.join(FIGURES)}")
    check_sections(params)
    runs: dict[str, Run] = {}
    for name in (figures or list(FIGURES)):
        for run in figure(name).plan(params):
            runs.setdefault(run.run_id, run)
    return list(runs.values())


def results_store(params: Params) -> ResultsStore:
    return ResultsStore(Layout.of(params).root)


def checkpoint_gone(params: Params, run: Run, kept) -> bool:
    """Whether an ``ok`` row of ``run`` stands for a checkpoint file that is no longer there (deleted, e.g. as
    an unreadable checkpoint's message advises): such a row does not count, so the run is done again.
    ``kept`` is the row's ``kept_checkpoint``: a pretraining always keeps its checkpoint, another run when its
    row says so (rows written before rows said so, ``kept`` None or NaN, count as they did)."""
    if run.experiment == PRETRAIN_DINO:
        return not pretraining_checkpoint(params, run).is_file()
    return bool(kept == True) and not Layout.of(params).checkpoint(run.run_id).is_file()  # noqa: E712 (NaN, None: not said)


def _keeps_checkpoint(params: Params, run: Run) -> bool:
    """Whether ``run``, just done, kept a checkpoint (executors keep one for the first ``checkpoint_repetitions``)."""
    if run.experiment == PRETRAIN_DINO:
        return True
    return run.repetition < params.checkpoint_repetitions and Layout.of(params).checkpoint(run.run_id).is_file()


def execute_run(run: Run, params: Params, store: ResultsStore, device=None, force: bool = False,
                execute: Callable | None = None) -> dict:
    """Perform one run and append its row (``ok``, ``unavailable`` with the reason, or ``failed``, raised).
    ``execute(run, params, device) -> row fields`` stands in for the run's experiment (tests of the launchers,
    whose tasks run in other processes).

    The run is claimed in the store first, so any number of processes can work through the same grid: a run
    another live process holds is skipped (``{"skipped": "claimed", "holder": ...}``), and one that has an
    ``ok`` row under the current settings by the time the claim is had is not redone (``{"skipped": "done"}``)
    unless ``force`` or the checkpoint that row stands for is gone (:func:`checkpoint_gone`)."""
    with store.claims.claim(run.run_id) as claim:
        if claim is None:
            return {"run_id": run.run_id, "status": "", "skipped": "claimed", "holder": store.claims.holder(run.run_id)}
        if not force:
            rows, _ = current_rows(params, [run], store)
            if not rows.empty and rows["status"].iloc[0] == "ok":
                return {**rows.iloc[0].to_dict(), "skipped": "done"}
        return _execute(run, params, store, device, execute)


def _execute(run: Run, params: Params, store: ResultsStore, device, execute: Callable | None) -> dict:
    clock = timed()
    row = {"experiment": run.experiment, "dataset": run.dataset, "model": run.model, "init": run.init,
           "repetition": run.repetition, "profile": params.profile, "seed": params.seed_for(run.repetition),
           "settings_hash": settings_hash(params, run), "params_hash": params.hash, "params": params.to_dict(),
           "device": str(params.device if device is None else device)}  # provenance replaces it once resolved
    try:
        device = resolve_device(params) if device is None else torch.device(device)
        row.update(provenance(device))
        execute = execute or experiment(run.experiment).execute  # an unknown experiment is a failed row too
        row.update(execute(run, params, device), status="ok", reason="")
        row["kept_checkpoint"] = _keeps_checkpoint(params, run)
    except (WeightsUnavailableError, RunUnavailable) as err:
        row.update(status="unavailable", reason=str(err), metric="", value=float("nan"))
    except Exception as err:
        row.update(status="failed", reason=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(),
                   metric="", value=float("nan"))
        row["wall_time_s"] = clock()
        store.append(row)
        raise
    row["wall_time_s"] = clock()
    store.append(row)
    return row


def provenance(device: torch.device) -> dict:
    """What a row records of where it was made: medvit's version and commit, the device, the host, torch."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"medvit_version": VERSION, "git_sha": str(source_revision()), "device": str(device),
            "device_name": name or platform.machine(), "host": HOST, "torch": torch.__version__}


def current_rows(params: Params, runs: list[Run], store: ResultsStore) -> tuple[pd.DataFrame, int]:
    """Per run, the row that counts (``medvit.results.current``) among its rows made with the current settings
    whose kept checkpoint is still there (:func:`checkpoint_gone`), in the order of ``runs``; and how many
    stored rows of these runs were made with other settings (history, not shown). One run's rows are read
    from its folder alone."""
    rows = store.rows(history=True, run_ids=[runs[0].run_id] if len(runs) == 1 else None)
    if rows.empty:
        return rows, 0
    wanted = {r.run_id: settings_hash(params, r) for r in runs}
    rows = rows[rows["run_id"].isin(wanted)]
    if "settings_hash" not in rows:
        rows = rows.assign(settings_hash="")
    match = rows["settings_hash"] == rows["run_id"].map(wanted)
    by_id = {r.run_id: r for r in runs}
    kept = rows["kept_checkpoint"] if "kept_checkpoint" in rows else pd.Series(None, index=rows.index)
    gone = pd.Series([status == "ok" and checkpoint_gone(params, by_id[run_id], k)
                      for run_id, status, k in zip(rows["run_id"], rows["status"], kept)], index=rows.index, dtype=bool)
    rows = current(rows, counts=match & ~gone)
    order = {r.run_id: i for i, r in enumerate(runs)}
    return rows.sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True), int((~match).sum())


def cpu_workers(params: Params, device: torch.device) -> int:
    """How many runs ``do_runs`` does at once: ``params.cpu_runs`` on a CPU (each with its share of
    the cores as intra-op threads), one on a GPU (the GPU is what they would share)."""
    return max(1, params.cpu_runs) if device.type == "cpu" else 1


def _failed(run: Run, err: BaseException) -> dict:
    """What the printed line needs of a failed run (its stored row has the same reason, and the traceback)."""
    return {"run_id": run.run_id, "status": "failed", "reason": f"{type(err).__name__}: {err}"}


def _execute_all(runs: list[Run], params: Params, store: ResultsStore, device, force: bool, retries=frozenset()):
    """(run, row, seconds, error) for each of ``runs`` as it ends: one after the other in their order, or with
    ``cpu_workers`` > 1 in that many worker processes, each run started as soon as a worker is free and the
    runs it reads (:func:`prerequisites`) have ended (those that others wait for first, then in order), with
    its share of the cores as threads. A run that fails has its failed row written and comes with its
    exception as ``error`` (else None); the others still run. ``retries`` (runs that were unavailable, whose
    weights or data are most likely still missing: a second's work each) are tried here first, without
    starting workers, unless they read a run still to do."""
    later = {r for r in runs if r not in retries}
    here = [r for r in runs if r in retries and not set(prerequisites(r)) & later]
    rest = [r for r in runs if r not in here]
    workers = min(cpu_workers(params, device), len(rest))
    if workers <= 1:
        here += rest
        rest = []
    for run in [r for wave in waves(here) for r in wave]:  # a run after the runs it reads
        start = time.perf_counter()
        try:
            row, error = execute_run(run, params, store, device, force=force), None
        except Exception as err:  # its failed row is in the store; the runs after it still run
            row, error = _failed(run, err), err
        yield run, row, time.perf_counter() - start, error
    if not rest:
        return
    yield from _pool_runs(rest, params, store, device, force, workers, available_cores())


@contextlib.contextmanager
def _workers_skip_main():
    """While workers start: ``spawn`` runs the parent's ``__main__`` script again in every worker (so a user's
    script without an ``if __name__ == "__main__":`` guard, or one read from stdin, would break them); the
    workers need only medvit, so ``__main__``'s file and spec are hidden from multiprocessing meanwhile."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _pool_runs(runs: list[Run], params: Params, store: ResultsStore, device, force: bool, workers: int, cores: int):
    todo, present, ended, running, started = list(runs), set(runs), set(), {}, {}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or CUDA state
    with _workers_skip_main(), ProcessPoolExecutor(workers, mp_context=context) as pool:
        while todo or running:
            needed = {p for r in todo for p in prerequisites(r)}  # what other runs wait for starts first
            ready = sorted((r for r in todo if all(p in ended or p not in present for p in prerequisites(r))),
                           key=lambda r: r not in needed)
            for run in ready[:workers - len(running)]:
                todo.remove(run)
                threads = max(1, cores // min(workers, len(todo) + len(running) + 1))  # the last runs share more
                running[pool.submit(_timed_run, run, params, str(store.root), str(device), force, threads)] = run
                started[run] = time.perf_counter()
            if not running:  # nothing runs and nothing can start: the runs read each other in a cycle
                raise RuntimeError(f"runs wait for each other: {', '.join(r.run_id for r in todo)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                run = running.pop(future)
                ended.add(run)  # its dependents start now: they find its output, or say it is missing
                try:
                    row, seconds = future.result()
                except Exception as err:  # its failed row is in the store (unless the worker died)
                    yield run, _failed(run, err), time.perf_counter() - started[run], err
                    continue
                yield run, row, seconds, None


def _timed_run(run: Run, params: Params, root: str, device: str, force: bool, threads: int) -> tuple[dict, float]:
    """One run in a worker. What it writes to stderr (progress bars, warnings) goes to
    ``<store>/logs/<run_id>.log``: two workers' bars would overwrite each other on one terminal, and the
    parent prints one line per run as it ends."""
    torch.set_num_threads(threads)
    log = Layout(Path(root)).log(run.run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as stderr, contextlib.redirect_stderr(stderr):
        row = execute_run(run, params, ResultsStore(Path(root)), device, force=force)
    return row, time.perf_counter() - start


def figure_rows(params: Params, name: str, run_missing: bool = True, force: bool = False) -> pd.DataFrame:
    """The rows that count of figure ``name``'s runs, one per run (what its page shows). With ``run_missing``
    (a page executed on its own: Colab, papermill, Jupyter) the runs the store lacks under the current settings
    are done first (all with ``force``); ``medvit reproduce`` has done the whole grid before it executes the
    pages, so they only read (``run_missing=False``). Prints one line per finished run and a summary."""
    runs = figure(name).plan(params)
    if run_missing:
        return do_runs(params, runs, name, force)
    rows, other = current_rows(params, runs, results_store(params))
    print(_summary(name, runs, rows, other), flush=True)
    return rows


def run_grid(params: Params, figures: list[str] | None = None, force: bool = False) -> pd.DataFrame:
    """Do the runs of several figures (default: all) together, each once, as one grid: with ``cpu_runs`` > 1
    their runs share the workers (no figure waits for another's last run). Returns the rows that count."""
    return do_runs(params, grid_runs(params, figures), ", ".join(figures or FIGURES), force)


def do_runs(params: Params, runs: list[Run], label: str, force: bool = False) -> pd.DataFrame:
    """``runs`` that the store lacks under the current settings (all with ``force``), one printed line per
    finished run (naming its device) and a summary; the rows that count, one per run. The device is resolved
    first (``device: cuda`` without CUDA is one DeviceUnavailable error before any run). A run that fails
    leaves its failed row and the others still run; then :class:`RunFailed` names the first."""
    device = resolve_device(params)
    store = results_store(params)
    rows, _ = current_rows(params, runs, store)
    done = set() if force or rows.empty else set(rows.loc[rows["status"] == "ok", "run_id"])
    todo = [r for r in runs if r.run_id not in done]
    if todo:
        print(f"{label}: {len(runs)} runs planned, {len(runs) - len(todo)} already done, {len(todo)} to run "
              f"on {device}", flush=True)
    elsewhere, failures = 0, []
    unavailable = set() if rows.empty else set(rows.loc[rows["status"] == "unavailable", "run_id"])
    retries = {r for r in todo if r.run_id in unavailable}
    for i, (run, row, seconds, error) in enumerate(_execute_all(todo, params, store, device, force, retries), 1):
        if error is not None:
            failures.append((run, row["reason"], error))
        if row.get("skipped") == "claimed":
            elsewhere += 1
            holder = row["holder"] or {}
            print(f"  [{i}/{len(todo)}] {run.run_id}: being done by another process (host {holder.get('host')}, "
                  f"pid {holder.get('pid')}); skipped", flush=True)
            continue
        value = (f"{row['metric']} {row['value']:.4f}" if row["status"] == "ok"
                 else (row["reason"].splitlines() or [""])[0][:90])
        what = "done meanwhile by another process" if row.get("skipped") == "done" else row["status"]
        print(f"  [{i}/{len(todo)}] {run.run_id}: {what}, {value} ({seconds:.0f} s on {row.get('device') or device})",
              flush=True)
    rows, other = current_rows(params, runs, store)
    print(_summary(label, runs, rows, other, elsewhere), flush=True)
    if failures:
        run, reason, error = failures[0]
        raise RunFailed(run.run_id, reason, others=len(failures) - 1) from error
    return rows


def _summary(label: str, runs: list[Run], rows: pd.DataFrame, other: int, elsewhere: int = 0) -> str:
    counts = rows["status"].value_counts().to_dict() if not rows.empty else {}
    return (f"{label}: {len(runs)} runs; " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "unavailable", "failed"))
            + (f"; {other} older rows made with other settings are kept as history and not shown" if other else "")
            + (f"; {elsewhere} runs were being done by another process: run again to include them" if elsewhere else ""))


__all__ = ["RunFailed", "grid_runs", "results_store", "checkpoint_gone", "execute_run", "current_rows", "figure_rows",
           "run_grid", "do_runs"]
