"""Tables shared by the figure pages: median ± std per setting, why settings are unavailable, and the
verdicts on the paper's claims (the gap CNN − ViT with its interval, ``medvit.stats``); and what a page shows
of them: ``PageTable`` (a table narrowed to the page, with notes under it), ``unavailable_summary`` (what did
not run, once per init and reason) and ``verdict_findings`` (the verdicts in sentences, computed)."""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import pandas as pd

from ..results import aggregate
from ..stats import (AT_CHANCE, CLAIM_PRETRAINED, CLAIM_SCRATCH, CONTRADICTED, CONVERGENCE_UNKNOWN, INCONCLUSIVE,
                     MARGIN, N_RESAMPLES, SUPPORTED, gap_table)

EVALUATION_NAMES = {"finetune": "fine-tuning", "knn": "k-NN", "segmentation": "segmentation",
                    "attention": "attention distance of the backbone",
                    "attention_finetuned": "attention distance fine-tuned"}
INIT_NAMES = {"random": "random", "imagenet": "ImageNet", "dino": "DINO",
              "random+dino_indomain": "random + in-domain DINO", "imagenet+dino_indomain": "ImageNet + in-domain DINO"}
NBSP = "\u00a0"  # keeps an interval on one line in a narrow column


def format_score(median: float, std: float, n: int | None = None) -> str:
    """``0.712 ± 0.021 (n=3)``; std is left out when there is a single repetition."""
    if median is None or (isinstance(median, float) and math.isnan(median)):
        return "–"
    s = f"{median:.3f}" + ("" if std is None or math.isnan(std) else f" ± {std:.3f}")
    return s + (f" (n={n})" if n is not None else "")


def summary_table(rows: pd.DataFrame, by=("experiment", "dataset", "model", "init")) -> pd.DataFrame:
    """One line per setting: the metric, ``median ± std (n)`` of the ok repetitions, or the status."""
    agg = aggregate(rows, by=by)
    if agg.empty:
        return agg
    known = rows[rows["metric"].astype(bool)].groupby("dataset")["metric"].first()  # unavailable rows have none
    agg["metric"] = [m or known.get(d, "") for m, d in zip(agg["metric"], agg["dataset"])]
    agg["ours"] = [format_score(m, s, n) if st == "ok" else st
                   for m, s, n, st in zip(agg["median"], agg["std"], agg["n"], agg["status"])]
    return agg


