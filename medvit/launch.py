"""Run the paper's grid beyond one process: every missing run as its own job, on local GPUs or on Slurm.

The grid is every figure's runs (``medvit.figures.FIGURES``, each figure's ``plan``), each
run once even when several figures need it (Fig 1 and Fig 3 share fine-tuning runs). A run is an
independent, idempotent job identified by its settings (experiment, dataset, model, init, repetition
and the profile, whose results folder holds it): the job calls ``execute_run``, which claims the run in the
results store and appends one row to ``<results_dir>/<profile>/`` atomically when the run ends. The store is
the truth: a launch submits the runs whose current row is not ``ok``, jobs may run anywhere that sees the
results folder, a killed job leaves its run missing (no partial row) for the next launch, and a job whose run
is already done, or being done by another live process (its claim), returns at once.

Both launchers go through submitit (``pip install "medvit[cluster]"``):

- ``launch_local``: ``submitit.LocalExecutor``, each run a separate process, at most one run per GPU
  at a time (``CUDA_VISIBLE_DEVICES`` set to that GPU); without GPUs, one run at a time on the CPU.
- ``launch_slurm``: ``submitit.SlurmExecutor``, one job array per wave (``executor.batch()``), one task
  per run, with the resources of the profile's ``slurm`` section (``Params.slurm``). Every wave is submitted
  at once; each array after the first waits for the one before it (``--dependency=afterok:<array>``), and
  Slurm cancels it when a task of that array fails (``--kill-on-invalid-dep=yes``). The launch then waits,
  showing queued / running / ok / unavailable / failed from Slurm's accounting (``sacct``). A preempted task
  is requeued by submitit's checkpoint/requeue and restarts its run; a task at its time limit fails. A launch
  that was killed leaves its tasks running; the same command, run again, submits every run that is still not
  done, and the claims keep two tasks from doing one run.

Runs that read another experiment's outputs (``Experiment.needs``) go in a later wave than the runs they
read. Unavailable pretrained weights or data give ``unavailable`` rows (the task still ends well, so later
waves start), never failures; a job that raises (``failed`` row) or dies is a failure, reported with its log
file and the first line of its error.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from .execution import current_rows, execute_run, grid_runs, results_store
from .experiments import waves
from .figures import FIGURES
from .layout import Layout, resolve_results_dir
from .params import Params, load_params, resolve_profile
from .runs import Run

LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's LocalExecutor kills a job after timeout_min (default 2 min)
# Slurm job states (sacct) of a task that has not started, or waits to start again.
SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED",
                "PREEMPTED", "UNKNOWN"}
# Seconds before the time limit at which Slurm sends the task submitit's signal (USR2; submitit's default).
SIGNAL_DELAY_S = 90
# Seconds a task shown as queued may be missing from squeue before it counts as cancelled before it started.
VANISHED_S = 20.0


def launch_params(profile: str, results_dir: str | os.PathLike | None = None, **overrides) -> Params:
    """The profile's Params with ``results_dir`` made absolute as ``medvit reproduce`` does (relative
    to the current directory), so jobs, notebooks and ``medvit list runs`` share one results folder."""
    params = load_params(resolve_profile(profile), **overrides)
    return dataclasses.replace(params, results_dir=str(resolve_results_dir(results_dir or params.results_dir)))


def run_states(params: Params, runs: list[Run]) -> dict[str, tuple[str, str]]:
    """``run_id -> (state, reason)``: the status of the row that counts under the current settings
    (``experiments.current_rows``: the newest ``ok`` row, else the newest row; ok | unavailable | failed),
    else ``missing`` (no row, or only rows made with other settings)."""
    rows, _ = current_rows(params, runs, results_store(params))
    newest = {} if rows.empty else {
        r["run_id"]: (r["status"], r["reason"] if isinstance(r.get("reason"), str) else "")
        for r in rows.to_dict("records")}
    return {r.run_id: newest.get(r.run_id, ("missing", "")) for r in runs}


def pending_runs(params: Params, figures: list[str] | None = None, force: bool = False,
                 retry_unavailable: bool = False) -> list[Run]:
    """The grid's runs to submit: missing (or made with other settings) and failed ones; those that were
    ``unavailable`` under the current settings (weights or data not on the machine) only with
    ``retry_unavailable``, since a job that finds them still missing costs a slot in the queue; every
    run with ``force``."""
    runs = grid_runs(params, figures)
    return runs if force else _to_submit(runs, run_states(params, runs), retry_unavailable)


def _to_submit(runs: list[Run], states: dict, retry_unavailable: bool) -> list[Run]:
    skip = {"ok"} if retry_unavailable else {"ok", "unavailable"}
    return [r for r in runs if states[r.run_id][0] not in skip]


def execute_job(run: Run, params: Params, force: bool = False, execute: Callable | None = None) -> dict:
    """What one job does: ``execute_run`` (``execute``: a stand-in for the run's experiment, in tests), which
    claims the run and does nothing when it is already done under the current settings or another live process
    holds it, and a short summary back to the launcher (status ``claimed`` with the ``holder`` in the second
    case). A failing run raises (its ``failed`` row is written first)."""
    row = execute_run(run, params, results_store(params), force=force, execute=execute)
    if row.get("skipped") == "claimed":  # another live process is doing it: this job has nothing to do
        return {"run_id": run.run_id, "status": "claimed", "holder": row["holder"]}
    return {"run_id": run.run_id, "status": row["status"], "value": row.get("value"),
            "wall_time_s": row.get("wall_time_s"), "reason": row.get("reason", ""),
            "skipped": row.get("skipped") == "done"}


@dataclass
class JobOutcome:
    run: Run
    job_id: str
    status: str  # ok | unavailable | failed (claimed: another process is doing the run, until it ends)
    error: str = ""  # the job's exception, or what the scheduler said
    log: str = ""  # the job's stderr file ("" for a task that never started)
    state: str = ""  # the scheduler's final state (Slurm: COMPLETED, FAILED, CANCELLED, TIMEOUT, ...)

    @property
    def error_line(self) -> str:
        return error_line(self.error, self.state)

    def describe(self) -> str:
        """``FAILED <run> (job <id>, <state>): <first line of the error>`` and the log file on a second line."""
        state = f", Slurm state {self.state}" if self.state and self.state not in ("FINISHED", "DONE") else ""
        log = f"\n    log: {self.log}" if self.log else ""
        return f"FAILED {self.run.run_id} (job {self.job_id}{state}): {self.error_line}{log}"


def error_line(error: str, state: str = "") -> str:
    """The first line of a failed job's error: the exception line of its (last) Python traceback when the
    run raised; Slurm's own message (``*** JOB 12 ON node CANCELLED AT ... ***``) when the task was killed;
    else the first line of the error text."""
    lines = [line.rstrip() for line in error.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        for line in lines[starts[-1] + 1:]:
            if not line.startswith((" ", "\t")):
                return line.strip()
    slurm = [line.strip() for line in lines if "*** JOB" in line or "*** STEP" in line]
    if slurm:
        return slurm[-1]
    if state and "has not produced any output" in error:
        return f"the task ended without a result (Slurm state {state})"
    return lines[0] if lines else f"no error text (state {state or 'unknown'})"


@dataclass
class LaunchReport:
    """What a launch did: the runs it submitted and each one's outcome."""

    launcher: str
    planned: int  # runs in the grid
    submitted: list[Run] = field(default_factory=list)
    outcomes: list[JobOutcome] = field(default_factory=list)
    wall_time_s: float = 0.0
    # Slurm: (seconds since the start, queued, running, ok, unavailable, failed) each time the counts changed
    timeline: list[tuple[float, int, int, int, int, int]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        if self.dry_run:
            return f"{self.launcher}: dry run, {len(self.submitted)} of {self.planned} runs would be submitted"
        counts = {s: sum(o.status == s for o in self.outcomes) for s in ("ok", "unavailable", "failed")}
        lines = [f"{self.launcher}: {self.planned} runs in the grid, {len(self.submitted)} submitted "
                 f"({self.planned - len(self.submitted)} already done) in {self.wall_time_s:.0f} s: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items())]
        lines += [o.describe() for o in self.failed]
        if self.failed:
            lines.append("rerun the same command after fixing: only the runs that are not done are submitted")
        return "\n".join(lines)


def _outcome(run: Run, job) -> JobOutcome:
    """A finished job's outcome: the run's status from the job's result (``claimed``: another live process is
    doing the run), or ``failed`` with its error; with the scheduler's state once final (a task's result is
    written while its process still runs)."""
    error = job.exception()
    state = _state(job)
    if state.split(" ")[0] in SLURM_QUEUED | {"RUNNING", "COMPLETING"}:
        state = ""
    if error is not None:
        return JobOutcome(run, str(job.job_id), "failed", error=str(error), log=str(job.paths.stderr), state=state)
    result = job.result()
    holder = result.get("holder") or {}  # a claimed run: who was doing it
    who = f" (host {holder.get('host')}, pid {holder.get('pid')})" if holder.get("host") else ""
    error = f"the run was being done by another process{who}" if result["status"] == "claimed" else ""
    return JobOutcome(run, str(job.job_id), result["status"], error=error, log=str(job.paths.stderr), state=state)


def _state(job) -> str:
    """The job's last known scheduler state, without asking the scheduler again (Slurm: from the last sacct)."""
    watcher = getattr(type(job), "watcher", None)
    if watcher is not None and hasattr(watcher, "get_state") and type(job).__name__ == "SlurmJob":
        return watcher.get_state(str(job.job_id), mode="cache")
    return str(getattr(job, "state", ""))


class _Progress:
    """The outcomes of a launch, and a tqdm bar over them with a postfix of queued / running / ok / unavailable
    / failed, redrawn every ``every_s`` seconds (every minute when stderr is not a terminal, to keep logs short).
    Without the bar (``enabled=False``), event lines (submissions, failures) go to ``log``.

    A job whose run another live process was doing (``claimed``) has not finished that run: the run stays
    ``elsewhere`` (shown as running) until the holder lets its claim go, and then counts with the status of its
    row in the store (:meth:`settle`)."""

    def __init__(self, params: Params, total: int, desc: str, enabled: bool, every_s: float, log: Callable = print):
        self.params, self.enabled, self.log = params, enabled, log
        self.bar = tqdm(total=total, desc=desc, unit="run", disable=not enabled)
        self.every_s = every_s if sys.stderr.isatty() else max(every_s, 60.0)
        self.last_shown = float("-inf")
        self.outcomes: list[JobOutcome] = []
        self.elsewhere: dict[Run, JobOutcome] = {}
        self.start = time.monotonic()
        self.timeline: list[tuple[float, int, int, int, int, int]] = []

    def write(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text)
        else:
            self.log(text, flush=True)

    def finished(self, outcome: JobOutcome) -> None:
        if outcome.status == "claimed":
            self.elsewhere[outcome.run] = outcome
            self.write(f"{outcome.run.run_id}: {outcome.error}; waiting for its row")
            return
        self.outcomes.append(outcome)
        if outcome.status == "failed":
            self.write(outcome.describe())
        self.bar.update(1)

    def settle(self) -> None:
        """Count the runs done elsewhere whose holder has let its claim go, with their rows' status."""
        store = results_store(self.params)
        released = [run for run in self.elsewhere if store.claims.holder(run.run_id) is None]
        if not released:
            return
        states = run_states(self.params, released)
        for run in released:
            outcome, (state, reason) = self.elsewhere.pop(run), states[run.run_id]
            if state in ("ok", "unavailable"):
                outcome.status, outcome.error = state, ""
            else:
                outcome.status, outcome.log, outcome.state = "failed", "", ""
                outcome.error = f"{outcome.error}, which ended " + (
                    f"with a failed row: {reason}" if state == "failed" else "without a row (killed?)")
            self.finished(outcome)

    def show(self, queued: int, running: int) -> None:
        running += len(self.elsewhere)
        counts = {s: sum(o.status == s for o in self.outcomes) for s in ("ok", "unavailable", "failed")}
        now = (queued, running, *counts.values())
        if not self.timeline or self.timeline[-1][1:] != now:
            self.timeline.append((round(time.monotonic() - self.start, 1), *now))
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
    folder = Path(folder or Layout.of(params).jobs) / time.strftime("local-%Y%m%d-%H%M%S")
    executor = submitit.LocalExecutor(folder=folder)
    report = LaunchReport("local", planned=len(runs))
    running: dict = {}
    bar = _Progress(params, len(runs), f"local ({len(slots)} {'GPU' if slots[0] is not None else 'CPU'} slot"
                                        f"{'s' if len(slots) > 1 else ''})", progress, every_s=poll_s)
    try:
        for wave in waves(runs):  # a wave ends once its runs done elsewhere have ended too
            queue, running, free = list(wave), {}, list(slots)
            while queue or running or bar.elsewhere:
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
                bar.settle()
                bar.show(queued=len(queue), running=len(running))
                if running or bar.elsewhere:
                    time.sleep(poll_s)
    except BaseException:
        for job in running:  # an interrupted launch stops its jobs; their runs stay missing
            job.cancel()
        raise
    finally:
        bar.close()
    report.submitted, report.outcomes, report.wall_time_s = list(runs), bar.outcomes, time.perf_counter() - start
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


def _mem(mem_gb: float) -> str:
    """sbatch's ``--mem`` as submitit writes it: whole GB as ``32GB``, else MB."""
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def sbatch_options(params: Params, tasks: int | None = None, signal_delay_s: int = SIGNAL_DELAY_S,
                   after: str | None = None) -> list[str]:
    """The sbatch options of one run's task, from the profile's ``slurm`` resources (``Params.slurm``), as
    ``--name=value`` (what the job array's script says in its ``#SBATCH`` lines); ``--array`` for ``tasks``;
    with ``after`` (a job array's id), the array waits for that one to end well (:func:`_after`)."""
    s = params.slurm
    options = {"job-name": f"medvit-{params.profile}", "partition": s.partition, "time": parse_minutes(s.time),
               "nodes": 1, "ntasks-per-node": 1, "cpus-per-task": s.cpus_per_task, "gpus-per-node": s.gpus or None,
               "mem": _mem(s.mem_gb), "account": s.account, "qos": s.qos, "signal": f"USR2@{signal_delay_s}",
               **(_after(after) if after else {})}
    if tasks:
        options["array"] = f"0-{tasks - 1}%{min(tasks, s.array_parallelism)}"
    return [f"--{k}={v}" for k, v in options.items() if v is not None]


def _after(array: str) -> dict[str, str]:
    """The sbatch options of a job array that waits for job array ``array``: it starts once every task of
    ``array`` has ended with exit code 0 (``afterok``; a run that is unavailable ends well), and Slurm cancels
    it, instead of leaving it pending for ever, when one of them did not (``kill-on-invalid-dep``)."""
    return {"dependency": f"afterok:{array}", "kill-on-invalid-dep": "yes"}


def slurm_executor(params: Params, folder: str | os.PathLike | None = None, signal_delay_s: int = SIGNAL_DELAY_S):
    """A ``submitit.SlurmExecutor`` with one task per job and the profile's resources (``Params.slurm``);
    job folders ``<folder>/<job id>/`` (default ``<results_dir>/<profile>/jobs/``). A task is never requeued
    after its time limit (``max_num_timeout=0``: the same run would hit the same limit); preempted tasks are."""
    submitit = _submitit()
    if not (shutil.which("srun") and shutil.which("sbatch")):
        raise FileNotFoundError("no `srun`/`sbatch` on PATH: --launcher slurm runs on a Slurm login node "
                                "(use --launcher local on a workstation)")
    s = params.slurm
    executor = submitit.SlurmExecutor(folder=Path(folder or Layout.of(params).jobs) / "%j", max_num_timeout=0,
                                      python=task_python())
    executor.update_parameters(job_name=f"medvit-{params.profile}", partition=s.partition,
                               time=parse_minutes(s.time), nodes=1, ntasks_per_node=1, cpus_per_task=s.cpus_per_task,
                               gpus_per_node=s.gpus or None, mem=_mem(s.mem_gb), array_parallelism=s.array_parallelism,
                               account=s.account, qos=s.qos, signal_delay_s=signal_delay_s)
    return executor


def task_python(python: str = sys.executable) -> str:
    """The command that starts a task's Python, with ``USR2`` ignored until submitit installs its handler.
    A task's first seconds (importing torch, unpickling the run) are otherwise unprotected: Slurm's preemption
    or time-limit signal (``USR2``) would kill the process there instead of reaching submitit's handler (an
    ignored signal stays ignored across ``exec``; Slurm then requeues or ends the task itself)."""
    script = 'trap "" USR2; exec "$0" "$@"'
    return f"/bin/sh -c {shlex.quote(script)} {shlex.quote(python)}"


class SlurmTask:
    """What one array task runs: :func:`execute_job` for its run. It is checkpointable in submitit's sense
    (a ``checkpoint`` method): when Slurm preempts the task, submitit's handler (on ``USR2``) calls
    ``checkpoint``, requeues the task with the same arguments and exits; the requeued task starts the run
    again from its beginning. Rows are written only when a run ends, so the stopped attempt leaves no row,
    and a task whose run has an ``ok`` row by then returns at once. At the time limit submitit does not
    requeue (``max_num_timeout=0``) and the run fails with a ``TimeoutError`` naming the limit."""

    def __init__(self, execute: Callable | None = None):
        self.execute = execute  # None: the run's experiment (tests give a faster stand-in)

    def __call__(self, run: Run, params: Params, force: bool = False) -> dict:
        try:
            return execute_job(run, params, force, self.execute)
        except Exception as err:
            if type(err).__name__ == "UncompletedJobError" and "timed-out" in str(err):
                raise TimeoutError(f"{run.run_id} reached the Slurm time limit (slurm.time={params.slurm.time!r}) "
                                   f"before it ended: raise slurm.time (--slurm-time); the next launch submits it "
                                   f"again") from err
            raise

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def dry_run_text(params: Params, runs: list[Run], signal_delay_s: int = SIGNAL_DELAY_S) -> str:
    """What ``launch_slurm`` would submit: the sbatch options of each job array and its tasks' runs."""
    lines = [f"slurm dry run: {len(runs)} run(s) to submit (profile {params.profile}); nothing is submitted",
             f"job folders: {Layout.of(params).jobs}/<array id>_<task>/ (logs: <array id>_<task>_0_log.err / .out)"]
    for i, wave in enumerate(waves(runs)):
        after = f"<id of array {i}>" if i else None
        lines.append(f"job array {i + 1}: {len(wave)} task(s)" + (
            f", submitted with the others; starts once every task of array {i} has ended well (its runs read "
            f"that array's outputs)" if i else ""))
        lines.append("  sbatch " + " ".join(sbatch_options(params, len(wave), signal_delay_s, after)))
        lines += [f"  task {t:>3}: {run.run_id}" for t, run in enumerate(wave)]
    return "\n".join(lines)


def _in_queue(job_ids: list[str]) -> set[str]:
    """The ids among ``job_ids`` (``<array id>_<task>``) that Slurm's queue (``squeue``) still holds: the
    second source for tasks that accounting does not know (not yet recorded, cancelled before they started,
    or a cluster without ``sacct``)."""
    arrays = sorted({str(j).split("_")[0] for j in job_ids})
    found: set[str] = set()
    if not shutil.which("squeue"):
        return found
    for array in arrays:  # one by one: squeue fails for a whole list when one id has left its memory
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", array], capture_output=True, text=True)
        if out.returncode == 0:
            found |= set(out.stdout.split())
        elif "Invalid job id" not in out.stderr:  # the controller did not answer: assume nothing left the queue
            found |= {str(j) for j in job_ids if str(j).split("_")[0] == array}
    return found & {str(j) for j in job_ids}


def _vanished(run: Run, job) -> JobOutcome:
    """The outcome of a task that started, then left the queue without a result while Slurm's accounting still
    shows it queued (e.g. requeued, then cancelled)."""
    stderr = job.stderr() or ""
    error = (f"task {job.job_id} left the queue without a result, and Slurm's accounting (sacct) has no final "
             f"state for it (cancelled while requeued?)" + (f"\n{stderr}" if stderr.strip() else ""))
    return JobOutcome(run, str(job.job_id), "failed", error=error, log=str(job.paths.stderr), state="UNKNOWN")


def _started(job) -> bool:
    """Whether a task ever started: it left a result or a log, or Slurm's accounting names its node."""
    node = job.watcher.get_info(str(job.job_id), mode="cache").get("NodeList", "")
    return job.paths.result_pickle.exists() or job.paths.stderr.exists() or node not in ("", "None assigned")


def _not_started(run: Run, job, array: str | None, blocker: JobOutcome | None) -> JobOutcome:
    """The outcome of a task that ended without ever starting: Slurm cancelled it because a task of the job
    array it waits for (``array``) failed (``blocker``, the first such task's outcome), or it was cancelled
    while queued."""
    state = _state(job) or "UNKNOWN"
    if blocker is not None:
        error = (f"not started: Slurm cancelled it because run {blocker.run.run_id} of the job array it waits for "
                 f"({array}) failed (its dependency afterok:{array} can never be satisfied)")
    else:
        error = f"not started: task {job.job_id} left the queue before it started (cancelled while queued?)"
    return JobOutcome(run, str(job.job_id), "failed", error=error, state=state)


def launch_slurm(params: Params, runs: list[Run], executor=None, force: bool = False, poll_s: float = 30.0,
                 progress: bool = True, dry_run: bool = False, execute: Callable | None = None,
                 signal_delay_s: int = SIGNAL_DELAY_S, log: Callable = print) -> LaunchReport:
    """Submit ``runs`` as Slurm job arrays, one per wave (resources from ``params.slurm``), all at once, each
    array after the first waiting for the one before it (:func:`_after`); then wait, showing queued / running
    / done / failed from Slurm's accounting. ``dry_run``: print the sbatch options and the tasks, submit
    nothing. ``execute`` stands in for the runs' experiments in the tasks (tests).

    Slurm knows only this launch's arrays: when an earlier launch's task still holds a run (this launch's task
    for it returns at once), this launch's next array may start before that run has ended; a run there that
    reads it finds no checkpoint and is ``unavailable``, and the earlier launch's own next array, which waits
    for that task, does it again."""
    start = time.perf_counter()
    report = LaunchReport("slurm", planned=len(runs), dry_run=dry_run)
    if dry_run:
        log(dry_run_text(params, runs, signal_delay_s), flush=True)
        report.submitted = list(runs)
        return report
    if executor is None:
        executor = slurm_executor(params, signal_delay_s=signal_delay_s)
    bar = _Progress(params, len(runs), "slurm", progress, every_s=poll_s, log=log)
    watcher = _submitit().SlurmJob.watcher
    by_wave = waves(runs)
    live: dict = {}  # submitted job -> (its run, its wave), until the job has ended
    arrays: list[str] = []  # each wave's job array id
    try:
        for i, wave in enumerate(by_wave):
            executor.update_parameters(additional_parameters=_after(arrays[-1]) if arrays else None)
            with executor.batch():
                jobs = [executor.submit(SlurmTask(execute), run, params, force) for run in wave]
            arrays.append(str(jobs[0].job_id).split("_")[0])
            live.update({job: (run, i) for job, run in zip(jobs, wave)})
            report.submitted += wave
            bar.write(f"submitted {len(wave)} run(s) as job array {arrays[-1]}"
                      + (f", to start once array {arrays[-2]} has ended well" if i else "")
                      + f"; logs in {jobs[0].paths.folder.parent}")
        # A task that accounting shows as queued (or not at all) but that the queue no longer holds was
        # cancelled before it started: sacct keeps no record of such array tasks (its last word stays
        # PENDING). Such a task counts as ended once it has been out of squeue for VANISHED_S.
        absent_since: dict = {}
        while live or bar.elsewhere:
            watcher.update()  # one sacct call for all tasks, every poll
            waiting = [j for j in live if _state(j).split(" ")[0] in SLURM_QUEUED
                       and not j.paths.result_pickle.exists()]
            queued_ids = _in_queue([str(j.job_id) for j in waiting]) if waiting else set()
            absent_since = {j: absent_since.get(j, time.monotonic()) for j in waiting
                            if str(j.job_id) not in queued_ids}
            vanished = {j for j, t in absent_since.items() if time.monotonic() - t >= VANISHED_S}
            for job in [j for j in live if j.done() or j in vanished]:
                run, i = live[job]
                if _started(job):
                    bar.finished(_outcome(run, job) if job.done() else _vanished(run, job))
                elif i and any(w == i - 1 for _, w in live.values()):
                    continue  # it never started: why is known once the array it waits for has ended
                else:
                    blocker = next((o for o in bar.outcomes if o.status == "failed" and o.run in by_wave[i - 1]),
                                   None) if i else None
                    bar.finished(_not_started(run, job, arrays[i - 1] if i else None, blocker))
                del live[job]
            bar.settle()
            queued = sum(_state(j).split(" ")[0] in SLURM_QUEUED for j in live)
            bar.show(queued=queued, running=len(live) - queued)
            if live or bar.elsewhere:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        bar.write("interrupted: the submitted tasks keep running on the cluster (squeue --me); their rows land "
                  "in the results folder as they finish. Run the same command again: it submits the runs that "
                  "are not done, and a task whose run is done or being done by an earlier task returns at once.")
        raise
    finally:
        bar.close()
    report.outcomes, report.timeline = bar.outcomes, bar.timeline
    report.wall_time_s = time.perf_counter() - start
    return report


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError("the local and slurm launchers need submitit: pip install 'medvit[cluster]'") from None
    return submitit


LAUNCHERS: dict[str, Callable[..., LaunchReport]] = {"local": launch_local, "slurm": launch_slurm}


def launch(params: Params, launcher: str, figures: list[str] | None = None, force: bool = False,
           retry_unavailable: bool = False, log=print, **options) -> LaunchReport:
    """Run the grid's pending runs (of ``figures``, default all) with ``launcher`` (``local`` | ``slurm``);
    ``options`` go to :func:`launch_local` (gpus, poll_s, progress) or :func:`launch_slurm` (dry_run, poll_s,
    progress, executor, execute, signal_delay_s). Slurm resources come from ``params.slurm``
    (``launch_params(profile, slurm={"partition": "gpu"})`` overrides the profile's)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; expected one of {', '.join(LAUNCHERS)}")
    if not options.get("dry_run"):
        _submitit()  # one clear line before anything else when the extra is missing
    grid = grid_runs(params, figures)
    states = {} if force else run_states(params, grid)  # one read of the store for both uses below
    runs = grid if force else _to_submit(grid, states, retry_unavailable)
    log(f"{launcher}: {len(grid)} runs in the grid of {', '.join(figures or FIGURES)} (profile {params.profile}), "
        f"{len(runs)} to do; results in {results_store(params).root}", flush=True)
    unavailable = [] if retry_unavailable else [r for r in grid if states.get(r.run_id, ("",))[0] == "unavailable"]
    if unavailable:
        run, why = unavailable[0], states[unavailable[0].run_id][1]
        log(f"{launcher}: {len(unavailable)} runs were unavailable here when last tried (e.g. {run.run_id}: "
            f"{why.splitlines()[0][:120]}); not submitted again: --retry-unavailable submits them once their "
            f"weights or data are in place", flush=True)
    if launcher == "slurm":
        options["log"] = log
    report = LAUNCHERS[launcher](params, runs, force=force, **options)
    report.planned = len(grid)
    return report
