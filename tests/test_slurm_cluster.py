"""The Slurm launcher against a real Slurm cluster: a single node on this machine, brought up by the project's
own ``.ci/slurm-cluster.sh`` (slurmctld, slurmd, slurmdbd with MariaDB, so ``sacct`` reports real states).

One test trains real smoke runs through the scheduler; the others use a stand-in for ``execute_run``
(``sleepy_run``: it waits, then appends its row through the same results store, claimed as ``execute_run``
claims) so that a task can be cancelled, preempted or timed out while it runs. Faults: a task ``scancel``led
mid-run, a task stopped by its time limit, a task preempted by a job of a higher-priority partition
(submitit's checkpoint/requeue) while the next wave waits for it, a failed task whose next wave Slurm cancels,
and the launcher process killed while its tasks run and wait. Each test counts rows present, rows redone,
rows lost.

The tests skip, with the reason, where the cluster cannot run (not root, no apt-get and no Slurm, or the
daemons do not come up). A cluster that was already up is left up; one these tests started is stopped.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medvit.execution import grid_runs
from medvit.runs import Run, RunUnavailable
from medvit.launch import SLURM_QUEUED, launch, launch_params, launch_slurm, sbatch_options
from medvit.results import ResultsStore

# a test's limit includes the cluster's first start (.ci/slurm-cluster.sh up installs Debian's packages)
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "slurm-cluster.sh"
STATE = Path(os.environ.get("MEDVIT_SLURM_DIR", "/var/tmp/medvit-slurm"))
# one CPU, 1 GB, no GPU per task: the node runs as many tasks at once as it has CPUs
CPU_TASK = {"partition": "debug", "gpus": 0, "cpus_per_task": 1, "mem_gb": 1, "time": "30"}
TINY = {"synthetic_shapes": {"size": 32, "num_classes": 3, "n_train": 32, "n_val": 16, "n_test": 16}}
FIG1_R18 = {"fig1_models": ["resnet18"], "fig1_inits": ["random"]}  # fig1's runs: finetune and knn
SLURM_LIVE = (SLURM_QUEUED - {"UNKNOWN"}) | {"RUNNING", "COMPLETING"}  # sacct states of a task not yet ended


@pytest.fixture(scope="session")
def slurm_cluster():
    """``SLURM_CONF`` of the running test cluster (``.ci/slurm-cluster.sh up``), for the whole session. A
    cluster this session started is stopped at its end, unless another test session still uses it."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm cluster needs root (it installs Debian packages and starts daemons)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("no Slurm installed and no apt-get to install it")
    conf = str(STATE / "etc" / "slurm.conf")
    env = {**os.environ, "SLURM_CONF": conf}
    was_up = subprocess.run([SCRIPT, "status"], env=env, capture_output=True).returncode == 0
    if not was_up:
        up = subprocess.run([SCRIPT, "up"], env=env, capture_output=True, text=True, timeout=900)
        if up.returncode != 0:
            pytest.skip(f"the Slurm cluster did not come up: {(up.stderr.strip().splitlines() or ['?'])[-1]}")
    sessions = STATE / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    me = sessions / str(os.getpid())
    me.touch()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", conf)
        yield conf
    me.unlink()
    others = [p for p in sessions.iterdir() if p.name.isdigit() and Path(f"/proc/{p.name}").exists()]
    if not was_up and not others:
        subprocess.run([SCRIPT, "down"], env=env, capture_output=True, timeout=300)


