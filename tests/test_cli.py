"""The medvit command line."""
from medvit.cli import main


def test_list_models_shows_paper_names_and_their_inits(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "deit_small" in out and "random, imagenet, dino" in out and "resnet152" in out


def test_list_runs_counts_the_grid_of_a_profile(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results_dir "results" is relative: an empty store here
    assert main(["list", "runs", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "fig1:" in out and "missing" in out


def test_unknown_notebook_is_a_clear_error(capsys):
    assert main(["reproduce", "--profile", "smoke", "--only", "fig9"]) == 1
    assert "fig9" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- conventions

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import medvit  # noqa: E402
import medvit.cli  # noqa: E402
from medvit.data import DataError  # noqa: E402
from medvit.models import ModelError  # noqa: E402
from medvit.params import ParamsError  # noqa: E402
from medvit.runner import NotebookFailed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_medvit(*args: str) -> subprocess.CompletedProcess:
    """``python -X importtime -m medvit ARGS`` from this checkout (stderr also lists every module imported)."""
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "medvit", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60)


def imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_python_m_medvit_version():
    done = run_medvit("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"medvit {medvit.__version__}"


@pytest.mark.parametrize("args", [["--help"], ["reproduce", "--help"], ["book", "--help"], ["list", "--help"],
                                  ["data", "prepare", "--help"], ["--version"]], ids=" ".join)
def test_help_imports_neither_torch_nor_timm(args):
    done = run_medvit(*args)
    assert done.returncode == 0 and "usage: medvit" in done.stdout + "usage: medvit" * (args == ["--version"])
    modules = imported(done.stderr)
    assert "medvit.cli" in modules  # importtime did list the imports
    assert not {"torch", "timm", "torchvision", "numpy", "pandas"} & modules


@pytest.mark.parametrize("error, expected", [
    (ParamsError("params/x.yaml: unknown key 'epoch'"), "medvit: params/x.yaml: unknown key 'epoch'\n"),
    (DataError("ph2: folder not found: /d/ph2.\nget it from X"), "medvit: ph2: folder not found: /d/ph2.; get it from X\n"),
    (ModelError("unknown model 'vit_x'"), "medvit: unknown model 'vit_x'\n"),
    (NotebookFailed("fig2_segmentation.ipynb failed in cell 3: DataError: no ph2\nthe executed notebook is saved at "
                    "/b/fig2.ipynb"), "medvit: fig2_segmentation.ipynb failed in cell 3: DataError: no ph2; the "
                                      "executed notebook is saved at /b/fig2.ipynb\n"),
    (ValueError("--only: unknown notebook(s) ['fig9']"), "medvit: --only: unknown notebook(s) ['fig9']\n"),
    (FileNotFoundError("not yet executed: ['fig1']"), "medvit: not yet executed: ['fig1']\n"),
    (ModuleNotFoundError("No module named 'submitit'", name="submitit"),
     "medvit: submitit is not installed: pip install 'medvit[cluster]'\n"),
    (ModuleNotFoundError("No module named 'papermill'", name="papermill"),
     "medvit: papermill is not installed: pip install 'medvit[book]'\n"),
    (subprocess.CalledProcessError(2, ["/venv/bin/jupyter-book", "build", "book"]),
     "medvit: `jupyter-book build` exited with status 2 (its output is above)\n"),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "")
def test_every_expected_error_is_one_line_and_exit_status_1(monkeypatch, capsys, error, expected):
    def fails(args):
        raise error

    monkeypatch.setattr(medvit.cli, "_book", fails)
    assert main(["book"]) == 1
    assert capsys.readouterr().err == expected


def test_an_unexpected_import_error_keeps_its_traceback(monkeypatch):
    def fails(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(medvit.cli, "_book", fails)
    with pytest.raises(ModuleNotFoundError):
        main(["book"])


def test_missing_submitit_names_the_extra_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    assert main(["reproduce", "--profile", "smoke", "--launcher", "local", "--results-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "medvit: the local and slurm launchers need submitit: pip install 'medvit[cluster]'\n"


def test_a_bad_profile_from_the_shell_is_one_line_without_traceback():
    done = run_medvit("reproduce", "--profile", "no_such_profile")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert len(lines) == 1 and lines[0].startswith("medvit: ") and "no_such_profile" in lines[0]


# ------------------------------------------------------------------------------------------- manners

def test_a_closed_pipe_ends_quietly():
    done = subprocess.run(f"{sys.executable} -m medvit list datasets | head -1", shell=True, capture_output=True,
                          text=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60)
    assert done.stdout.count("\n") == 1 and done.stderr == ""


def test_a_missing_page_package_is_named_before_any_run_starts(monkeypatch, capsys):
    import importlib.util

    import medvit.runner

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jupytext" else find_spec(name, *a))
    monkeypatch.setattr(medvit.runner, "reproduce", lambda *a, **k: pytest.fail("the grid started"))
    assert main(["reproduce", "--profile", "smoke"]) == 1
    assert capsys.readouterr().err == ("medvit: medvit reproduce needs jupytext, not installed: "
                                       "pip install 'medvit[book]'\n")


def test_a_full_disk_is_one_line_naming_the_file(monkeypatch, capsys):
    def fails(args):
        raise OSError(28, "No space left on device", "/r/pretrain/x.pt")

    monkeypatch.setattr(medvit.cli, "_book", fails)
    assert main(["book"]) == 1
    assert capsys.readouterr().err == "medvit: [Errno 28] No space left on device: '/r/pretrain/x.pt'\n"


def test_a_failed_run_is_one_line_naming_it(monkeypatch, capsys):
    import medvit.runner
    from medvit.execution import RunFailed

    def fails(*args, **kwargs):
        raise RunFailed("finetune__x__resnet18__random__r0", "TrainingDiverged: diverged: training loss 3e8 at epoch 2\n"
                        "Traceback ...")

    monkeypatch.setattr(medvit.runner, "reproduce", fails)
    assert main(["reproduce", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medvit: ") and "finetune__x__resnet18__random__r0" in err


def test_reproduce_whose_log_cannot_be_written_says_so_and_goes_on(tmp_path):
    import io

    from medvit.runner import _open_log

    (tmp_path / "results").write_text("a file where the results folder should be")
    out = io.StringIO()
    with _open_log(tmp_path / "results" / "quick" / "reproduce.log", out) as log:
        log.write("a line\n")
    assert "cannot be written" in out.getvalue() and "printed here only" in out.getvalue()
