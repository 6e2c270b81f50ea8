"""``medvit``: reproduce the paper's figures, build the book, and look up what is registered.

    medvit reproduce --profile quick [--only fig1 fig3] [--force] [--results-dir DIR]
    medvit reproduce --profile medmnist --launcher local [--gpus N]      # one run per GPU, then the book
    medvit reproduce --profile paper --launcher slurm --slurm-partition gpu --slurm-time 4:00:00
    medvit book [--strict]
    medvit list models|datasets|profiles|runs [--profile P] [--figure fig1] [--verbose]
    medvit data prepare ph2|pcam|cbis_ddsm <downloaded folder> [--out DIR]

Also ``python -m medvit``. An expected error (bad profile, missing data, failed notebook, missing optional
package) is one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from medvit.resources import VERSION

# Datasets with a conversion from their official download (medvit.data.prepare.PREPARERS, kept equal by a
# test): listed here so that `medvit --help` imports nothing heavy.
PREPARABLE = ("ph2", "pcam", "cbis_ddsm")
# Optional packages → the extra that installs them (pyproject.toml [project.optional-dependencies]).
OPTIONAL_EXTRAS = {"submitit": "cluster", "papermill": "book", "jupyter_book": "book", "nbformat": "book",
                   "nbclient": "book", "ipykernel": "book", "jupytext": "book", "openpyxl": "data", "pydicom": "data"}
# What `medvit reproduce` executes the pages with, checked before any run starts (not after the grid).
PAGE_MODULES = ("papermill", "jupytext", "nbformat", "nbclient", "ipykernel")


def require_modules(modules, what: str) -> None:
    """An ImportError naming the missing ``modules`` and the extra that installs them, before ``what`` starts."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = sorted({OPTIONAL_EXTRAS[m] for m in missing})
        raise ImportError(f"{what} needs {', '.join(missing)}, not installed: "
                          f"pip install 'medvit[{','.join(extras)}]'", name=missing[0])


def _list(what: str, profile: str, figure: str | None = None, verbose: bool = False,
          results_dir: str | None = None) -> None:
    import medvit

    if what == "models":
        for m in medvit.list_models():
            print(f"{m:12s} inits: {', '.join(medvit.model_inits(m))}")
    elif what == "datasets":
        from medvit.data import dataset_description

        for d in medvit.list_datasets():
            print(f"{d:22s} {dataset_description(d)}")
    elif what == "profiles":
        for p in medvit.list_profiles():
            print(f"{p:10s} {medvit.load_params(p).description}")
    elif what == "runs":
        from medvit.execution import grid_runs
        from medvit.figures import FIGURES
        from medvit.launch import launch_params, run_states
        from medvit.layout import Layout

        params = launch_params(profile, results_dir)
        figures = [figure] if figure else list(FIGURES)
        states = run_states(params, grid_runs(params, figures))
        print(f"profile {params.profile}: results in {Layout.of(params).root}")
        for fig in figures:
            runs = FIGURES[fig].plan(params)
            counts = {s: sum(states[r.run_id][0] == s for r in runs) for s in ("ok", "unavailable", "failed")}
            print(f"{fig}: {len(runs)} runs, done {counts['ok']}, unavailable {counts['unavailable']}, "
                  f"failed {counts['failed']}, missing {len(runs) - sum(counts.values())}")
        if len(figures) > 1:
            counts = {s: sum(v[0] == s for v in states.values()) for s in ("ok", "unavailable", "failed", "missing")}
            print(f"all: {len(states)} distinct runs (figures share some), done {counts['ok']}, unavailable "
                  f"{counts['unavailable']}, failed {counts['failed']}, missing {counts['missing']}")
        if verbose:
            for run_id, (state, reason) in states.items():
                line = f"  {'done' if state == 'ok' else state:12s} {run_id}"
                print(line + (f"  ({reason.strip().splitlines()[-1][:160]})" if reason.strip() else ""))