@pytest.fixture
def slurm(slurm_cluster, tmp_path, monkeypatch):
    """The cluster, with the tasks' Python path set (the tasks import medvit and this module, for
    ``sleepy_run``). Afterwards the test's own jobs (its job arrays, and the ids in ``<tmp_path>/jobs.txt``)
    get a minute to end, then are cancelled; other sessions' jobs on the cluster are left alone."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "tests")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield slurm_cluster
    extra = tmp_path / "jobs.txt"
    ours = {p.name for p in tmp_path.glob("smoke/jobs/*") if p.name.isdigit()}
    ours |= set(extra.read_text().split()) if extra.exists() else set()

    def queued() -> set[str]:  # a launch returns once each task's result is written; its process may still run
        out = subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True).stdout
        return set(out.split()) & ours

    deadline = time.monotonic() + 60
    while queued() and time.monotonic() < deadline:
        time.sleep(1)
    if queued():
        subprocess.run(["scancel", *queued()], capture_output=True)


def sleepy_run(run: Run, params, device, seconds: dict[str, float] | float = 10.0,
               status: dict[str, str] | None = None) -> dict:
    """A stand-in for the run's experiment (``execute_run`` writes its row): notes its start in
    ``<results_dir>/starts.log`` (one line per attempt: run_id and Slurm task), waits ``seconds`` (per run_id,
    or for all), then ends ``ok``, or as ``status[run_id]`` says: ``unavailable`` (RunUnavailable), ``failed``
    (it raises)."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    task = f"{array}_{index}" if array else os.environ.get("SLURM_JOB_ID")  # a wave of one run is a plain job
    with open(Path(params.results_dir) / "starts.log", "a") as f:
        f.write(f"{run.run_id} {task}\n")
    time.sleep(seconds[run.run_id] if isinstance(seconds, dict) else seconds)
    outcome = (status or {}).get(run.run_id, "ok")
    if outcome == "unavailable":
        raise RunUnavailable(f"the stand-in says {outcome}")
    if outcome == "failed":
        raise RuntimeError(f"{run.run_id}: the stand-in failed on purpose")
    return {"metric": "accuracy", "value": 1.0, "task": task}


def _starts(params) -> dict[str, list[str]]:
    """run_id -> the Slurm tasks that started it, in order."""
    path = Path(params.results_dir) / "starts.log"
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        run_id, task = line.split()
        out.setdefault(run_id, []).append(task)
    return out


def _rows(params) -> dict[str, list[dict]]:
    """run_id -> every row of the run (history), from the results store."""
    df = ResultsStore(Path(params.results_dir) / params.profile).rows(history=True)
    return {} if df.empty else {k: g.to_dict("records") for k, g in df.groupby("run_id")}


def _tally(fault: str, params, runs: list[Run], not_to_redo: set[str]) -> str:
    """One line for the record (shown with ``pytest -rP``): rows present, runs redone, runs lost."""
    starts, rows = _starts(params), _rows(params)
    redone = sum(len(starts.get(r, [])) > 1 for r in not_to_redo)
    lost = sum(r.run_id not in rows for r in runs)
    line = f"{fault}: {len(runs)} runs, rows present {sum(len(v) for v in rows.values())}, redone {redone}, lost {lost}"
    print(line)
    return line


def _row_files(params) -> dict[str, int]:
    root = Path(params.results_dir) / params.profile
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("rows/*/*.json")}


