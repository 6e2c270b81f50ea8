"""The results store: append is atomic and never overwrites, a run's newest ``ok`` row counts (else its newest
row), done() counts runs with an ``ok`` row, a corrupt row is moved aside, and aggregate gives the paper's
median ± std over repetitions."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

import medvit.results
from medvit import ResultsStore, aggregate


def row(model="resnet50", init="random", repetition=0, status="ok", value=0.5, **extra):
    return {"experiment": "finetune", "dataset": "retinamnist", "model": model, "init": init,
            "repetition": repetition, "status": status, "metric": "quadratic_kappa" if status == "ok" else "",
            "value": value if status == "ok" else float("nan"), **extra}


def test_two_appends_of_one_run_keep_both_files_and_the_newest_wins(tmp_path):
    store = ResultsStore(tmp_path)
    first = store.append(row(value=0.1))
    second = store.append(row(value=0.2))
    assert first != second and first.is_file() and second.is_file()
    assert json.loads(first.read_text())["value"] == 0.1  # the older row is history, not overwritten
    rows = store.rows()
    assert len(rows) == 1 and rows["value"].iloc[0] == 0.2
    assert rows["run_id"].iloc[0] == "finetune__retinamnist__resnet50__random__r0"
    assert sorted(store.rows(history=True)["value"]) == [0.1, 0.2]


def test_appends_in_the_same_instant_never_overwrite(tmp_path, monkeypatch):
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2024, 1, 1, tzinfo=timezone.utc)

    monkeypatch.setattr(medvit.results, "datetime", FrozenClock)
    store = ResultsStore(tmp_path)
    paths = {store.append(row(value=v)) for v in (0.1, 0.2, 0.3)}
    assert len(paths) == 3
    assert sorted(store.rows(history=True)["value"]) == [0.1, 0.2, 0.3]


def test_a_failed_write_leaves_no_row_and_no_temporary_file(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(TypeError, match="cannot store object"):
        store.append(row(unserialisable=object()))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert store.rows().empty and store.done() == set()


def test_a_row_file_is_complete_json_with_provenance_fields(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.append(row(value=np.float32(0.25), metrics={"accuracy": np.float64(0.5)}, n=np.int64(3),
                            train_loss=np.array([1.0, 0.5])))
    data = json.loads(path.read_text())
    assert data["value"] == 0.25 and data["metrics"] == {"accuracy": 0.5} and data["n"] == 3
    assert data["train_loss"] == [1.0, 0.5] and data["created_at"].startswith("20")
    assert path.parent.name == data["run_id"]
    assert all(not p.name.startswith(".") for p in path.parent.iterdir())


def test_a_run_is_done_once_it_has_an_ok_row_and_a_later_failure_never_hides_it(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(row("resnet50", repetition=0))
    store.append(row("resnet50", repetition=1, status="unavailable", reason="no weights"))
    store.append(row("resnet50", repetition=2, status="failed", reason="FloatingPointError"))
    store.append(row("resnet50", repetition=3, value=0.3))
    store.append(row("resnet50", repetition=3, status="failed", reason="rerun crashed"))  # a second process's try
    store.append(row("resnet50", repetition=4, status="failed", reason="first try crashed"))
    store.append(row("resnet50", repetition=4, value=0.4))
    ids = {r: f"finetune__retinamnist__resnet50__random__r{r}" for r in range(5)}
    assert store.done() == {ids[0], ids[3], ids[4]}
    assert all(store.is_done(ids[r]) == (r in (0, 3, 4)) for r in range(5))
    newest = store.rows().set_index("run_id")
    assert (newest.loc[ids[3], "status"], newest.loc[ids[3], "value"]) == ("ok", 0.3)  # the ok row, not the failure
    assert (newest.loc[ids[4], "status"], newest.loc[ids[4], "value"]) == ("ok", 0.4)
    assert newest.loc[ids[1], "status"] == "unavailable" and newest.loc[ids[2], "status"] == "failed"
    assert len(store.rows(history=True)) == 7


def test_the_newest_of_several_ok_rows_counts(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(row(value=0.1))
    store.append(row(status="failed", reason="forced rerun crashed"))
    store.append(row(value=0.2))  # a forced rerun that finished
    store.append(row(status="unavailable", reason="weights gone"))
    assert store.rows()["value"].tolist() == [0.2]


def test_empty_store_has_no_rows(tmp_path):
    store = ResultsStore(tmp_path / "never_written")
    assert store.rows().empty and store.done() == set()
    assert aggregate(store.rows()).empty


def test_bad_rows_are_rejected(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(ValueError, match=r"lacks \['repetition'\]"):
        store.append({k: v for k, v in row().items() if k != "repetition"})
    with pytest.raises(ValueError, match="status 'done' not in"):
        store.append(row() | {"status": "done"})


def test_an_unreadable_row_file_is_named_moved_aside_and_its_run_is_not_done(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.append(row())
    store.append(row(repetition=1))
    path.write_text("{ half a row")
    with pytest.warns(medvit.results.CorruptRowWarning, match=f"corrupt result row {path}: not valid JSON"):
        rows = store.rows()
    assert rows["repetition"].tolist() == [1]
    assert not path.exists()
    assert (tmp_path / "quarantine" / path.parent.name / path.name).read_text() == "{ half a row"
    assert store.done() == {"finetune__retinamnist__resnet50__random__r1"}


def test_aggregate_gives_median_and_std_over_repetitions_and_keeps_unavailable_settings(tmp_path):
    store = ResultsStore(tmp_path)
    resnet = [0.81, 0.85, 0.79, 0.88, 0.84]
    deit = [0.60, 0.70, 0.65]
    for r, v in enumerate(resnet):
        store.append(row("resnet50", repetition=r, value=v))
    store.append(row("deit_small", repetition=0, status="failed", reason="crashed"))  # a failed repetition
    for r, v in enumerate(deit, start=1):
        store.append(row("deit_small", repetition=r, value=v))
    for r in range(2):
        store.append(row("resnet50", "dino", repetition=r, status="unavailable",
                         reason="dino weights for resnet50 could not be loaded; put them in $MEDVIT_WEIGHTS_DIR"))
    table = aggregate(store.rows()).set_index(["model", "init"])

    ok = table.loc[("resnet50", "random")]
    assert ok["median"] == pytest.approx(np.median(resnet))
    assert ok["std"] == pytest.approx(np.std(resnet, ddof=1))
    assert (ok["n"], ok["status"], ok["metric"], ok["reason"]) == (5, "ok", "quadratic_kappa", "")

    partly = table.loc[("deit_small", "random")]  # only the ok repetitions count
    assert partly["median"] == pytest.approx(np.median(deit))
    assert partly["std"] == pytest.approx(np.std(deit, ddof=1))
    assert (partly["n"], partly["metric"]) == (3, "quadratic_kappa")

    missing = table.loc[("resnet50", "dino")]
    assert missing["status"] == "unavailable" and "MEDVIT_WEIGHTS_DIR" in missing["reason"]
    assert missing["n"] == 0 and np.isnan(missing["median"])
    assert len(table) == 3


def test_aggregate_of_a_single_repetition_has_undefined_std():
    rows = pd.DataFrame([row(value=0.7) | {"run_id": "x"}])
    out = aggregate(rows)
    assert out["median"].iloc[0] == 0.7 and np.isnan(out["std"].iloc[0]) and out["n"].iloc[0] == 1
