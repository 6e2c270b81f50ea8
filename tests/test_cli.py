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
