"""``medvit``: reproduce the paper's figures, build the book, and look up what is registered.

    medvit reproduce --profile quick [--only fig1 fig3] [--force]
    medvit book [--strict]
    medvit list models|datasets|profiles|runs [--profile P]
"""
from __future__ import annotations

import argparse
import sys


def _list(what: str, profile: str) -> None:
    import medvit
    from medvit.experiments import FIGURES, plan, results_store

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
        params = medvit.load_params(profile)
        rows = results_store(params).rows()
        status = dict(zip(rows["run_id"], rows["status"])) if not rows.empty else {}
        for fig in FIGURES:
            runs = plan(params, fig)
            counts = {s: sum(status.get(r.run_id) == s for r in runs) for s in ("ok", "unavailable", "failed")}
            print(f"{fig}: {len(runs)} runs, done {counts['ok']}, unavailable {counts['unavailable']}, "
                  f"failed {counts['failed']}, missing {len(runs) - sum(counts.values())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medvit", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="execute the book's notebooks for a profile (resumes finished runs)")
    rep.add_argument("--profile", default="quick")
    rep.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="e.g. fig1 fig3 (default: all)")
    rep.add_argument("--force", action="store_true", help="redo runs already in the results store")
    book = sub.add_parser("book", help="build the HTML book from the executed notebooks into _build/html")
    book.add_argument("--strict", action="store_true", help="fail on Sphinx warnings (-W -n --keep-going)")
    lst = sub.add_parser("list", help="what is registered, or the state of a profile's runs")
    lst.add_argument("what", choices=["models", "datasets", "profiles", "runs"])
    lst.add_argument("--profile", default="quick")
    args = parser.parse_args(argv)

    from medvit.runner import NotebookFailed, build_book, reproduce

    try:
        if args.command == "reproduce":
            reproduce(args.profile, only=args.only, force=args.force)
        elif args.command == "book":
            build_book(strict=args.strict)
        else:
            _list(args.what, args.profile)
    except (NotebookFailed, ValueError, FileNotFoundError) as err:
        print(f"medvit: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