def _launch(args) -> int:
    """Run the missing runs of the figures in ``--only`` (default: all) with ``--launcher``; 1 if any failed."""
    from medvit.launch import launch, launch_params
    from medvit.figures import FIGURES  # the one figure registry
    from medvit.runner import available_notebooks

    unknown = [k for k in args.only or () if k not in available_notebooks()]
    if unknown:  # before launching anything
        raise ValueError(f"unknown notebook(s) {unknown}; available: {', '.join(available_notebooks())}")
    overrides = {}
    if args.launcher == "slurm":  # None: the profile's value (its slurm section)
        slurm = {"partition": args.slurm_partition, "time": args.slurm_time, "gpus": args.gpus,
                 "cpus_per_task": args.slurm_cpus, "mem_gb": args.slurm_mem,
                 "array_parallelism": args.slurm_array_parallelism, "account": args.slurm_account,
                 "qos": args.slurm_qos}
        overrides["slurm"] = {k: v for k, v in slurm.items() if v is not None}
    params = launch_params(args.profile, args.results_dir, **overrides)
    figures = [k for k in args.only if k in FIGURES] if args.only else None
    if args.only and not figures:
        print(f"{args.launcher}: no runs to launch for {args.only} (figures with runs: {', '.join(FIGURES)})")
        return 0
    if args.launcher == "local":
        options = {"gpus": args.gpus}
    else:
        options = {"dry_run": args.dry_run}
    report = launch(params, args.launcher, figures=figures, force=args.force,
                    retry_unavailable=args.retry_unavailable, **options)
    print(report.summary(), flush=True)
    return 1 if report.failed else 0


def _reproduce(args) -> int:
    require_modules(PAGE_MODULES, "medvit reproduce")  # the launchers check submitit themselves, first
    from medvit.runner import reproduce

    if args.launcher:
        if _launch(args) != 0:
            return 1
        if args.dry_run:
            return 0
        reproduce(args.profile, only=args.only, results_dir=args.results_dir, book_dir=args.book_dir, grid=False)
    else:
        reproduce(args.profile, only=args.only, force=args.force, results_dir=args.results_dir,
                  book_dir=args.book_dir)
    return 0


def _book(args) -> int:
    from medvit.runner import build_book

    build_book(book_dir=args.book_dir, strict=args.strict)
    return 0


def _list_command(args) -> int:
    _list(args.what, args.profile, args.figure, args.verbose, args.results_dir)
    return 0


