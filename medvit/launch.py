"""Run the paper's grid beyond one process: every missing run as its own job, on local GPUs or on Slurm.

The grid is every figure's runs (``medvit.figures.FIGURES``, each figure's ``plan``), each
run once even when several figures need it (Fig 1 and Fig 3 share fine-tuning runs). A run is an
independent, idempotent job identified by its settings (experiment, dataset, model, init, repetition
and the profile, whose results folder holds it): the job calls ``execute_run``, which appends one row
to ``<results_dir>/<profile>/`` atomically. So a launch submits only the runs that have no ``ok`` row,
jobs may run anywhere that sees the results folder, and a killed job leaves its run missing
for the next launch.

Both launchers go through submitit (``pip install "medvit[cluster]"``):

- ``launch_local``: ``submitit.LocalExecutor``, each run a separate process, at most one run per GPU
  at a time (``CUDA_VISIBLE_DEVICES`` set to that GPU); without GPUs, one run at a time on the CPU.
- ``launch_slurm``: ``submitit.AutoExecutor`` on Slurm, one job array per wave (``executor.batch()``),
  with partition, time, GPUs, CPUs and memory per job from the command line.

Runs that read another experiment's checkpoints (``Experiment.needs``) go in a second wave, after the runs
they read. Unavailable pretrained weights give ``unavailable`` rows, never failures; a job that raises
(``failed`` row) or dies is a failure, reported with its log file and error.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from .experiments import EXPERIMENTS, FIGURES, execute_run, plan, results_store
from .runs import Run
from .params import Params, load_params


# Experiments whose runs read the checkpoints of another experiment's runs (Fig 5's fine-tuned attention
# distances read Fig 1's fine-tuned models): they wait for a second wave.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's LocalExecutor kills a job after timeout_min (default 2 min)
SLURM_QUEUED = {"PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "UNKNOWN"}


def launch_params(profile: str, results_dir: str | os.PathLike | None = None, **overrides) -> Params:
    """The profile's Params with ``results_dir`` made absolute as ``medvit reproduce`` does (relative
    to the current directory), so jobs, notebooks and ``medvit list runs`` share one results folder."""
    from .runner import resolve_profile, resolve_results_dir

    params = load_params(resolve_profile(profile), **overrides)
    return dataclasses.replace(params, results_dir=str(resolve_results_dir(results_dir or params.results_dir)))


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


def run_states(params: Params, runs: list[Run]) -> dict[str, tuple[str, str]]:
    """``run_id -> (state, reason)``: the status of the row that counts (``ResultsStore.rows``: the newest ``ok``
    row, else the newest row; ok | unavailable | failed), else ``missing``."""
    rows = results_store(params).rows()
    newest = {r["run_id"]: (r["status"], r["reason"] if isinstance(r.get("reason"), str) else "")
              for r in rows.to_dict("records")}
    return {r.run_id: newest.get(r.run_id, ("missing", "")) for r in runs}


def pending_runs(params: Params, figures: list[str] | None = None, force: bool = False) -> list[Run]:
    """The grid's runs that are not done (no ``ok`` row: missing, failed or unavailable, since
    weights may have been provided since); every run with ``force``."""
    runs = grid_runs(params, figures)
    if force:
        return runs
    done = results_store(params).done()
    return [r for r in runs if r.run_id not in done]


def waves(runs: list[Run]) -> list[list[Run]]:
    """``runs`` split so that runs of an experiment that ``NEEDS`` others come after the runs they read."""
    later = [r for r in runs if set(EXPERIMENTS[r.experiment].needs) & {x.experiment for x in runs}]
    first = [r for r in runs if r not in later]
    return [w for w in (first, later) if w]


def execute_job(run: Run, params: Params, force: bool = False) -> dict:
    """What one job does: ``execute_run`` unless the run is already done (jobs are idempotent), and a
    short summary back to the launcher. A failing run raises (its ``failed`` row is written first)."""
    row = execute_run(run, params, results_store(params), force=force)
    if row.get("skipped") == "claimed":  # another live process is doing it: this job has nothing to do
        return {"run_id": run.run_id, "status": "ok", "skipped": True, "holder": row["holder"]}
    return {"run_id": run.run_id, "status": row["status"], "value": row.get("value"),
            "wall_time_s": row.get("wall_time_s"), "reason": row.get("reason", ""),
            "skipped": row.get("skipped") == "done"}


@dataclass
class JobOutcome:
    run: Run
    job_id: str
    status: str  # ok | unavailable | failed
    error: str = ""
    log: str = ""  # the job's stderr file


@dataclass
class LaunchReport:
    """What a launch did: the runs it submitted and each one's outcome."""

    launcher: str
    planned: int  # runs in the grid
    outcomes: list[JobOutcome] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def submitted(self) -> list[Run]:
        return [o.run for o in self.outcomes]

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        counts = {s: sum(o.status == s for o in self.outcomes) for s in ("ok", "unavailable", "failed")}
        lines = [f"{self.launcher}: {self.planned} runs in the grid, {len(self.outcomes)} submitted "
                 f"({self.planned - len(self.outcomes)} already done) in {self.wall_time_s:.0f} s: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items())]
        for o in self.failed:
            lines += [f"FAILED {o.run.run_id} (job {o.job_id}); log: {o.log}", _indent(o.error)]
        if self.failed:
            lines.append("rerun the same command after fixing: only the runs that are not done are submitted")
        return "\n".join(lines)


def _indent(text: str, last: int = 12) -> str:
    lines = text.strip().splitlines()
    return "\n".join("    " + line for line in (["..."] if len(lines) > last else []) + lines[-last:])


def _outcome(run: Run, job) -> JobOutcome:
    """A finished job's outcome: the run's status from the job's result, or ``failed`` with its error."""
    error = job.exception()
    if error is None:
        return JobOutcome(run, str(job.job_id), job.result()["status"], log=str(job.paths.stderr))
    return JobOutcome(run, str(job.job_id), "failed", error=str(error), log=str(job.paths.stderr))


class _Progress:
    """A tqdm bar over finished runs with a postfix of queued / running / ok / unavailable / failed,
    redrawn every ``every_s`` seconds (every minute when stderr is not a terminal, to keep logs short)."""

    def __init__(self, total: int, desc: str, enabled: bool, every_s: float):
        import sys

        self.bar = tqdm(total=total, desc=desc, unit="run", disable=not enabled)
        self.every_s = every_s if sys.stderr.isatty() else max(every_s, 60.0)
        self.last_shown = float("-inf")
        self.outcomes: list[JobOutcome] = []

    def finished(self, outcome: JobOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.status == "failed":
            self.bar.write(f"FAILED {outcome.run.run_id} (job {outcome.job_id}); log: {outcome.log}")
        self.bar.update(1)

    def show(self, queued: int, running: int) -> None:
        counts = {s: sum(o.status == s for o in self.outcomes) for s in ("ok", "unavailable", "failed")}
        self.bar.set_postfix(queued=queued, running=running, **counts, refresh=False)
        if time.monotonic() - self.last_shown >= self.every_s:
            self.bar.refresh()
            self.last_shown = time.monotonic()

    def close(self) -> None:
        self.bar.refresh()
        self.bar.close()


# ---------------------------------------------------------------- local: one run per GPU, or one on the CPU
def local_gpus(gpus: int | None = None) -> list[int]:
    """The GPU ids (as the parent's ``CUDA_VISIBLE_DEVICES`` numbers them) the local launcher uses: the
    first ``gpus`` visible ones (default: all); none on a machine without CUDA."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    if visible is not None and visible.strip():
        try:
            ids = [int(x) for x in visible.split(",")][:count]
        except ValueError:
            raise ValueError(f"CUDA_VISIBLE_DEVICES={visible!r}: the local launcher needs GPU indices "
                             f"(e.g. 0,1), not UUIDs") from None
    else:
        ids = list(range(count))
    if gpus is None:
        return ids
    if gpus < 0 or gpus > len(ids):
        raise ValueError(f"--gpus {gpus}: this machine has {len(ids)} visible CUDA device(s)"
                         + ("" if ids else "; on the CPU leave --gpus out (one run at a time)"))
    return ids[:gpus]


def launch_local(params: Params, runs: list[Run], gpus: int | None = None, folder: str | os.PathLike | None = None,
                 force: bool = False, poll_s: float = 1.0, progress: bool = True) -> LaunchReport:
    """Each run as a separate process (``submitit.LocalExecutor``), at most one per GPU at a time, each
    seeing only its GPU; without GPUs one at a time on the CPU. Waves run one after the other."""
    submitit = _submitit()
    start = time.perf_counter()
    slots: list[int | None] = list(local_gpus(gpus)) or [None]
    # one flat folder per launch (local job ids are process ids; a "%j" folder would leave a stray "%j" behind)
    folder = Path(folder or _jobs_folder(params)) / time.strftime("local-%Y%m%d-%H%M%S")
    executor = submitit.LocalExecutor(folder=folder)
    report = LaunchReport("local", planned=len(runs))
    running: dict = {}
    bar = _Progress(len(runs), f"local ({len(slots)} {'GPU' if slots[0] is not None else 'CPU'} slot"
                                f"{'s' if len(slots) > 1 else ''})", progress, every_s=poll_s)
    try:
        for wave in waves(runs):
            queue, running, free = list(wave), {}, list(slots)
            while queue or running:
                while queue and free:
                    slot = free.pop(0)
                    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=0 if slot is None else 1,
                                               visible_gpus=() if slot is None else (slot,))
                    run = queue.pop(0)
                    running[executor.submit(execute_job, run, params, force)] = (run, slot)
                for job in [j for j in running if j.done()]:
                    run, slot = running.pop(job)
                    free.append(slot)
                    bar.finished(_outcome(run, job))
                bar.show(queued=len(queue), running=len(running))
                if running:
                    time.sleep(poll_s)
    except BaseException:
        for job in running:  # an interrupted launch stops its jobs; their runs stay missing
            job.cancel()
        raise
    finally:
        bar.close()
    report.outcomes, report.wall_time_s = bar.outcomes, time.perf_counter() - start
    return report


# ---------------------------------------------------------------- Slurm: one job array per wave
def parse_minutes(text: str | int) -> int:
    """Minutes from ``90``, ``1:30:00`` (H:MM:SS), ``90:00`` (M:SS) or ``2-00:00:00`` (D-HH:MM:SS)."""
    s = str(text).strip()
    try:
        days, _, clock = s.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:
            minutes = parts[0] + (parts[1] > 0)
        elif len(parts) == 3:
            minutes = parts[0] * 60 + parts[1] + (parts[2] > 0)
        else:
            raise ValueError
        minutes += int(days or 0) * 24 * 60
    except ValueError:
        raise ValueError(f"time {text!r}: expected minutes (90), H:MM:SS (1:30:00) or D-HH:MM:SS") from None
    if minutes <= 0:
        raise ValueError(f"time {text!r}: must be positive")
    return minutes


def slurm_executor(folder: str | os.PathLike, partition: str | None = None, time_min: int = 240, gpus: int = 1,
                   cpus_per_task: int = 8, mem_gb: float = 32, array_parallelism: int = 64,
                   account: str | None = None, qos: str | None = None, name: str = "medvit", cluster: str = "slurm"):
    """A ``submitit.AutoExecutor`` for Slurm with one task per job and these resources per job."""
    import shutil

    if cluster == "slurm" and not (shutil.which("srun") and shutil.which("sbatch")):
        raise FileNotFoundError("no `srun`/`sbatch` on PATH: --launcher slurm runs on a Slurm login node "
                                "(use --launcher local on a workstation)")
    executor = _submitit().AutoExecutor(folder=Path(folder) / "%j", cluster=cluster)
    executor.update_parameters(name=name, timeout_min=int(time_min), gpus_per_node=int(gpus), nodes=1,
                               tasks_per_node=1, cpus_per_task=int(cpus_per_task), mem_gb=mem_gb,
                               slurm_partition=partition, slurm_array_parallelism=int(array_parallelism),
                               slurm_account=account, slurm_qos=qos)
    return executor


def launch_slurm(params: Params, runs: list[Run], executor=None, force: bool = False, poll_s: float = 30.0,
                 progress: bool = True, **resources) -> LaunchReport:
    """Submit ``runs`` as Slurm job arrays (one per wave) and wait, showing queued / running / done /
    failed from the jobs' states. ``resources`` go to :func:`slurm_executor` when no executor is given."""
    start = time.perf_counter()
    if executor is None:
        executor = slurm_executor(_jobs_folder(params), name=f"medvit-{params.profile}", **resources)
    report = LaunchReport("slurm", planned=len(runs))
    bar = _Progress(len(runs), "slurm", progress, every_s=poll_s)
    try:
        for wave in waves(runs):
            with executor.batch():
                submitted = [(executor.submit(execute_job, run, params, force), run) for run in wave]
            bar.bar.write(f"submitted {len(wave)} run(s) as job array {submitted[0][0].job_id.split('_')[0]}; "
                          f"logs in {submitted[0][0].paths.folder.parent}")
            running = dict(submitted)
            while running:
                type(submitted[0][0]).watcher.update()  # one sacct call for all jobs, every poll
                for job in [j for j in running if j.done()]:
                    bar.finished(_outcome(running.pop(job), job))
                states = [j.state for j in running]
                queued = sum(s.split(" ")[0] in SLURM_QUEUED for s in states)
                bar.show(queued=queued, running=len(running) - queued)
                if running:
                    time.sleep(poll_s)
    except KeyboardInterrupt:
        bar.bar.write("interrupted: the submitted jobs keep running on the cluster (squeue --me); their rows "
                      "land in the results folder as they finish. Rerun once they are done.")
        raise
    finally:
        bar.close()
    report.outcomes, report.wall_time_s = bar.outcomes, time.perf_counter() - start
    return report


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError("the local and slurm launchers need submitit: pip install 'medvit[cluster]'") from None
    return submitit


def _jobs_folder(params: Params) -> Path:
    """Where submitit keeps job pickles and logs: ``<results_dir>/<profile>/jobs/`` (Slurm: one folder per job
    id; local: one folder per launch)."""
    return Path(params.results_dir) / params.profile / "jobs"


LAUNCHERS: dict[str, Callable[..., LaunchReport]] = {"local": launch_local, "slurm": launch_slurm}


def launch(params: Params, launcher: str, figures: list[str] | None = None, force: bool = False,
           log=print, **options) -> LaunchReport:
    """Run the grid's pending runs (of ``figures``, default all) with ``launcher`` (``local`` | ``slurm``);
    ``options`` go to :func:`launch_local` (gpus) or :func:`launch_slurm` (partition, time_min, gpus,
    cpus_per_task, mem_gb, array_parallelism, account, qos)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; expected one of {', '.join(LAUNCHERS)}")
    runs = pending_runs(params, figures, force)
    total = len(grid_runs(params, figures))
    log(f"{launcher}: {total} runs in the grid of {', '.join(figures or FIGURES)} (profile {params.profile}), "
        f"{len(runs)} to do; results in {results_store(params).root}", flush=True)
    report = LAUNCHERS[launcher](params, runs, force=force, **options)
    report.planned = total
    return report
