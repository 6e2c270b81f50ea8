"""One GPU check (issue #23): Fig 1's pipeline at 224 px on RetinaMNIST, then the training and k-NN throughput
benchmarks, in one table and one JSON file.

1. Fig 1 through medvit's own runner: the ``medmnist`` profile (224 px) with RetinaMNIST only, 1 epoch,
   1 repetition, every init of the profile (``figures.fig1.plan`` → ``experiments.do_runs``), its rows in a
   fresh results folder. An init whose weights are not on this machine gives an ``unavailable`` row with the
   reason; no other init stands in for it. The in-domain DINO init (``imagenet+dino_indomain``) pretrains for
   ``--dino-epochs`` epochs (the profile's 300 would not fit in the check); ``--dino-epochs 0`` leaves it out.
2. ``train_throughput.py`` (medvit's loop, the authors' protocol vs the fast path, real ISIC JPEGs) and
   ``knn_throughput.py`` (the k-NN vote at the paper's size), through their ``main``.
3. A table (run id, status, metric, value, seconds, device, reason) and ``--out`` as JSON: the same rows,
   the device's name, the torch version, the precision the runs used, the settings, and both benchmarks'
   own results.

The exit status is 1 when a run or a benchmark failed (the table still comes first), else 0.

    python benchmarks/gpu_check.py                                  # on one GPU
    python benchmarks/gpu_check.py --medmnist-size 28               # only retinamnist.npz (28 px) here: upsampled
    python benchmarks/gpu_check.py --cpu-smoke                      # on a CPU: 32 px, a few images, device cpu
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import knn_throughput
import train_throughput
from medvit.data import DataMissing
from medvit.execution import RunFailed, current_rows, do_runs, results_store
from medvit.figures import figure
from medvit.models import indomain_start
from medvit.params import load_params
from medvit.device import resolve_device
from medvit.train import resolve_precision

PROFILE = "medmnist"
DATASET = "retinamnist"
BUDGET_S = 8 * 60  # what the check is sized for on one H100/H200-class GPU


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run everything on the CPU at 32 px on a few images (shows that the check runs; measures "
                        "nothing)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu_check.json"), help="the JSON file written")
    p.add_argument("--results-dir", type=Path,
                   help="where Fig 1's rows go: a new or empty folder (default: a new folder beside --out)")
    p.add_argument("--data-root", help="the data folder (medmnist/, isic_uda1/); default $MEDVIT_DATA_ROOT")
    p.add_argument("--medmnist-size", type=int, choices=(28, 64, 128, 224),
                   help="which RetinaMNIST file is read (the model input stays 224 px; 28 with --cpu-smoke); "
                        "default 224, the profile's")
    p.add_argument("--dino-epochs", type=int, default=1,
                   help="epochs of the in-domain DINO pretraining (the profile: 300); 0 leaves the in-domain init out")
    args = p.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        p.error("no CUDA device here: this check runs Fig 1 at 224 px and the benchmarks at GPU sizes; on a CPU "
                "run it with --cpu-smoke")
    if args.dino_epochs < 0:
        p.error(f"--dino-epochs {args.dino_epochs}: expected 0 (leave in-domain DINO out) or more")
    if args.medmnist_size is None:
        args.medmnist_size = 28 if args.cpu_smoke else 224
    if args.results_dir is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.results_dir = Path(tempfile.mkdtemp(prefix="gpu_check_results-", dir=args.out.parent))
    elif args.results_dir.exists() and any(args.results_dir.iterdir()):
        p.error(f"--results-dir {args.results_dir} already holds files; the check starts from a fresh folder "
                f"(its runs would otherwise be found done and not run)")
    return args


def fig1_params(args):
    """The ``medmnist`` profile narrowed to RetinaMNIST, 1 epoch, 1 repetition; tiny sizes on the CPU with
    ``--cpu-smoke``. Returns (params, notes): notes say what departs from the profile."""
    base = load_params(PROFILE)
    img_size = 32 if args.cpu_smoke else base.img_size
    inits = base.fig1_inits if args.dino_epochs else tuple(i for i in base.fig1_inits if indomain_start(i) is None)
    overrides = dict(datasets=(DATASET,), repetitions=1, train={"epochs": 1}, results_dir=str(args.results_dir),
                     data_root=args.data_root, dataset_options={DATASET: {"size": args.medmnist_size}},
                     fig1_inits=inits)
    notes = [f"Fig 1 on {DATASET} only, 1 epoch, 1 repetition (the profile: {len(base.datasets)} datasets, "
             f"{base.train.epochs} epochs, {base.repetitions} repetitions)"]
    if args.medmnist_size != base.options_for(DATASET).get("size"):
        notes.append(f"{DATASET} read at {args.medmnist_size} px and resized to the {img_size} px input")
    dropped = [i for i in base.fig1_inits if i not in inits]
    if dropped:
        notes.append(f"in-domain DINO left out ({', '.join(dropped)}): --dino-epochs 0")
    elif any(indomain_start(i) for i in inits):
        overrides["dino"] = {"epochs": args.dino_epochs, "warmup_max_fraction": 0.1}
        notes.append(f"in-domain DINO pretrains {args.dino_epochs} epoch(s) (the profile: {base.dino.epochs}, which "
                     f"would not fit in {BUDGET_S // 60} minutes), warm-up capped at 10% of its iterations")
    if args.cpu_smoke:
        overrides.update(device="cpu", img_size=img_size, train_subset=32, num_workers=0, knn_k=20,
                         train={"epochs": 1, "batch_size": 8})
        if "dino" in overrides:
            overrides["dino"].update(batch_size=8, n_local_crops=2, out_dim=256, hidden_dim=256, bottleneck_dim=64)
        notes.append("--cpu-smoke: device cpu, 32 px input, 32 training images, batch 8, k-NN k 20; measures nothing")
    return load_params(PROFILE, **overrides), notes


def finite(value):
    """``value`` as a float, or None where it is missing or not finite (strict JSON)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def strict(value):
    """``value`` with every non-finite float replaced by None at any depth (strict JSON: a benchmark's NaN
    peak memory on a CPU)."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fig1_rows(params) -> tuple[list[dict], str]:
    """Fig 1's runs done by medvit's runner; one table row per run, and the runner's failure message ("" if none)."""
    runs = figure("fig1").plan(params)
    failure = ""
    try:
        do_runs(params, runs, "gpu check: fig1")
    except RunFailed as err:  # the failed rows are in the store, the other runs ran
        failure = str(err)
    rows, _ = current_rows(params, runs, results_store(params))
    by_id = {r["run_id"]: r for r in rows.to_dict("records")}
    table = []
    for run in runs:
        row = by_id.get(run.run_id, {})
        table.append(dict(run_id=run.run_id, status=row.get("status") or "missing", metric=row.get("metric") or "",
                          value=finite(row.get("value")), seconds=finite(row.get("wall_time_s")),
                          device=row.get("device") or "", reason=str(row.get("reason") or "")))
    return table, failure