def _wait_for(what: str, predicate, timeout: float = 300.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _sacct(job: str, duplicates: bool = False) -> list[tuple[str, str]]:
    """(JobID, State) of ``job``'s tasks from Slurm's accounting (``-D``: also the records of requeued attempts)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job] + (["-D"] if duplicates else []),
                         capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def _ended(job: str, duplicates: bool = False) -> list[tuple[str, str]]:
    """``_sacct(job, duplicates)`` once no task of ``job`` is queued or running any more (a launch returns when
    each task's result is written; the task's process may still be ending)."""
    def ended():
        rows = _sacct(job, duplicates)
        latest = rows[-1:] if duplicates else rows  # with -D, one task's attempts in order
        if not rows:  # a pending array task cancelled before it started leaves no record: out of squeue is enough
            queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", job], capture_output=True, text=True)
            return [(job, "NO RECORD")] if not queue.stdout.strip() else None
        return rows if not any(state.split()[0] in SLURM_LIVE for _, state in latest) else None

    return _wait_for(f"job {job} to end", ended, timeout=120)


def _arrays(lines: list[str]) -> list[str]:
    """The job array ids a launch reported submitting (its ``submitted N run(s) as job array <id>`` lines)."""
    return [line.split("as job array ")[1].split(",")[0].split(";")[0] for line in lines
            if line.startswith("submitted ")]


def _quiet(*args, **kwargs):
    pass


def _in_background(target) -> threading.Thread:
    """Run ``target`` in a thread; its exception is kept on ``thread.error`` for the test to raise."""
    def run():
        try:
            target()
        except BaseException as err:  # noqa: BLE001  handed to the test
            thread.error = err

    thread = threading.Thread(target=run, daemon=True)
    thread.error = None
    thread.start()
    return thread


# ---------------------------------------------------------------- the smoke runs, really trained, through the scheduler
def test_smoke_runs_train_as_one_job_array_and_a_second_launch_submits_nothing(slurm, tmp_path):
    params = launch_params("smoke", tmp_path, slurm=CPU_TASK, train={"epochs": 1}, dataset_options=TINY, knn_k=5,
                           **FIG1_R18)
    runs = grid_runs(params, ["fig1"])
    lines: list[str] = []
    report = launch(params, "slurm", figures=["fig1"], poll_s=1, progress=False,
                    log=lambda text, **_: lines.append(text))

    assert report.submitted == runs and report.failed == []
    assert [o.status for o in report.outcomes] == ["ok"] * len(runs)
    arrays = {o.job_id.split("_")[0] for o in report.outcomes}
    assert len(arrays) == 1, "every run is one task of one job array"
    [array] = arrays
    assert sorted(o.job_id for o in report.outcomes) == [f"{array}_{i}" for i in range(len(runs))]
    assert dict(_ended(array)) == {f"{array}_{i}": "COMPLETED" for i in range(len(runs))}  # the scheduler's word
    # the counts came from sacct while the tasks ran: some moment had tasks running, the last one all ok
    assert any(running > 0 for _, _, running, *_ in report.timeline), report.timeline
    assert report.timeline[-1][1:] == (0, 0, len(runs), 0, 0)
    assert any(f"as job array {array}" in line for line in lines)
    # the submitted script carries the profile's resources (the same as --dry-run shows)
    script = (tmp_path / "smoke" / "jobs" / array / f"{array}_submission.sh").read_text()
    for option in sbatch_options(params, len(runs)):
        assert f"#SBATCH {option}\n" in script, option

    rows = _rows(params)
    assert sorted(rows) == sorted(r.run_id for r in runs)
    assert all(len(v) == 1 and v[0]["status"] == "ok" for v in rows.values()), "exactly one ok row per run"
    assert {v[0]["host"] for v in rows.values()} == {os.uname().nodename}
    assert rows[runs[0].run_id][0]["epochs"] == 1  # a real fine-tuning row (training loop, test metrics)

    before = _row_files(params)
    again = launch(params, "slurm", figures=["fig1"], poll_s=1, progress=False, log=_quiet)
    assert again.submitted == [] and again.outcomes == []
    assert _row_files(params) == before
    print(report.summary(), f"(wall {report.wall_time_s:.0f} s)\n{again.summary()}")


# ---------------------------------------------------------------- faults
def test_tasks_cancelled_mid_run_or_while_queued_leave_no_row_and_only_they_are_submitted_again(slurm, tmp_path):
    params = launch_params("smoke", tmp_path, slurm={**CPU_TASK, "array_parallelism": 2}, fig1_models=["resnet18"],
                           fig1_inits=["random", "imagenet"])
    victim, other, queued, last = grid_runs(params, ["fig1"])  # 4 tasks, two at a time
    execute = functools.partial(sleepy_run, seconds={victim.run_id: 60, other.run_id: 5, last.run_id: 2})
    lines: list[str] = []

    def cancel():
        array = _wait_for("the submission", lambda: _arrays(lines))[0]  # its tasks are the runs in grid order
        subprocess.run(["scancel", f"{array}_2"], check=True)  # `queued`, still queued: two tasks hold the CPUs
        _wait_for("the victim to start", lambda: victim.run_id in _starts(params))
        subprocess.run(["scancel", f"{array}_0"], check=True)  # `victim`, mid-run

    canceller = _in_background(cancel)
    report = launch(params, "slurm", figures=["fig1"], poll_s=1, progress=False, execute=execute,
                    log=lambda text, **_: lines.append(text))
    canceller.join()
    assert canceller.error is None, canceller.error

    outcome = {o.run: o for o in report.outcomes}
    assert outcome[other].status == outcome[last].status == "ok"
    failure = outcome[victim]
    assert failure.status == "failed" and failure.state.startswith("CANCELLED")
    assert "CANCELLED" in failure.error_line and Path(failure.log).is_file()
    assert f"log: {failure.log}" in report.summary() and failure.error_line in report.summary()
    never = outcome[queued]  # Slurm's accounting may keep no record of an array task cancelled before it started
    assert never.status == "failed" and never.error_line.startswith("not started: task ") and never.log == "", never
    assert queued.run_id not in _starts(params)
    assert set(_rows(params)) == {other.run_id, last.run_id}, "the cancelled runs left no row"

    before = _row_files(params)
    rerun = launch(params, "slurm", figures=["fig1"], poll_s=1, progress=False, log=_quiet,
                   execute=functools.partial(sleepy_run, seconds=1))
    assert rerun.submitted == [victim, queued] and [o.status for o in rerun.outcomes] == ["ok", "ok"]
    rows = _rows(params)
    assert {k: len(v) for k, v in rows.items()} == {r.run_id: 1 for r in (victim, other, queued, last)}  # lost 0
    assert {k: v for k, v in _row_files(params).items() if k in before} == before  # redone 0
    assert len(_starts(params)[other.run_id]) == len(_starts(params)[last.run_id]) == 1
    print(report.summary())
    _tally("scancel mid-run and while queued", params, [victim, other, queued, last], {other.run_id, last.run_id})


def test_a_task_at_its_time_limit_fails_with_the_limit_named_and_is_submitted_again(slurm, tmp_path):
    # 2 minutes, and submitit's signal 20 s before the end (Slurm sends it up to a minute early)
    params = launch_params("smoke", tmp_path, slurm={**CPU_TASK, "time": "2"}, **FIG1_R18)
    slow, quick = grid_runs(params, ["fig1"])
    execute = functools.partial(sleepy_run, seconds={slow.run_id: 600, quick.run_id: 2})
    report = launch(params, "slurm", figures=["fig1"], poll_s=2, progress=False, log=_quiet, execute=execute,
                    signal_delay_s=20)

    outcome = {o.run: o for o in report.outcomes}
    assert outcome[quick].status == "ok"
    failure = outcome[slow]
    assert failure.status == "failed", failure
    assert failure.error_line.startswith("TimeoutError:") and "slurm.time='2'" in failure.error_line, failure.error
    assert Path(failure.log).is_file() and "this job is timed-out" in Path(failure.log).read_text()
    rows = _rows(params)  # execute_run wrote the stopped run's failed row, as for a real run
    assert set(rows) == {quick.run_id, slow.run_id} and [r["status"] for r in rows[slow.run_id]] == ["failed"]

    longer = launch_params("smoke", tmp_path, slurm=CPU_TASK, **FIG1_R18)
    rerun = launch(longer, "slurm", figures=["fig1"], poll_s=1, progress=False, log=_quiet,
                   execute=functools.partial(sleepy_run, seconds=1))
    assert rerun.submitted == [slow] and [o.status for o in rerun.outcomes] == ["ok"]
    assert {k: [r["status"] for r in v] for k, v in _rows(params).items()} == {slow.run_id: ["failed", "ok"],
                                                                              quick.run_id: ["ok"]}
    assert len(_starts(params)[quick.run_id]) == 1
    print(report.summary())
    _tally("time limit", params, [slow, quick], {quick.run_id})


def test_a_preempted_task_is_requeued_and_restarts_its_run_without_a_partial_row_and_the_next_wave_waits(
        slurm, tmp_path):
    # one task at a time: the first run ends, then the second is preempted mid-run by a job of the `urgent`
    # partition (higher PriorityTier) that needs the whole node; a third run, in the next wave, reads the first
    # run's checkpoint: a requeue is not a failure, so its array waits for the requeued task and then starts
    params = launch_params("smoke", tmp_path, slurm={**CPU_TASK, "array_parallelism": 1}, **FIG1_R18)
    first, victim = grid_runs(params, ["fig1"])
    reader = Run("attention_finetuned", first.dataset, first.model, first.init, 0)
    execute = functools.partial(sleepy_run, seconds={first.run_id: 1, victim.run_id: 25, reader.run_id: 1})
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    preemptor: list[str] = []

    def preempt_the_second_run_mid_run():
        _wait_for("the second run to start", lambda: first.run_id in _rows(params) and victim.run_id in _starts(params))
        out = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-J", "preemptor", "-c", str(cpus),
                              "--mem=100M", "-o", "/dev/null", "--wrap", "sleep 3"],
                             capture_output=True, text=True, check=True)
        preemptor.append(out.stdout.strip())
        (tmp_path / "jobs.txt").write_text(preemptor[0])  # for the fixture's clean-up

    thread = _in_background(preempt_the_second_run_mid_run)
    report = launch_slurm(params, [first, victim, reader], poll_s=1, progress=False, log=_quiet, execute=execute)
    thread.join()
    assert thread.error is None, thread.error

    outcome = {o.run: o for o in report.outcomes}
    assert [outcome[r].status for r in (first, victim, reader)] == ["ok", "ok", "ok"], report.summary()
    starts = _starts(params)
    task = starts[victim.run_id][0]
    assert starts == {first.run_id: [starts[first.run_id][0]], victim.run_id: [task, task],
                      reader.run_id: [outcome[reader].job_id]}, \
        "the second run restarted once, in the same (requeued) array task; the first was not redone"
    history = [state for _, state in _ended(task, duplicates=True)]
    assert history[0] in ("PREEMPTED", "REQUEUED") and history[-1] == "COMPLETED", history
    assert _ended(preemptor[0]) == [(preemptor[0], "COMPLETED")]
    log = Path(outcome[victim].log).read_text()
    # submitit's handler got the preemption signal and requeued the task itself (scontrol requeue)
    assert "this job is preempted" in log and "DUE TO JOB REQUEUE" in log, log
    rows = _rows(params)
    assert {k: len(v) for k, v in rows.items()} == {first.run_id: 1, victim.run_id: 1, reader.run_id: 1}, \
        "no partial row"
    assert all(v[0]["status"] == "ok" for v in rows.values())
    assert rows[first.run_id][0]["task"] == starts[first.run_id][0]
    # the next wave started only once the requeued task had ended
    assert rows[reader.run_id][0]["created_at"] > rows[victim.run_id][0]["created_at"]
    assert _ended(outcome[reader].job_id) == [(outcome[reader].job_id, "COMPLETED")]
    _tally("preemption", params, [first, victim, reader], {first.run_id})


def test_a_failed_task_leaves_the_next_wave_not_started_and_an_unavailable_run_does_not(slurm, tmp_path):
    params = launch_params("smoke", tmp_path, slurm=CPU_TASK)
    finetunes = [Run("finetune", "synthetic_shapes", "resnet18", init, 0) for init in ("random", "imagenet")]
    readers = [Run("attention_finetuned", "synthetic_shapes", "resnet18", init, 0) for init in ("random", "imagenet")]
    runs = finetunes + readers  # two waves: the readers read the fine-tuned checkpoints
    broken, missing = finetunes
    lines: list[str] = []
    report = launch_slurm(params, runs, poll_s=1, progress=False, log=lambda text, **_: lines.append(text),
                          execute=functools.partial(sleepy_run, seconds=1,
                                                    status={broken.run_id: "failed", missing.run_id: "unavailable"}))
    first, second = _arrays(lines)

    outcome = {o.run: o for o in report.outcomes}
    assert outcome[broken].status == "failed" and "the stand-in failed on purpose" in outcome[broken].error_line
    assert outcome[missing].status == "unavailable"
    for reader in readers:  # Slurm cancelled the waiting array when a task of the one it waits for failed
        never = outcome[reader]
        assert never.status == "failed" and never.state.startswith("CANCELLED") and never.log == "", never
        assert never.error_line == (f"not started: Slurm cancelled it because run {broken.run_id} of the job array "
                                    f"it waits for ({first}) failed (its dependency afterok:{first} can never be "
                                    f"satisfied)")
        assert f"FAILED {reader.run_id} (job {never.job_id}, Slurm state CANCELLED): not started" in report.summary()
    assert set(_starts(params)) == {broken.run_id, missing.run_id}, "no reader started"
    assert {state for _, state in _ended(second)} == {"CANCELLED"}
    print(report.summary())

    # the same runs again (an unavailable run with --retry-unavailable): the failed one now ends well and the other
    # is unavailable again, which is no failure: the readers start once both have ended
    again = launch_slurm(params, runs, poll_s=1, progress=False, log=_quiet,
                         execute=functools.partial(sleepy_run, seconds=1, status={missing.run_id: "unavailable"}))
    assert {o.run: o.status for o in again.outcomes} == {broken: "ok", missing: "unavailable", readers[0]: "ok",
                                                         readers[1]: "ok"}, again.summary()
    rows = _rows(params)
    assert all(len(rows[r.run_id]) == 1 for r in readers)
    wave_one_ended = max(row["created_at"] for r in finetunes for row in rows[r.run_id])
    assert all(rows[r.run_id][0]["created_at"] > wave_one_ended for r in readers)
    _tally("failed wave", params, runs, set())


def test_a_killed_launcher_is_rerun_and_the_runs_its_tasks_hold_or_have_done_are_not_redone(slurm, tmp_path):
    # 4 runs, one task at a time: the first run takes a minute and a half, the others a few seconds
    overrides = {"slurm": {**CPU_TASK, "array_parallelism": 1}, **FIG1_R18, "fig1_inits": ["random", "imagenet"]}
    params = launch_params("smoke", tmp_path, **overrides)
    runs = grid_runs(params, ["fig1"])
    seconds = {r.run_id: 90 if r == runs[0] else 3 for r in runs}
    script = tmp_path / "launcher.py"
    script.write_text(
        "import functools, test_slurm_cluster as t\n"
        "from medvit.launch import launch, launch_params\n"
        f"params = launch_params('smoke', {str(tmp_path)!r}, **{overrides!r})\n"
        "launch(params, 'slurm', figures=['fig1'], poll_s=1, progress=False,\n"
        f"       execute=functools.partial(t.sleepy_run, seconds={seconds!r}))\n")
    launcher = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
    try:  # the whole launcher process is killed once its first task runs; the three others wait in the queue
        _wait_for("the first run to start", lambda: runs[0].run_id in _starts(params))
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    [earlier] = _arrays(launcher.stdout.read().splitlines())
    lost = runs[-1]
    subprocess.run(["scancel", f"{earlier}_3"], check=True)  # one queued task is lost meanwhile
    _ended(f"{earlier}_3")

    lines: list[str] = []
    rerun = launch(params, "slurm", figures=["fig1"], poll_s=1, progress=False,
                   log=lambda text, **_: lines.append(text), execute=functools.partial(sleepy_run, seconds=seconds))
    assert rerun.submitted == runs, "nothing had ended: every run is submitted again"
    assert [o.status for o in rerun.outcomes if o.run == runs[0]] == ["ok"]
    assert all(o.status == "ok" for o in rerun.outcomes) and len(rerun.outcomes) == len(runs), rerun.summary()
    # the new task of the first run found it claimed by the earlier task, returned at once, and the launch
    # counted the run once that task had written its row
    assert any(line.startswith(f"{runs[0].run_id}: the run was being done by another process") for line in lines)
    assert {k: len(v) for k, v in _rows(params).items()} == {r.run_id: 1 for r in runs}  # present 4, lost 0
    assert {k: len(v) for k, v in _starts(params).items()} == {r.run_id: 1 for r in runs}  # redone 0
    assert _starts(params)[runs[0].run_id] == [f"{earlier}_0"]
    assert _starts(params)[lost.run_id][0].split("_")[0] != earlier
    print(rerun.summary())
    _tally("launcher killed", params, runs, {r.run_id for r in runs})
