"""Launching the grid as separate jobs (medvit.launch): the deduplicated grid, what is pending, the waves, the
Slurm submission (a fake sbatch/sacct on PATH: submitit's real code path without a cluster), and local jobs run
by submitit's LocalExecutor as separate processes, with a job killed mid-way and a rerun that submits only it."""
from __future__ import annotations

import os
import stat
import time

import pytest

from medvit.cli import main
from types import SimpleNamespace

from medvit.experiments import FIGURES, plan
from medvit.runs import Run
from medvit.launch import (execute_job, grid_runs, launch, launch_local, launch_params, launch_slurm, local_gpus,
                           parse_minutes, pending_runs, run_states, slurm_executor, waves)
from medvit.results import ResultsStore

TINY = {"synthetic_shapes": {"size": 32, "num_classes": 3, "n_train": 32, "n_val": 16, "n_test": 16}}


def _row(run: Run, status: str, profile: str = "smoke") -> dict:
    return {"experiment": run.experiment, "dataset": run.dataset, "model": run.model, "init": run.init,
            "repetition": run.repetition, "profile": profile, "status": status, "reason": f"because {status}",
            "metric": "accuracy", "value": 0.5}


def test_grid_runs_lists_each_run_once_over_every_registered_figure(tmp_path, monkeypatch):
    params = launch_params("smoke", tmp_path)
    monkeypatch.setitem(FIGURES, "figtest", SimpleNamespace(
        plan=lambda p: [Run("knn", "synthetic_shapes", "resnet18", "random", 7)]))
    per_figure = {f: plan(params, f) for f in FIGURES}
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
    assert pending_runs(params, ["fig1"]) == runs[1:3]
    assert pending_runs(params, ["fig1"], force=True) == runs


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
    """``sbatch`` that keeps the script it is given and answers job 4242; ``sacct`` that says every task FAILED."""
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"sbatch": f'#!/bin/sh\ncp "$1" "{tmp_path}/submitted.sh"\necho "Submitted batch job 4242"\n',
               "sacct": "#!/bin/sh\nprintf 'JobID|State|NodeList\\n4242_0|FAILED|n1\\n4242_1|FAILED|n1\\n'\n",
               "srun": "#!/bin/sh\nexit 1\n"}  # submitit looks for srun to tell it is on a Slurm cluster
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submitit.SlurmJob, "_results_timeout_s", 0)  # no result pickle will ever come
    return tmp_path


def test_slurm_launch_submits_one_job_array_with_the_resources_and_reports_failed_jobs_with_their_logs(fake_slurm):
    params = launch_params("smoke", fake_slurm / "results", fig1_inits=["random"], fig1_models=["resnet18"])
    runs = grid_runs(params, ["fig1"])
    executor = slurm_executor(fake_slurm / "jobs", partition="gpu", time_min=90, gpus=1, cpus_per_task=4, mem_gb=16,
                              array_parallelism=1, name="medvit-smoke")
    report = launch_slurm(params, runs, executor=executor, poll_s=0.01, progress=False)

    sbatch = (fake_slurm / "submitted.sh").read_text()
    for flag in ("--array=0-1%1", "--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=4",
                 "--mem=16GB", "--job-name=medvit-smoke", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {flag}\n" in sbatch, flag
    assert report.submitted == runs and len(report.failed) == 2
    failure = report.failed[0]
    assert failure.job_id == "4242_0" and failure.log == str(fake_slurm / "jobs" / "4242_0" / "4242_0_0_log.err")
    assert "state: FAILED" in failure.error
    summary = report.summary()
    assert "0 ok, 0 unavailable, 2 failed" in summary and f"log: {failure.log}" in summary
    assert "only the runs that are not done are submitted" in summary


def test_slurm_launcher_off_a_cluster_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Slurm login node"):
        slurm_executor(tmp_path / "jobs")


def test_cli_rejects_a_bad_slurm_time_before_submitting_anything(capsys, tmp_path):
    assert main(["reproduce", "--profile", "smoke", "--launcher", "slurm", "--slurm-time", "4h",
                 "--results-dir", str(tmp_path)]) == 1
    assert "time '4h'" in capsys.readouterr().err
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
def test_local_launch_reports_a_failed_job_with_its_log_and_unavailable_weights_are_not_failures(tmp_path):
    params = launch_params("smoke", tmp_path, dataset_options=TINY, knn_k=5)
    broken = Run("no_such_experiment", "synthetic_shapes", "resnet18", "random", 0)
    unavailable = Run("knn", "synthetic_shapes", "resnet18", "imagenet", 0)  # no weights offline
    report = launch_local(params, [broken, unavailable], poll_s=0.2, progress=False)
    assert {o.run: o.status for o in report.outcomes} == {broken: "failed", unavailable: "unavailable"}
    [failure] = report.failed
    assert "KeyError" in failure.error and "no_such_experiment" in failure.error
    assert failure.log.endswith("_log.err") and os.path.isfile(failure.log)
    states = run_states(params, [broken, unavailable])
    assert states[broken.run_id][0] == "failed" and states[unavailable.run_id][0] == "unavailable"
