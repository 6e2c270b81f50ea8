"""Launching the grid as separate jobs (medvit.launch): the deduplicated grid, what is pending, the waves, the
Slurm submission (a fake sbatch/sacct on PATH: submitit's real code path without a cluster; the real cluster is
tests/test_slurm_cluster.py) with its job arrays chained by dependencies, the dry run, the errors, a run claimed
by another live process, and local jobs run by submitit's LocalExecutor as separate processes, with a job killed
mid-way and a rerun that submits only it."""
from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from medvit.cli import main
from types import SimpleNamespace

from medvit import load_params
from medvit.execution import grid_runs
from medvit.experiments import settings_hash, waves
from medvit.figures import FIGURES
from medvit.runs import Run
from medvit.launch import (SlurmTask, error_line, execute_job, launch, launch_local, launch_params, launch_slurm,
                           local_gpus, parse_minutes, pending_runs, run_states, sbatch_options, slurm_executor,
                           task_python)
from medvit.results import ResultsStore

TINY = {"synthetic_shapes": {"size": 32, "num_classes": 3, "n_train": 32, "n_val": 16, "n_test": 16}}


def _row(run: Run, status: str, profile: str = "smoke") -> dict:
    """A row of ``run`` made with the profile's settings (its settings_hash: the settings the run reads)."""
    return {"experiment": run.experiment, "dataset": run.dataset, "model": run.model, "init": run.init,
            "repetition": run.repetition, "profile": profile, "status": status, "reason": f"because {status}",
            "metric": "accuracy", "value": 0.5, "settings_hash": settings_hash(load_params(profile), run)}


def test_grid_runs_lists_each_run_once_over_every_registered_figure(tmp_path, monkeypatch):
    params = launch_params("smoke", tmp_path)
    monkeypatch.setitem(FIGURES, "figtest", SimpleNamespace(
        plan=lambda p: [Run("knn", "synthetic_shapes", "resnet18", "random", 7)]))
    per_figure = {f: FIGURES[f].plan(params) for f in FIGURES}
    runs = grid_runs(params)
    assert [r.run_id for r in runs] == list(dict.fromkeys(r.run_id for f in FIGURES for r in per_figure[f]))
    assert len(runs) < sum(len(v) for v in per_figure.values())  # fig1 and fig3 share fine-tuning runs
    assert Run("knn", "synthetic_shapes", "resnet18", "random", 7) in runs  # a figure registered later is included
    assert grid_runs(params, ["fig3"]) == per_figure["fig3"]
    with pytest.raises(ValueError, match="fig9"):
        grid_runs(params, ["fig9"])