def benchmark(name: str, main, argv: list[str]) -> tuple[dict | None, dict | None]:
    """(the benchmark's result, None), or (None, an unavailable or failed table row) when it could not run."""
    print(f"\n{name} {' '.join(argv)}", flush=True)
    try:
        return main(argv), None
    except DataMissing as err:
        return None, dict(run_id=name, status="unavailable", metric="", value=None, seconds=None, device="",
                          reason=str(err))
    except Exception as err:
        return None, dict(run_id=name, status="failed", metric="", value=None, seconds=None, device="",
                          reason=f"{type(err).__name__}: {err}")


def throughput_rows(args, device: torch.device) -> tuple[list[dict], dict]:
    """The train and k-NN throughput benchmarks as table rows, and their own results."""
    dev = ["--device", str(device)]
    if args.cpu_smoke:
        train_argv = ["--img-size", "32", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--workers", "0"]
        knn_argv = ["--bank", "2000", "--queries", "300", "--k", "50", "--chunk-sizes", "128", "512", "--repeats", "1"]
    else:
        train_argv, knn_argv = [], ["--full", "--repeats", "2"]  # train: its GPU defaults (224 px, batch 64)
    if args.data_root:
        train_argv += ["--data-root", args.data_root]
    out_dir = args.out.parent
    train, train_row = benchmark("train_throughput", train_throughput.main,
                                 dev + train_argv + ["--out", str(out_dir / "gpu_check_train_throughput.json")])
    knn, knn_row = benchmark("knn_throughput", knn_throughput.main,
                             dev + knn_argv + ["--out", str(out_dir / "gpu_check_knn_throughput.json")])
    table = []
    if train is None:
        table.append(train_row)
    else:
        batch, steps = int(train["args"]["batch_size"]), int(train["args"]["steps"])
        for r in train["rows"]:
            table.append(dict(run_id=f"train_throughput__{r['model']}__{r['path']}", status="ok",
                              metric="images_per_s", value=r["images_per_s"],
                              seconds=batch * steps / r["images_per_s"], device=str(device), reason=""))
    if knn is None:
        table.append(knn_row)
    else:
        for r in knn["rows"]:
            table.append(dict(run_id=f"knn_throughput__chunk{r['chunk_size']}", status="ok", metric="queries_per_s",
                              value=r["queries_per_s"], seconds=r["seconds"], device=str(device), reason=""))
    return table, {"train_throughput": train, "knn_throughput": knn}


def print_table(rows: list[dict]) -> None:
    width = max(len(r["run_id"]) for r in rows)
    print(f"\n{'run id':<{width}} {'status':<11} {'metric':<15} {'value':>10} {'seconds':>8} {'device':<7} reason")
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}" if r["value"] < 100 else f"{r['value']:.1f}"
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        reason = (r["reason"].splitlines() or [""])[0]
        print(f"{r['run_id']:<{width}} {r['status']:<11} {r['metric']:<15} {value:>10} {seconds:>8} {r['device']:<7} "
              f"{reason[:100]}")


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    params, notes = fig1_params(args)
    device = resolve_device(params)
    precision = resolve_precision(params.precision, device).name
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"gpu check: device {device} ({device_name}); torch {torch.__version__}; precision {precision}; "
          f"results in {args.results_dir}", flush=True)
    for note in notes:
        print(f"  {note}", flush=True)

    table, failure = fig1_rows(params)
    fig1_seconds = time.perf_counter() - start
    throughput, results = throughput_rows(args, device)
    table += throughput
    seconds = time.perf_counter() - start

    print_table(table)
    counts = {s: sum(r["status"] == s for r in table) for s in ("ok", "unavailable", "failed", "missing")}
    print(f"\n{', '.join(f'{n} {s}' for s, n in counts.items() if n)}; Fig 1 {fig1_seconds:.0f} s, all {seconds:.0f} s"
          + (f" (over the {BUDGET_S} s this check is sized for)" if not args.cpu_smoke and seconds > BUDGET_S else ""))
    if failure:
        print(f"first failure: {failure}")
    result = dict(device=str(device), device_name=device_name, torch=torch.__version__, precision=precision,
                  cpu_smoke=args.cpu_smoke, profile=PROFILE, notes=notes, results_dir=str(args.results_dir),
                  params=params.to_dict(), rows=table, seconds=seconds, fig1_seconds=fig1_seconds, **results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(strict(result), indent=2, allow_nan=False))
    print(f"wrote {args.out}")
    return 1 if counts["failed"] or counts["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
