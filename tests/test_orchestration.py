"""The bookkeeping around the executors, tested with a fake figure whose runs take milliseconds."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medvit import TrainConfig, create_dataset, finetune, load_params
from medvit.data import DataMissing
from medvit.experiments import EXPERIMENTS
from medvit.figures import FIGURES
from medvit.execution import RunFailed, current_rows, figure_rows, results_store
from medvit.runs import Experiment, Run, RunUnavailable, grid
from medvit.layout import Layout
from medvit.experiments.inputs import load_checkpoint, profile_dataset, save_checkpoint


@pytest.fixture
def fake_figure(monkeypatch):
    """Figure 'figfake' with experiment 'fake' (value = the profile's knn_k) that reads knn_k only."""
    calls = []

    def execute(run, params, device):
        calls.append(run.run_id)
        if run.model == "deit_tiny" and run.init == "imagenet":
            raise RunUnavailable("weights not here")
        return {"metric": "score", "value": float(params.knn_k), "metrics": {"score": float(params.knn_k)}}

    monkeypatch.setitem(EXPERIMENTS, "fake", Experiment("fake", execute, settings=("knn_k",)))
    monkeypatch.setitem(FIGURES, "figfake", SimpleNamespace(
        plan=lambda p: grid("fake", p, ("resnet18", "deit_tiny"), ("random", "imagenet"), ("synthetic_shapes",))))
    return calls


def test_a_figure_runs_what_is_missing_once_and_resumes(fake_figure, tmp_path, capsys):
    params = load_params("smoke", results_dir=str(tmp_path), repetitions=2)
    rows = figure_rows(params, "figfake")
    assert len(rows) == 8 and len(fake_figure) == 8
    assert sorted(rows["status"].value_counts().items()) == [("ok", 6), ("unavailable", 2)]
    out = capsys.readouterr().out
    assert "[1/8] fake__synthetic_shapes__resnet18__random__r0: ok, score 20.0000" in out  # one line per run
    assert "6 ok, 2 unavailable, 0 failed" in out
    figure_rows(params, "figfake")
    assert len(fake_figure) == 10  # only the two unavailable runs are tried again


def test_a_changed_setting_reruns_only_the_experiments_that_read_it(fake_figure, tmp_path, capsys):
    params = load_params("smoke", results_dir=str(tmp_path), repetitions=1)
    figure_rows(params, "figfake")
    figure_rows(load_params("smoke", results_dir=str(tmp_path), repetitions=1, train={"epochs": 9}), "figfake")
    assert len(fake_figure) == 4 + 1  # train.epochs is not read by 'fake': only the unavailable run again
    changed = load_params("smoke", results_dir=str(tmp_path), repetitions=1, knn_k=7)
    rows = figure_rows(changed, "figfake")
    assert len(fake_figure) == 5 + 4 and set(rows.loc[rows["status"] == "ok", "value"]) == {7.0}
    assert "older rows made with other settings are kept as history and not shown" in capsys.readouterr().out
    rows, other = current_rows(changed, FIGURES["figfake"].plan(changed), results_store(changed))
    assert len(rows) == 4 and other >= 3


def test_a_failed_run_leaves_a_failed_row_and_raises(monkeypatch, tmp_path):
    def execute(run, params, device):
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(EXPERIMENTS, "fake", Experiment("fake", execute, settings=()))
    monkeypatch.setitem(FIGURES, "figfake", SimpleNamespace(plan=lambda p: [Run("fake", "synthetic_shapes",
                                                                                "resnet18", "random", 0)]))
    params = load_params("smoke", results_dir=str(tmp_path))
    with pytest.raises(RunFailed, match=r"^run fake__synthetic_shapes__resnet18__random__r0 failed: "
                                        r"ZeroDivisionError: boom \(its failed row holds the traceback\)$") as err:
        figure_rows(params, "figfake")
    assert err.value.run_id == "fake__synthetic_shapes__resnet18__random__r0"
    assert err.value.reason == "ZeroDivisionError: boom"
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    rows = results_store(params).rows()
    assert list(rows["status"]) == ["failed"] and "ZeroDivisionError: boom" in rows["reason"][0]
    assert "ZeroDivisionError: boom" in rows["traceback"][0]


class TinyNet(nn.Module):
    """A few-thousand-parameter classifier with the attributes ``finetune`` reads from a Backbone."""

    name, init, has_attention = "tinynet", "random", False

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_a_diverged_run_is_failed_with_the_reason_and_the_next_run_still_runs(monkeypatch, tmp_path, capsys):
    """The seen case: a run at an absurd learning rate (1000) gave an ok row with a huge training loss."""
    def execute(run, params, device):
        if run.model == "resnet18":  # this run diverges
            splits = [create_dataset("synthetic_shapes", s, size=32, num_classes=3, **{f"n_{s}": n})
                      for s, n in (("train", 64), ("val", 32), ("test", 32))]
            finetune(TinyNet(), *splits, TrainConfig(epochs=2, batch_size=16, lr=1000.0, warmup_iters=0),
                     img_size=32, device=device, progress=False)
        return {"metric": "score", "value": 1.0, "metrics": {"score": 1.0}}

    monkeypatch.setitem(EXPERIMENTS, "fake", Experiment("fake", execute, settings=()))
    monkeypatch.setitem(FIGURES, "figfake", SimpleNamespace(
        plan=lambda p: grid("fake", p, ("resnet18", "deit_tiny"), ("random",), ("synthetic_shapes",))))
    params = load_params("smoke", results_dir=str(tmp_path), repetitions=1)
    with pytest.raises(RunFailed, match=r"^run fake__synthetic_shapes__resnet18__random__r0 failed: "
                                        r"TrainingDiverged: tinynet/random on synthetic_shapes: diverged: "
                                        r"training loss \S+ at epoch 1, \S+× its start") as err:
        figure_rows(params, "figfake")
    assert "\n" not in str(err.value)
    rows = results_store(params).rows().set_index("model")
    assert rows.loc["resnet18", "status"] == "failed" and "diverged: training loss" in rows.loc["resnet18", "reason"]
    assert rows.loc["deit_tiny", "status"] == "ok"  # the run after the failed one still ran
    assert "resnet18__random__r0: failed, TrainingDiverged: tinynet/random on synthetic_shapes: diverged" \
        in capsys.readouterr().out


def test_a_deleted_checkpoint_is_made_again_and_the_run_reading_it_then_works(monkeypatch, tmp_path, capsys):
    """An unreadable checkpoint's message says to delete it and run again: then the run that made it is done
    again (its ok row stood for the file) and the run that reads it works."""
    made, corrupt = [], [True]

    def fit(run, params, device):
        made.append(run.run_id)
        save_checkpoint(nn.Linear(2, 2), run, params)
        if corrupt:  # the first checkpoint is damaged after it was written (a full disk, a killed copy)
            Layout.of(params).checkpoint(run.run_id).write_bytes(b"not a checkpoint")
            corrupt.clear()
        return {"metric": "score", "value": 1.0, "metrics": {"score": 1.0}}

    def read(run, params, device):
        made_by = Run("fakefit", run.dataset, run.model, run.init, 0)
        load_checkpoint(params, made_by, lambda info, saved: nn.Linear(2, 2))
        return {"metric": "score", "value": 2.0, "metrics": {"score": 2.0}}

    monkeypatch.setitem(EXPERIMENTS, "fakefit", Experiment("fakefit", fit, settings=()))
    monkeypatch.setitem(EXPERIMENTS, "fakeread", Experiment("fakeread", read, settings=(), needs=("fakefit",)))
    runs = [Run("fakefit", "synthetic_shapes", "resnet18", "random", 0),
            Run("fakeread", "synthetic_shapes", "resnet18", "random", 0)]
    monkeypatch.setitem(FIGURES, "figfake", SimpleNamespace(plan=lambda p: runs))
    params = load_params("smoke", results_dir=str(tmp_path), repetitions=1)
    with pytest.raises(RunFailed, match="cannot read checkpoint .*; delete it and run again"):
        figure_rows(params, "figfake")
    assert made == ["fakefit__synthetic_shapes__resnet18__random__r0"]
    path = Layout.of(params).checkpoint(runs[0].run_id)
    path.unlink()  # as the message advises
    rows = figure_rows(params, "figfake")
    assert len(made) == 2 and path.is_file()  # made again
    assert list(rows["status"]) == ["ok", "ok"]
    rows = figure_rows(params, "figfake")
    assert len(made) == 2  # and not again while it exists


def test_data_that_is_not_here_makes_the_run_unavailable_not_failed(tmp_path):
    params = load_params("quick", data_root=str(tmp_path / "empty"))
    with pytest.raises(RunUnavailable, match="ph2"):
        profile_dataset(params, "ph2", "train")
    assert issubclass(RunUnavailable, RuntimeError) and issubclass(DataMissing, ValueError)


def test_fig2_with_no_data_gives_unavailable_rows_with_the_how_to(tmp_path):
    params = load_params("quick", data_root=str(tmp_path / "empty"), results_dir=str(tmp_path), repetitions=1,
                         figures={"fig2": {"inits": ["random"]}})
    rows = figure_rows(params, "fig2")
    assert set(rows["status"]) == {"unavailable"} and len(rows) == 2
    assert all("ph2" in r.lower() for r in rows["reason"])


def test_every_figure_is_registered_once_with_its_parts():
    params = load_params("smoke")
    assert list(FIGURES) == ["fig1", "fig2", "fig3", "fig4", "fig5"]
    for name, module in FIGURES.items():
        assert module.NAME == name and module.NOTEBOOK and module.TITLE.startswith(f"Fig {name[-1]}")
        assert all(r.experiment in EXPERIMENTS for r in module.plan(params))
        assert isinstance(module.departures(params), list)


def test_compute_modules_import_nothing_from_the_figures_layer():
    import ast
    from pathlib import Path

    import medvit

    root = Path(medvit.__file__).parent
    compute = ["train.py", "knn.py", "segment.py", "saliency.py", "attention.py", "metrics.py", "runs.py",
               "params.py", "config.py", "results.py", "data", "models"]
    for entry in compute:
        for path in ([root / entry] if entry.endswith(".py") else sorted((root / entry).glob("*.py"))):
            tree = ast.parse(path.read_text())
            names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            bad = [n for n in names if any(x in n for x in ("figures", "experiments", "runner", "launch", "plots"))]
            assert not bad, f"{path.relative_to(root)} imports {bad}"


def test_dataset_facts_are_stated_once_at_registration_and_carried_by_the_loaded_info():
    from medvit import create_dataset
    from medvit.data import dataset_facts
    from medvit.paper import paper_counterpart

    assert dataset_facts("synthetic_shapes").synthetic and not dataset_facts("retinamnist").synthetic
    shapes = create_dataset("synthetic_shapes", "val", size=32, n_val=4)
    assert shapes.info.synthetic and shapes.info.analogue_of is None
    assert create_dataset("synthetic_shapes_seg", "val", size=32, n_val=2).info.synthetic
    assert paper_counterpart("retinamnist") == ("aptos2019", "analogue")
    assert paper_counterpart("aptos2019") == ("aptos2019", "same")
    assert paper_counterpart("synthetic_shapes") == (None, "none")


def test_cpu_runs_do_the_runs_in_worker_processes_each_once(tmp_path, capsys):
    """cpu_runs: 2 does a figure's runs two at a time in worker processes (one thread each on 2 cores): every
    run once, its row written by a worker, the same printed line per run, nothing redone the second time."""
    tiny = {"synthetic_shapes": {"size": 32, "num_classes": 3, "n_train": 32, "n_val": 16, "n_test": 16}}
    params = load_params("smoke", results_dir=str(tmp_path), cpu_runs=2, fig1_models=["resnet18", "deit_tiny"],
                         fig1_inits=["random"], train={"epochs": 1}, dataset_options=tiny, knn_k=5)
    rows = figure_rows(params, "fig1")
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    files = list((tmp_path / "smoke" / "rows").glob("*/*.json"))
    assert len(files) == 4  # one row per run
    pids = {int(f.name.split("-")[1]) for f in files}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2, "the rows were written by the (two) workers"
    out = capsys.readouterr().out
    assert out.count(": ok, ") == 4 and "4 ok, 0 unavailable, 0 failed" in out
    figure_rows(params, "fig1")
    assert len(list((tmp_path / "smoke" / "rows").glob("*/*.json"))) == 4