def test_launch_params_resolve_a_relative_results_dir_against_the_current_directory_as_reproduce_does(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert launch_params("smoke", "results").results_dir == str(tmp_path / "results")
    assert launch_params("smoke", tmp_path / "elsewhere").results_dir == str(tmp_path / "elsewhere")


def test_pending_runs_are_the_runs_without_an_ok_row(tmp_path):
    params = launch_params("smoke", tmp_path, fig1_inits=["random"])
    runs = grid_runs(params, ["fig1"])
    store = ResultsStore(tmp_path / "smoke")
    store.append(_row(runs[0], "failed"))
    store.append(_row(runs[0], "ok"))  # an ok row: done
    store.append(_row(runs[1], "unavailable"))
    store.append(_row(runs[2], "failed"))  # only failures: pending again
    store.append(_row(runs[3], "ok"))
    store.append(_row(runs[3], "failed"))  # a later failure (another process's try) does not hide the ok row
    states = run_states(params, runs)
    assert [states[r.run_id][0] for r in runs] == ["ok", "unavailable", "failed", "ok"]
    assert states[runs[1].run_id][1] == "because unavailable"
    # an unavailable run is not submitted again unless asked: a job that finds its weights still missing costs
    # a slot in the queue
    assert pending_runs(params, ["fig1"]) == runs[2:3]
    assert pending_runs(params, ["fig1"], retry_unavailable=True) == runs[1:3]
    assert pending_runs(params, ["fig1"], force=True) == runs
    # a row made with other settings does not count: the run is pending again
    changed = launch_params("smoke", tmp_path, fig1_inits=["random"], train={"epochs": 3})
    assert run_states(changed, runs)[runs[0].run_id][0] == "missing"
    assert [r.experiment for r in runs] == ["finetune", "finetune", "knn", "knn"]
    assert pending_runs(changed, ["fig1"]) == runs[:3]  # train.epochs: both fine-tunings; the knn run that failed


def test_runs_reading_finetuned_checkpoints_wait_for_a_second_wave():
    ft = Run("finetune", "d", "deit_tiny", "random", 0)
    att = Run("attention", "d", "deit_tiny", "random", 0)
    att_ft = Run("attention_finetuned", "d", "deit_tiny", "random", 0)
    assert waves([att_ft, ft, att]) == [[ft, att], [att_ft]]
    assert waves([att_ft, att]) == [[att_ft, att]]  # nothing to wait for: the fine-tuning is done already
    assert waves([]) == []


@pytest.mark.parametrize("text, minutes", [("90", 90), (45, 45), ("1:30:00", 90), ("90:00", 90), ("90:30", 91),
                                           ("2-00:00:00", 2880), ("0:00:30", 1)])
def test_parse_minutes_reads_the_slurm_time_formats(text, minutes):
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize("text", ["4h", "", "1:2:3:4", "0"])
def test_parse_minutes_rejects_other_text_naming_it(text):
    with pytest.raises(ValueError, match="time"):
        parse_minutes(text)


def test_local_gpus_follow_the_parents_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    assert local_gpus() == [2, 3, 5, 7] and local_gpus(2) == [2, 3]
    with pytest.raises(ValueError, match="--gpus 5: this machine has 4"):
        local_gpus(5)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local_gpus() == [0, 1, 2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f3a,GPU-12bc")
    with pytest.raises(ValueError, match="UUIDs"):
        local_gpus()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpus() == []
    with pytest.raises(ValueError, match="on the CPU leave --gpus out"):
        local_gpus(1)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that keeps each script it is given as ``submitted-<id>.sh`` and answers job ids 4242, 4243, ...;
    ``sacct`` that answers ``<tmp_path>/sacct.txt`` (by default: every task of job array 4242 FAILED on node n1)."""
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"sbatch": f'#!/bin/sh\nid=$(cat "{tmp_path}/next_id" 2>/dev/null || echo 4242)\n'
                         f'echo $((id + 1)) > "{tmp_path}/next_id"\ncp "$1" "{tmp_path}/submitted-$id.sh"\n'
                         f'echo "Submitted batch job $id"\n',
               "sacct": f'#!/bin/sh\necho "JobID|State|NodeList"\ncat "{tmp_path}/sacct.txt"\n',
               "srun": "#!/bin/sh\nexit 1\n"}  # submitit looks for srun to tell it is on a Slurm cluster
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    (tmp_path / "sacct.txt").write_text("4242_0|FAILED|n1\n4242_1|FAILED|n1\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submitit.SlurmJob, "_results_timeout_s", 0)  # no result pickle will ever come
    return tmp_path


SLURM = {"partition": "gpu", "time": "1:30:00", "gpus": 1, "cpus_per_task": 4, "mem_gb": 16, "array_parallelism": 1}


def test_slurm_launch_submits_one_job_array_with_the_profiles_resources_and_reports_failed_jobs(fake_slurm):
    params = launch_params("smoke", fake_slurm / "results", slurm=SLURM, fig1_inits=["random"],
                           fig1_models=["resnet18"])
    runs = grid_runs(params, ["fig1"])
    report = launch_slurm(params, runs, poll_s=0.01, progress=False, log=lambda *a, **k: None)

    sbatch = (fake_slurm / "submitted-4242.sh").read_text()
    for flag in ("--array=0-1%1", "--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=4",
                 "--mem=16GB", "--job-name=medvit-smoke", "--nodes=1", "--ntasks-per-node=1", "--signal=USR2@90"):
        assert f"#SBATCH {flag}\n" in sbatch, flag
    for option in sbatch_options(params, len(runs)):  # what --dry-run prints is what is submitted
        assert f"#SBATCH {option}\n" in sbatch, option
    assert "--dependency" not in sbatch  # the first array waits for nothing
    assert "trap \"\" USR2; exec" in sbatch  # the task's Python starts with USR2 ignored (task_python)
    assert report.submitted == runs and len(report.failed) == 2
    failure = report.failed[0]
    jobs = fake_slurm / "results" / "smoke" / "jobs"
    assert failure.job_id == "4242_0" and failure.log == str(jobs / "4242_0" / "4242_0_0_log.err")
    assert failure.state == "FAILED" and failure.error_line == "the task ended without a result (Slurm state FAILED)"
    summary = report.summary()
    assert "0 ok, 0 unavailable, 2 failed" in summary
    assert f"FAILED {runs[0].run_id} (job 4242_0, Slurm state FAILED): the task ended" in summary
    assert f"    log: {failure.log}" in summary
    assert "only the runs that are not done are submitted" in summary
    assert not (jobs / "inflight").exists()  # no bookkeeping besides the store: a relaunch asks the store


def test_every_wave_is_submitted_at_once_and_a_failed_wave_leaves_the_next_reported_as_not_started(fake_slurm):
    params = launch_params("smoke", fake_slurm / "results", slurm=SLURM)
    finetunes = [Run("finetune", "synthetic_shapes", "resnet18", init, 0) for init in ("random", "imagenet")]
    readers = [Run("attention_finetuned", "synthetic_shapes", "resnet18", init, 0) for init in ("random", "imagenet")]
    assert waves(finetunes + readers) == [finetunes, readers]  # the readers read the fine-tuned checkpoints
    # what Slurm's accounting says: a task of the first array failed, so Slurm cancelled the second array before
    # any of its tasks started (kill-on-invalid-dep; sacct shows the pending array as one record)
    (fake_slurm / "sacct.txt").write_text("4242_0|FAILED|n1\n4242_1|COMPLETED|n1\n4243_[0-1%1]|CANCELLED|None assigned\n")
    lines = []
    report = launch_slurm(params, finetunes + readers, poll_s=0.01, progress=False,
                          log=lambda text, **_: lines.append(text))

    first, second = ((fake_slurm / f"submitted-{i}.sh").read_text() for i in (4242, 4243))
    assert "--dependency" not in first and "--kill-on-invalid-dep" not in first
    assert "#SBATCH --dependency=afterok:4242\n" in second and "#SBATCH --kill-on-invalid-dep=yes\n" in second
    for option in sbatch_options(params, 2, after="4242"):  # what --dry-run prints is what is submitted
        assert f"#SBATCH {option}\n" in second, option
    assert lines[0].startswith("submitted 2 run(s) as job array 4242;")
    assert lines[1].startswith("submitted 2 run(s) as job array 4243, to start once array 4242 has ended well;")
    assert report.submitted == finetunes + readers
    outcome = {o.run: o for o in report.outcomes}
    assert [outcome[r].status for r in finetunes + readers] == ["failed"] * 4
    for reader in readers:
        assert outcome[reader].error_line == (
            f"not started: Slurm cancelled it because run {finetunes[0].run_id} of the job array it waits for "
            f"(4242) failed (its dependency afterok:4242 can never be satisfied)")
        assert outcome[reader].log == "" and outcome[reader].state == "CANCELLED"
    summary = report.summary()
    assert f"FAILED {readers[0].run_id} (job 4243_0, Slurm state CANCELLED): not started" in summary
    assert summary.count("    log: ") == 2  # the tasks that never started have no log


def test_slurm_launcher_off_a_cluster_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Slurm login node"):
        slurm_executor(launch_params("smoke", tmp_path))


def test_dry_run_prints_the_sbatch_options_and_the_tasks_and_submits_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun: a dry run needs neither
    params = launch_params("smoke", tmp_path, slurm={"partition": "debug", "time": "45", "gpus": 0, "mem_gb": 2.5,
                                                     "account": "lab", "array_parallelism": 4})
    lines = []
    report = launch(params, "slurm", dry_run=True, log=lambda text, **_: lines.append(text))
    text = "\n".join(lines)
    runs = pending_runs(params)
    first, second, third = waves(runs)  # smoke: the in-domain pretraining, fine-tuning and k-NN, Fig 5's fine-tuned
    assert report.dry_run and report.submitted == runs and report.outcomes == []
    options = ("--job-name=medvit-smoke --partition=debug --time=45 --nodes=1 --ntasks-per-node=1 --cpus-per-task=8 "
               "--mem=2560MB --account=lab --signal=USR2@90")
    assert f"  sbatch {options} --array=0-{len(first) - 1}%{min(4, len(first))}\n" in text
    assert "--gpus-per-node" not in text and "--qos" not in text
    # every array is submitted at once; each after the first waits for the one before it to end well
    assert f"job array 2: {len(second)} task(s), submitted with the others; starts once every task of array 1 " \
           f"has ended well" in text
    assert (f"  sbatch {options} --dependency=afterok:<id of array 1> --kill-on-invalid-dep=yes "
            f"--array=0-{len(second) - 1}%{min(4, len(second))}\n") in text
    assert f"job array 3: {len(third)} task(s), submitted with the others; starts once every task of array 2" in text
    assert "--dependency=afterok:<id of array 2>" in text
    for t, run in enumerate(first):
        assert f"  task {t:>3}: {run.run_id}" in text
    assert not (tmp_path / "smoke").exists()
    assert "dry run" in report.summary()


def test_the_launchers_without_submitit_are_one_line_naming_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "submitit", None)
    params = launch_params("smoke", tmp_path)
    for launcher in ("slurm", "local"):
        with pytest.raises(ImportError) as err:
            launch(params, launcher, log=lambda *a, **k: None)
        assert str(err.value) == "the local and slurm launchers need submitit: pip install 'medvit[cluster]'"
    assert not (tmp_path / "smoke").exists()


def test_error_line_is_the_exception_of_the_last_traceback_or_slurms_own_message():
    raised = ("Job (task=0) failed during processing with trace:\n----------------------\n"
              "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n    g()\n"
              "submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out too many times.\n\n"
              "The above exception was the direct cause of the following exception:\n\n"
              "Traceback (most recent call last):\n  File \"b.py\", line 2, in h\n"
              "TimeoutError: run reached the Slurm time limit\n   second line of the message\n------\n")
    assert error_line(raised) == "TimeoutError: run reached the Slurm time limit"
    slurm = "slurmstepd-vm: error: *** JOB 12 ON vm CANCELLED AT 2026-01-01T00:00:00 ***"
    killed = ("Job 12_0 (task: 0) with path /r/12_0_0_result.pkl\nhas not produced any output (state: CANCELLED by 0)"
              f"\nError stream produced:\n----\n{slurm}")
    assert error_line(killed, "CANCELLED by 0") == slurm
    silent = "Job 12_0 (task: 0) with path /r/x.pkl\nhas not produced any output (state: FAILED)\nNo output"
    assert error_line(silent, "FAILED") == "the task ended without a result (Slurm state FAILED)"
    assert error_line("", "") == "no error text (state unknown)"


def test_a_tasks_python_ignores_usr2_until_submitit_installs_its_handler():
    import signal
    import subprocess
    import sys

    command = task_python(sys.executable) + " -c 'import signal; print(int(signal.getsignal(signal.SIGUSR2)))'"
    out = subprocess.run(command, shell=True, capture_output=True, text=True, check=True).stdout
    assert int(out) == int(signal.SIG_IGN)


def test_slurm_task_turns_submitits_timeout_into_an_error_naming_the_limit_and_is_checkpointable(tmp_path):
    from submitit.core.utils import UncompletedJobError

    params = launch_params("smoke", tmp_path, slurm={"time": "2:00:00"})
    run = Run("knn", "synthetic_shapes", "resnet18", "random", 0)

    def at_the_limit(run, params, device):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    task = SlurmTask(at_the_limit)
    with pytest.raises(TimeoutError, match=r"reached the Slurm time limit \(slurm.time='2:00:00'\)"):
        task(run, params)
    again = task.checkpoint(run, params, False)  # submitit requeues a preempted task with these arguments
    assert again.function is task and again.args == (run, params, False)


def test_a_job_whose_run_another_live_process_holds_returns_at_once_without_doing_it(tmp_path):
    params = launch_params("smoke", tmp_path)
    run = Run("knn", "synthetic_shapes", "resnet18", "random", 0)
    store = ResultsStore(tmp_path / "smoke")
    done = []

    def stand_in(run, params, device):
        done.append(run)
        return {"metric": "accuracy", "value": 1.0}

    with store.claims.claim(run.run_id) as claim:  # e.g. the task of an earlier launch, still running
        assert claim is not None
        for execute in (None, stand_in):  # execute_run, and the stand-in the Slurm tests use
            result = execute_job(run, params, execute=execute)
            assert result["status"] == "claimed" and result["holder"]["pid"] == os.getpid(), result
    assert done == [] and store.rows(history=True, run_ids=[run.run_id]).empty
    assert execute_job(run, params, execute=stand_in)["status"] == "ok" and done == [run]  # free: done once
    assert execute_job(run, params, execute=stand_in)["skipped"] and done == [run]  # done: returns at once


def test_cli_rejects_a_bad_slurm_time_before_submitting_anything(capsys, tmp_path):
    assert main(["reproduce", "--profile", "smoke", "--launcher", "slurm", "--slurm-time", "4h",
                 "--results-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "time" in err and "'4h'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "smoke").exists()


def test_cli_list_runs_shows_each_runs_state_and_reason(capsys, tmp_path):
    params = launch_params("smoke", tmp_path, fig1_inits=["random"])
    runs = grid_runs(params, ["fig1"])
    ResultsStore(tmp_path / "smoke").append(_row(runs[0], "ok"))
    ResultsStore(tmp_path / "smoke").append(_row(runs[1], "unavailable"))
    assert main(["list", "runs", "--profile", "smoke", "--results-dir", str(tmp_path), "--figure", "fig1",
                 "--verbose"]) == 0
    out = capsys.readouterr().out
    assert f"done         {runs[0].run_id}" in out
    assert f"unavailable  {runs[1].run_id}  (because unavailable)" in out
    assert "fig3:" not in out


def _row_files(root) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_text()) for p in root.glob("rows/*/*.json")}


@pytest.mark.slow
def test_local_jobs_run_as_separate_processes_and_a_rerun_submits_only_the_killed_run(tmp_path):
    import submitit

    params = launch_params("smoke", tmp_path, fig1_inits=["random"], fig1_models=["resnet18"], train={"epochs": 1},
                           dataset_options=TINY, knn_k=5)
    finetune, knn = grid_runs(params, ["fig1"])
    store = ResultsStore(tmp_path / "smoke")

    first = launch_local(params, [knn], poll_s=0.2, progress=False)
    assert [(o.run, o.status) for o in first.outcomes] == [(knn, "ok")]

    # the fine-tuning job is killed mid-way: cancelled once its training has started (a long variant of it)
    long = launch_params("smoke", tmp_path, fig1_inits=["random"], fig1_models=["resnet18"], train={"epochs": 500},
                         dataset_options=TINY)
    executor = submitit.LocalExecutor(folder=tmp_path / "killed")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(execute_job, finetune, long)
    deadline = time.monotonic() + 180
    while "epoch 1/" not in (job.stderr() or "") and time.monotonic() < deadline and not job.done():
        time.sleep(0.2)
    assert "epoch 1/" in (job.stderr() or ""), "the job should have started training"
    job.cancel()
    while not job.done():
        time.sleep(0.2)
    assert set(store.rows()["run_id"]) == {knn.run_id}, "a killed run leaves no row"
    assert pending_runs(params, ["fig1"]) == [finetune]

    before = _row_files(store.root)
    rerun = launch(params, "local", figures=["fig1"], poll_s=0.2, progress=False, log=lambda *a, **k: None)
    assert rerun.submitted == [finetune] and rerun.failed == [] and rerun.planned == 2
    after = _row_files(store.root)
    assert {k: v for k, v in after.items() if k in before} == before, "the done run's row is untouched"
    rows = store.rows(history=True)
    assert sorted(rows["run_id"]) == sorted([finetune.run_id, knn.run_id])  # exactly one row per run
    assert (rows["status"] == "ok").all() and (rows["epochs"].dropna() == 1).all()
    pids = {int(p.stem.split("-")[1]) for p in store.root.glob("rows/*/*.json")}
    assert os.getpid() not in pids and len(pids) == 2, "each run was its own process"
    assert pending_runs(params, ["fig1"]) == []


@pytest.mark.slow
def test_a_relaunch_while_earlier_tasks_hold_runs_does_not_redo_them_and_counts_their_rows(tmp_path, capsys):
    params = launch_params("smoke", tmp_path, fig1_inits=["random"], fig1_models=["resnet18"])
    finished, failing = grid_runs(params, ["fig1"])
    store = ResultsStore(tmp_path / "smoke")
    claims = [store.claims.try_claim(run.run_id) for run in (finished, failing)]  # an earlier launch's live tasks

    def the_earlier_tasks_end():  # once both jobs of this launch have found their run claimed and returned
        deadline = time.monotonic() + 300
        while len(list(tmp_path.glob("smoke/jobs/local-*/*_result.pkl"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        store.append(_row(finished, "ok"))
        store.append(_row(failing, "failed"))
        for claim in claims:
            claim.release()

    thread = threading.Thread(target=the_earlier_tasks_end, daemon=True)
    thread.start()
    report = launch_local(params, [finished, failing], poll_s=0.2, progress=False)
    thread.join()

    outcome = {o.run: o for o in report.outcomes}
    assert outcome[finished].status == "ok"
    assert outcome[failing].status == "failed" and outcome[failing].error_line == (
        f"the run was being done by another process (host {os.uname().nodename}, pid {os.getpid()}), which ended "
        f"with a failed row: because failed")
    out = capsys.readouterr().out
    assert f"{finished.run_id}: the run was being done by another process" in out and "waiting for its row" in out
    rows = store.rows(history=True)
    assert sorted(rows["run_id"]) == sorted([finished.run_id, failing.run_id]), "neither run was done again"


@pytest.mark.slow
def test_local_launch_reports_a_failed_job_with_its_log_and_unavailable_weights_are_not_failures(tmp_path):
    params = launch_params("smoke", tmp_path, dataset_options=TINY, knn_k=5)
    broken = Run("no_such_experiment", "synthetic_shapes", "resnet18", "random", 0)
    unavailable = Run("knn", "synthetic_shapes", "resnet18", "imagenet", 0)  # no weights offline
    report = launch_local(params, [broken, unavailable], poll_s=0.2, progress=False)
    assert {o.run: o.status for o in report.outcomes} == {broken: "failed", unavailable: "unavailable"}
    [failure] = report.failed
    assert "unknown experiment 'no_such_experiment'" in failure.error
    assert failure.log.endswith("_log.err") and os.path.isfile(failure.log)
    states = run_states(params, [broken, unavailable])
    assert states[broken.run_id][0] == "failed" and states[unavailable.run_id][0] == "unavailable"
