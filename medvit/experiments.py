"""Doing a figure's runs: the bookkeeping around the executors of ``medvit.figures``.

``plan(params, "fig1")`` lists the runs a figure needs; ``execute_run`` performs one and appends its row to
the results store; ``run_experiment`` does the figure's missing runs (resuming) and returns the rows that
count. A row counts for the current profile only when it was made with the same values of the settings its
experiment reads (``Experiment.settings``, hashed into the row's ``settings_hash``): change ``train.epochs``
and the fine-tuning runs are done again, while their k-NN rows stay. Weights or data that cannot be had
give an ``unavailable`` row with the reason, never another setting; a real error gives a ``failed`` row, the
other runs still run, and :class:`RunFailed` (one line naming the run and the reason) is raised at the end. An
``ok`` row of a run that keeps a checkpoint (an in-domain pretraining; a fine-tuning or segmentation of the first
``checkpoint_repetitions``) counts only while that file exists: a deleted checkpoint is made again by the next call.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import pandas as pd
import torch

from .figures import EXPERIMENTS, FIGURES, experiment, figure
from .models import WeightsUnavailableError
from .params import Params
from .results import ResultsStore, provenance, timed
from .runs import (PRETRAIN_DINO, Run, RunUnavailable, checkpoint_path, pretraining_checkpoint, pretraining_run,
                   resolve_device)


class RunFailed(RuntimeError):
    """A run of ``do_runs`` / ``run_experiment`` / ``run_grid`` failed: its ``failed`` row (with the traceback) is
    in the store; the message is one line naming the run and the reason (and how many others failed too)."""

    def __init__(self, run_id: str, reason: str, others: int = 0):
        super().__init__(run_id, reason, others)
        self.run_id, self.reason, self.others = run_id, reason, others

    def __str__(self) -> str:
        first = (self.reason.splitlines() or [""])[0]
        also = f"; {self.others} other run(s) failed too (their lines are above)" if self.others else ""
        return f"run {self.run_id} failed: {first} (its failed row holds the traceback){also}"


def plan(params: Params, name: str) -> list[Run]:
    """The runs figure ``name`` needs (its own and other figures', e.g. Fig 4 reads Fig 1's checkpoints)."""
    return figure(name).plan(params)


def grid_runs(params: Params, figures: list[str] | None = None) -> list[Run]:
    """Every run of ``figures`` (default: every registered figure), each once, in figure order."""
    unknown = sorted(set(figures or ()) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; registered: {', '.join(FIGURES)}")
    runs: dict[str, Run] = {}
    for figure in (figures or list(FIGURES)):
        for run in plan(params, figure):
            runs.setdefault(run.run_id, run)
    return list(runs.values())


def results_store(params: Params) -> ResultsStore:
    return ResultsStore(Path(params.results_dir) / params.profile)


def settings_hash(run: Run, params: Params) -> str:
    """The hash of the settings ``run`` reads; "" for an experiment that does not exist (its failed row has "")."""
    return EXPERIMENTS[run.experiment].settings_hash(params, run) if run.experiment in EXPERIMENTS else ""


def checkpoint_gone(params: Params, run: Run, kept) -> bool:
    """Whether an ``ok`` row of ``run`` stands for a checkpoint file that is no longer there (deleted, e.g. as
    an unreadable checkpoint's message advises): such a row does not count, so the run is done again.
    ``kept`` is the row's ``kept_checkpoint``: a pretraining always keeps its checkpoint, another run when its
    row says so (rows written before rows said so, ``kept`` None or NaN, count as they did)."""
    if run.experiment == PRETRAIN_DINO:
        return not pretraining_checkpoint(params, run).is_file()
    return bool(kept == True) and not checkpoint_path(params, run).is_file()  # noqa: E712 (NaN, None: not said)


def _keeps_checkpoint(params: Params, run: Run) -> bool:
    """Whether ``run``, just done, kept a checkpoint (executors keep one for the first ``checkpoint_repetitions``)."""
    if run.experiment == PRETRAIN_DINO:
        return True
    return run.repetition < params.checkpoint_repetitions and checkpoint_path(params, run).is_file()


def execute_run(run: Run, params: Params, store: ResultsStore, device=None, force: bool = False) -> dict:
    """Perform one run and append its row (``ok``, ``unavailable`` with the reason, or ``failed``, raised).

    The run is claimed in the store first, so any number of processes can work through the same grid: a run
    another live process holds is skipped (``{"skipped": "claimed", "holder": ...}``), and one that has an
    ``ok`` row under the current settings by the time the claim is had is not redone (``{"skipped": "done"}``)
    unless ``force`` or the checkpoint that row stands for is gone (:func:`checkpoint_gone`)."""
    with store.claim(run.run_id) as claim:
        if claim is None:
            return {"run_id": run.run_id, "status": "", "skipped": "claimed", "holder": store.holder(run.run_id)}
        if not force:
            current = settings_hash(run, params)
            done = [r for r in store.run_rows(run.run_id)
                    if r["status"] == "ok" and r.get("settings_hash") == current
                    and not checkpoint_gone(params, run, r.get("kept_checkpoint"))]
            if done:
                return {**done[-1], "skipped": "done"}
        return _execute(run, params, store, device)


def _execute(run: Run, params: Params, store: ResultsStore, device=None) -> dict:
    clock = timed()
    row = {"experiment": run.experiment, "dataset": run.dataset, "model": run.model, "init": run.init,
           "repetition": run.repetition, "profile": params.profile, "seed": params.seed_for(run.repetition),
           "settings_hash": settings_hash(run, params), "params_hash": params.hash, "params": params.to_dict(),
           "device": str(params.device if device is None else device)}  # provenance replaces it once resolved
    try:
        device = resolve_device(params) if device is None else torch.device(device)
        row.update(provenance(device))
        row.update(experiment(run.experiment).execute(run, params, device), status="ok", reason="")
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


def current_rows(params: Params, runs: list[Run], store: ResultsStore) -> tuple[pd.DataFrame, int]:
    """Per run, the row that counts under the current settings (an ``ok`` row if there is one, else the
    newest; an ``ok`` row whose checkpoint is gone does not count: :func:`checkpoint_gone`), and how many
    stored rows of these runs were made with other settings (history, not shown)."""
    rows = store.rows(history=True)
    if rows.empty:
        return rows, 0
    wanted = {r.run_id: settings_hash(r, params) for r in runs}
    rows = rows[rows["run_id"].isin(wanted)]
    if "settings_hash" not in rows:
        rows = rows.assign(settings_hash="")
    match = rows["settings_hash"] == rows["run_id"].map(wanted)
    other = int((~match).sum())
    rows = rows[match]
    by_id = {r.run_id: r for r in runs}
    kept = rows["kept_checkpoint"] if "kept_checkpoint" in rows else pd.Series(None, index=rows.index)
    gone = [status == "ok" and checkpoint_gone(params, by_id[run_id], k)
            for run_id, status, k in zip(rows["run_id"], rows["status"], kept)]
    rows = rows[~pd.Series(gone, index=rows.index, dtype=bool)]
    rows = rows.assign(_ok=lambda d: d["status"] == "ok").sort_values(["_ok", "created_at"])
    rows = rows.groupby("run_id", as_index=False).tail(1).drop(columns="_ok")
    order = {r.run_id: i for i, r in enumerate(runs)}
    return rows.sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True), other


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


def cpu_workers(params: Params, device: torch.device) -> int:
    """How many runs ``run_experiment`` does at once: ``params.cpu_runs`` on a CPU (each with its share of
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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    yield from _pool_runs(rest, params, store, device, force, workers, cores)


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
    log = Path(root) / "logs" / f"{run.run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as stderr, contextlib.redirect_stderr(stderr):
        row = execute_run(run, params, ResultsStore(Path(root)), device, force=force)
    return row, time.perf_counter() - start


def run_experiment(params: Params, name: str, force: bool = False) -> pd.DataFrame:
    """Do the figure's runs that the store lacks under the current settings (all with ``force``); return
    the rows that count, one per run. Prints one line per finished run and a summary."""
    return do_runs(params, plan(params, name), name, force)


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
    counts = rows["status"].value_counts().to_dict() if not rows.empty else {}
    print(f"{label}: {len(runs)} runs; " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "unavailable", "failed"))
          + (f"; {other} older rows made with other settings are kept as history and not shown" if other else "")
          + (f"; {elsewhere} runs were being done by another process: run again to include them" if elsewhere else ""),
          flush=True)
    if failures:
        run, reason, error = failures[0]
        raise RunFailed(run.run_id, reason, others=len(failures) - 1) from error
    return rows


__all__ = ["EXPERIMENTS", "FIGURES", "RunFailed", "checkpoint_gone", "plan", "grid_runs", "execute_run",
           "run_experiment", "run_grid", "do_runs", "results_store", "current_rows", "prerequisites", "waves"]