def verdict_table(rows: pd.DataFrame, root, pairs, margin: float = MARGIN, n_resamples: int = N_RESAMPLES,
                  seed: int = 0) -> pd.DataFrame:
    """The verdict table of a figure: per evaluation × dataset × init × (CNN, ViT) pair, the gap CNN − ViT
    in the target metric, its 95% interval, ``n`` (test images × repetitions of each model), the claim
    and its verdict (``medvit.stats.gap_table``: supported / contradicted / inconclusive at this budget, or
    not trained enough at this budget when a model is not above chance, its metric above the trivial
    predictor's with its interval in the note; blank with a note when the runs or their predictions are
    missing)."""
    table = gap_table(rows, root, pairs, margin=margin, n_resamples=n_resamples, seed=seed)
    cols = ["evaluation", "dataset", "init", "CNN − ViT", "metric", "gap", "95% CI", "n", "claim", "verdict",
            "note"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    computed = table["gap"].notna()
    return pd.DataFrame({
        "evaluation": table["experiment"].map(lambda e: EVALUATION_NAMES.get(e, e)),
        "dataset": table["dataset"],
        "init": table["init"].map(lambda i: INIT_NAMES.get(i, i)),
        "CNN − ViT": table["cnn"] + " − " + table["vit"],
        "metric": table["metric"],
        "gap": [f"{g:+.3f}" if c else "–" for g, c in zip(table["gap"], computed)],
        "95% CI": [f"[{lo:+.3f}, {hi:+.3f}]" if c else "–"
                   for lo, hi, c in zip(table["ci_low"], table["ci_high"], computed)],
        "n": [f"{i} images × {a}/{b} runs" if c else "–"
              for i, a, b, c in zip(table["n_images"], table["n_cnn"], table["n_vit"], computed)],
        "claim": table["claim"] + [f" (|gap| ≤ {margin:g})" if i != "random" else "" for i in table["init"]],
        "verdict": table["verdict"].where(computed, "–"),
        "note": ["; ".join(n for n in (_chance_note(r), r["reason"]) if n) for r in table.to_dict("records")],
    })


def _chance_note(line: dict) -> str:
    """What makes a gap table's ``line`` *not trained enough*: each model at chance, its metric minus the
    trivial predictor's with the interval (empty for the other verdicts)."""
    if not str(line["verdict"]).startswith(AT_CHANCE):
        return ""
    parts = [f"{line[side]} − trivial predictor: {line[f'{side}_above_chance']:+.3f} "
             f"[{line[f'{side}_above_chance_low']:+.3f}, {line[f'{side}_above_chance_high']:+.3f}]"
             for side in ("cnn", "vit") if not line[f"{side}_above_chance_low"] > 0]
    return (f"{'; '.join(parts)} in {line['metric'].replace('_', ' ')} (an interval that does not lie above 0: "
            f"not shown to do better than predicting the majority class, or a constant score, on the same test images)")


# --- what the book's pages show: tables that fit the page, the settings that could not run, the findings ---

@dataclass
class PageTable:
    """A table as a page shows it (``medvit.page.table``): formatted cells, no index, a ``caption`` under it
    (what the columns hold), and the notes that stand under it instead of long repeated cells (``notes[i]``
    is marked ``[i+1]`` in its cells)."""

    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    caption: str = ""

    def note(self, text: str) -> str:
        """The marker of ``text`` among the notes (added once): ``[1]``, ``[2]`` …"""
        if text not in self.notes:
            self.notes.append(text)
        return f"[{self.notes.index(text) + 1}]"

    def _repr_html_(self) -> str:  # in Jupyter, as in the book
        from ..page import table  # lazy: medvit.page imports torch, these tables need none

        return table(self)._repr_html_()


def common_text(texts) -> str:
    """What ``texts`` say in common, word by word, with ``…`` where they differ (``difflib``): the reason
    several models could not run, once."""
    texts = list(dict.fromkeys(str(t) for t in texts))
    if len(texts) == 1:
        return texts[0]
    words = texts[0].split()
    keep = [True] * len(words)
    for other in texts[1:]:
        matcher = difflib.SequenceMatcher(a=words, b=other.split(), autojunk=False)
        same = [False] * len(words)
        for block in matcher.get_matching_blocks():
            same[block.a:block.a + block.size] = [True] * block.size
        keep = [k and s for k, s in zip(keep, same)]
    out = []
    for word, k in zip(words, keep):
        if k:
            out.append(word)
        elif not out or out[-1] != "…":
            out.append("…")
    return " ".join(out)


def _names(values, names=None) -> str:
    values = list(dict.fromkeys(values))
    return ", ".join((names or {}).get(v, v) for v in values)


def _similar(a: str, b: str, threshold: float = 0.6) -> bool:
    return difflib.SequenceMatcher(a=a.split(), b=b.split(), autojunk=False).ratio() >= threshold


def unavailable_summary(rows: pd.DataFrame, what: str = "runs") -> list[tuple[str, str]]:
    """The settings that did not run, once per init, status and kind of reason: (``"ImageNet init,
    unavailable: resnet18, deit_tiny (fine-tuning, k-NN; 4 runs)"``, the reason those runs share, with ``…``
    where they differ: ``common_text``). Reasons of one init that say different things (no weights, no
    checkpoint) make separate lines. Empty when every row is ``ok``."""
    if rows.empty or "status" not in rows:
        return []
    bad = rows[rows["status"] != "ok"]
    out = []
    for (init, status), g in bad.groupby(["init", "status"], sort=False):
        clusters: list[list[int]] = []  # positions in g, grouped by similar reasons
        reasons = g["reason"].astype(str).tolist()
        for i, reason in enumerate(reasons):
            home = next((c for c in clusters if _similar(reasons[c[0]], reason)), None)
            if home is None:
                clusters.append([i])
            else:
                home.append(i)
        for cluster in clusters:
            part = g.iloc[cluster]
            experiments = _names(part["experiment"], EVALUATION_NAMES) if "experiment" in part else ""
            detail = f"{experiments}; " if experiments else ""
            head = (f"{INIT_NAMES.get(init, init)} init, {status}: {_names(part['model'])} "
                    f"({detail}{len(part)} {what if len(part) > 1 else what.rstrip('s')})")
            out.append((head, common_text(reasons[i] for i in cluster)))
    return out


def ran_verdicts(verdicts: pd.DataFrame, rows: pd.DataFrame | None) -> pd.DataFrame:
    """The lines of a verdict table (``verdict_table``) whose two models both have an ``ok`` run in
    ``rows`` (the others did not run: the page lists them once, with the reason); all lines without rows."""
    if rows is None or verdicts.empty:
        return verdicts
    ok = rows[rows["status"] == "ok"]
    ran = {(EVALUATION_NAMES.get(e, e), d, INIT_NAMES.get(i, i), m)
           for e, d, i, m in zip(ok["experiment"], ok["dataset"], ok["init"], ok["model"])}
    keep = [all((r["evaluation"], r["dataset"], r["init"], m) in ran for m in r["CNN − ViT"].split(" − "))
            for r in verdicts.to_dict("records")]
    return verdicts[keep]


def verdict_page_table(verdicts: pd.DataFrame, rows: pd.DataFrame | None = None) -> PageTable:
    """A verdict table (``verdict_table``) narrowed to the page: the comparisons that ran (given ``rows``:
    ``ran_verdicts``), the gap and its interval in one cell, the claim left to the text above it, the notes
    under it; given ``rows``, beside each verdict whether the fine-tuning runs had converged
    (``training_convergence``)."""
    out = PageTable(pd.DataFrame())
    verdicts = ran_verdicts(verdicts, rows)
    if verdicts.empty:
        return out
    pairs = verdicts["CNN − ViT"].nunique() > 1
    convergence = training_convergence(rows) if rows is not None else None
    lines = []
    for r in verdicts.to_dict("records"):
        line = {"evaluation": r["evaluation"], "dataset": r["dataset"], "init": r["init"]}
        if pairs:
            line["CNN − ViT"] = r["CNN − ViT"]
        line["gap (95% CI)"] = "–" if r["gap"] == "–" else f"{r['gap']} {r['95% CI'].replace(' ', NBSP)}"
        line["n"] = r["n"]
        line["verdict"] = r["verdict"] + (f" {out.note(r['note'])}" if r["note"] else "")
        if convergence is not None:
            models = r["CNN − ViT"].split(" − ")
            line["converged"] = "; ".join(convergence[(r["evaluation"], r["dataset"], r["init"], m)]
                                          for m in models if (r["evaluation"], r["dataset"], r["init"], m)
                                          in convergence) or "–"
        lines.append(line)
    out.frame = pd.DataFrame(lines)
    metrics = _names(verdicts["metric"])
    out.caption = (f"gap: {_names(verdicts['CNN − ViT'])} in the target metric ({metrics.replace('_', ' ')}), "
                   f"with its 95% interval; n: test images × repetitions of each model.")
    if convergence is not None:
        out.caption += (" converged: per model, whether fine-tuning's best validation metric rose by at most "
                        f"{MARGIN:g} over the last 20% of epochs (medvit.stats.convergence; the learning curves "
                        "are on this page); k-NN trains nothing.")
    return out


def training_convergence(rows: pd.DataFrame) -> dict[tuple[str, str, str, str], str]:
    """Per (evaluation, dataset, init as the tables name them, model): whether its ``ok`` runs had converged,
    from each row's ``converged`` (``medvit.stats.convergence``): ``"resnet50: converged"``, or the count of
    each state when the repetitions differ (``"deit_small: converged 2/3, still rising 1/3"``); k-NN trains
    nothing (``"resnet50: no training"``). Rows made before the flag was stored count as unknown."""
    out = {}
    if rows is None or rows.empty:
        return out
    ok = rows[rows["status"] == "ok"]
    flags = ok["converged"] if "converged" in ok else pd.Series(CONVERGENCE_UNKNOWN, index=ok.index)
    ok = ok.assign(state=[f if isinstance(f, str) and f else CONVERGENCE_UNKNOWN for f in flags])
    for (experiment, dataset, init, model), g in ok.groupby(["experiment", "dataset", "init", "model"], sort=False):
        key = (EVALUATION_NAMES.get(experiment, experiment), dataset, INIT_NAMES.get(init, init), model)
        if experiment != "finetune":
            out[key] = f"{model}: no training"
            continue
        counts = g["state"].value_counts(sort=False)
        if len(counts) == 1:
            out[key] = f"{model}: {counts.index[0]}"
        else:
            out[key] = f"{model}: " + ", ".join(f"{state} {n}/{len(g)}" for state, n in counts.items())
    return out


def verdict_findings(verdicts: pd.DataFrame, rows: pd.DataFrame | None = None, margin: float = MARGIN) -> list[str]:
    """What a build found about the paper's two claims, from a verdict table (``verdict_table``; given
    ``rows``, only the comparisons that ran: ``ran_verdicts``): one sentence per claim, counting its verdicts
    and naming the comparisons that were not inconclusive. The numbers are the table's; nothing is typed."""
    verdicts = ran_verdicts(verdicts, rows)
    if verdicts.empty:
        return ["No comparison of a CNN with a ViT ran in this build, so it says nothing about the paper's claims."]
    pairs = verdicts["CNN − ViT"].nunique() > 1
    out = synthetic_caveat(verdicts["dataset"])
    for claim, scratch in ((CLAIM_SCRATCH, True), (f"{CLAIM_PRETRAINED} (|gap| ≤ {margin:g})", False)):
        sub = verdicts[(verdicts["init"] == INIT_NAMES["random"]) == scratch]
        computed = sub[sub["verdict"] != "–"]
        if computed.empty:
            kind = "from-scratch" if scratch else "pretrained (ImageNet or DINO)"
            out.append(f"The paper's claim **{claim}**: not measured by this build — no {kind} comparison "
                       f"ran (the settings that could not run are listed on this page).")
            continue
        parts = []
        for verdict in (SUPPORTED, CONTRADICTED, INCONCLUSIVE):
            hits = computed[computed["verdict"] == verdict]
            if hits.empty:
                continue
            text = f"{verdict}{READING.get((scratch, verdict), '')} in {len(hits)}"
            if verdict != INCONCLUSIVE:
                text += " (" + "; ".join(_comparison(r, pairs, not scratch) for r in hits.to_dict("records")) + ")"
            parts.append(text)
        untrained = computed[computed["verdict"].str.startswith(AT_CHANCE)]
        if not untrained.empty:  # a budget artefact: named, never counted for or against the claim
            parts.append(f"{AT_CHANCE} in {len(untrained)} (" + "; ".join(
                f"{_comparison(r, pairs, not scratch).split(': gap ')[0]}: {r['verdict'].split(': ', 1)[1]}"
                for r in untrained.to_dict("records")) + ")")
        missing = len(sub) - len(computed)
        out.append(f"The paper's claim **{claim}**, over {len(computed)} comparison"
                   f"{'s' if len(computed) > 1 else ''}: " + ", ".join(parts)
                   + (f"; {missing} more could not be computed (see the table's notes)" if missing else "") + ".")
    return out


# What a verdict means, said beside it: (from scratch?, verdict) -> words
READING = {(True, CONTRADICTED): " (the ViT ahead)", (False, CONTRADICTED): " (a gap beyond the margin)"}


def synthetic_caveat(datasets) -> list[str]:
    """The sentence that opens a page's findings when some of its datasets are synthetic (none otherwise)."""
    from ..data.registry import DataError, dataset_facts  # lazy: medvit.data imports torch, these tables need none

    synthetic = []
    for d in dict.fromkeys(datasets):
        try:
            if dataset_facts(d).synthetic:
                synthetic.append(d)
        except DataError:  # a dataset no longer registered: nothing known about it
            pass
    if not synthetic:
        return []
    return [f"**{', '.join(synthetic)} {'is' if len(synthetic) == 1 else 'are'} SYNTHETIC data**: what follows "
            f"tests the code, not the paper's claim."]


def _comparison(r: dict, pairs: bool, with_init: bool) -> str:
    what = f"{r['evaluation']} on {r['dataset']}" + (f", {r['init']}" if with_init else "")
    what += f", {r['CNN − ViT']}" if pairs else ""
    return f"{what}: gap {r['gap']} {r['95% CI']}"