def _prepare(args) -> int:
    from medvit.data.prepare import prepare

    prepare(args.dataset, args.source, args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medvit", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medvit {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{reproduce,book,list,data}")
    rep = sub.add_parser("reproduce", help="execute the book's notebooks for a profile (resumes finished runs)",
                         formatter_class=argparse.RawTextHelpFormatter)
    rep.set_defaults(handler=_reproduce)
    rep.add_argument("--profile", default="quick")
    rep.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="e.g. fig1 fig3 (default: all)")
    rep.add_argument("--force", action="store_true", help="redo runs already in the results store")
    rep.add_argument("--retry-unavailable", action="store_true",
                     help="with --launcher: submit again the runs that were unavailable (weights or data missing) "
                          "when last tried; without --launcher they are always tried again")
    rep.add_argument("--results-dir", help="results folder (default: the profile's results_dir)")
    rep.add_argument("--book-dir", help="where the executed pages go (default: the checkout, or ./medvit-book\n"
                                        "when medvit is installed)")
    rep.add_argument("--launcher", choices=["local", "slurm"],
                     help="run the grid's missing runs as separate jobs first, then execute the notebooks\n"
                          "(default: in this process, the profile's cpu_runs runs at a time on a CPU;\n"
                          "needs pip install 'medvit[cluster]')")
    rep.add_argument("--gpus", type=int, help="local: GPUs to use, one run per GPU (default: all visible;\n"
                                              "none on a CPU machine: one run at a time); slurm: GPUs per job (1)")
    slurm = rep.add_argument_group("slurm (with --launcher slurm; one job array per wave of runs)")
    slurm.add_argument("--slurm-partition", help="partition (profile's slurm.partition; else the cluster's default)")
    slurm.add_argument("--slurm-time", help="time limit per run: minutes or [D-]H:MM:SS (profile's slurm.time, 4:00:00)")
    slurm.add_argument("--slurm-cpus", type=int, help="CPUs per task (profile's slurm.cpus_per_task, 8)")
    slurm.add_argument("--slurm-mem", type=float, help="memory per task in GB (profile's slurm.mem_gb, 32)")
    slurm.add_argument("--slurm-array-parallelism", type=int,
                       help="tasks of an array running at once (profile's slurm.array_parallelism, 64)")
    slurm.add_argument("--slurm-account", help="account to charge (sbatch --account; profile's slurm.account)")
    slurm.add_argument("--slurm-qos", help="quality of service (sbatch --qos; profile's slurm.qos)")
    slurm.add_argument("--dry-run", action="store_true",
                       help="print the sbatch options and the task list; submit nothing, execute no notebook")
    book = sub.add_parser("book", help="build the HTML book from the executed notebooks into _build/html")
    book.set_defaults(handler=_book)
    book.add_argument("--strict", action="store_true", help="fail on Sphinx warnings (-W -n --keep-going)")
    book.add_argument("--book-dir", help="where the executed pages are and _build/ goes (default: the checkout,\n"
                                         "or ./medvit-book when medvit is installed)")
    lst = sub.add_parser("list", help="what is registered, or the state of a profile's runs")
    lst.set_defaults(handler=_list_command)
    lst.add_argument("what", choices=["models", "datasets", "profiles", "runs"])
    lst.add_argument("--profile", default="quick")
    lst.add_argument("--figure", help="runs: only this figure's runs (e.g. fig1)")
    lst.add_argument("--verbose", action="store_true", help="runs: one line per run with its state and reason")
    lst.add_argument("--results-dir", help="runs: results folder (default: the profile's results_dir)")
    data = sub.add_parser("data", help="datasets: convert an official download into the layout medvit reads")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{prepare}")
    prep = data_sub.add_parser(
        "prepare", formatter_class=argparse.RawTextHelpFormatter,
        help="convert a dataset's official download into the layout medvit reads",
        description="Convert a dataset's official download into the layout medvit reads, then load every split\n"
                    "to check it.\n"
                    "  ph2        the unzipped PH2 release (PH2Dataset: 'PH2 Dataset images/' + PH2_dataset.txt/.xlsx)\n"
                    "  pcam       the folder of PatchCamelyon's camelyonpatch_level_2_split_*.h5.gz files\n"
                    "  cbis_ddsm  TCIA's four case-description CSVs + the DICOM download, in one folder\n"
                    "             (needs pip install 'medvit[data]')")
    prep.set_defaults(handler=_prepare)
    prep.add_argument("dataset", choices=PREPARABLE)
    prep.add_argument("source", help="the downloaded (and unzipped) folder")
    prep.add_argument("--out", help="where to write the dataset (default: $MEDVIT_DATA_ROOT/<dataset>, where\n"
                                    "medvit looks for it)")
    return parser


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _missing_extra(err: ImportError) -> str | None:
    """The one-line message for a missing optional package, or None when ``err`` is not one."""
    if "pip install 'medvit[" in str(err):  # raised by medvit, naming the extra
        return _one_line(err)
    module = (err.name or "").split(".")[0]
    if module in OPTIONAL_EXTRAS:
        return f"{module} is not installed: pip install 'medvit[{OPTIONAL_EXTRAS[module]}]'"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from medvit.runner import BookError

    try:
        return args.handler(args)
    except BrokenPipeError:  # `medvit list ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # 128 + SIGPIPE, as a shell reports a command its pipe closed
    except (BookError, ValueError, FileNotFoundError) as err:  # ParamsError, DataError, ModelError too
        print(f"medvit: {_one_line(err)}", file=sys.stderr)
    except OSError as err:  # a full disk, a read-only folder: the message names the file
        print(f"medvit: {_one_line(err)}", file=sys.stderr)
    except subprocess.CalledProcessError as err:
        cmd = [str(c) for c in err.cmd] if isinstance(err.cmd, (list, tuple)) else str(err.cmd).split()
        print(f"medvit: `{' '.join([Path(cmd[0]).name, *cmd[1:2]])}` exited with status {err.returncode} "
              "(its output is above)", file=sys.stderr)
    except ImportError as err:
        message = _missing_extra(err)
        if message is None:
            raise  # a broken installation, not a missing extra: the traceback says where
        print(f"medvit: {message}", file=sys.stderr)
    except Exception as err:
        execution = sys.modules.get("medvit.execution")  # a run failed only where it was imported (with torch)
        if execution is None or not isinstance(err, execution.RunFailed):
            raise
        print(f"medvit: {_one_line(err)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("medvit: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
