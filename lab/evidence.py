"""The paper's claims decided from committed results packages (`wsrl evidence`).

A results package (`docs/results/<experiment>/`: results.csv, diagnostics.csv, spec.yaml,
machine.json, as `wsrl experiment` writes them) holds every evaluation and diagnostics row of
every seed. From those files alone this module computes the score table, the verdict on each
of the paper's claims and the forgetting figure, and rewrites the generated blocks of a
document (docs/results.md) in place, so that every number there regenerates by one command:

    wsrl evidence docs/results/evidence-pointmass docs/results/evidence-pointmaze --doc docs/results.md
    wsrl evidence ... --doc docs/results.md --check   # exit 1 if the document is stale

Verdicts use only fine-tuning-phase measures: the final score and the fine-tuning AUC (the
mean score from the method's warmup end on; see lab/plots.py), so no method gains from
the steps it acts with the frozen pre-trained policy. For a comparison A vs B, d = mean over
seeds of (A - B) and its standard error: over the per-seed differences when A and B
fine-tuned from the same pre-training run in every seed (paired: the package's `pretraining`
column says which), else sqrt(se_A^2 + se_B^2) (unpaired). A claim "A beats B" is

- supported when d > 2 SE on at least one measure and no measure has d < -2 SE,
- contradicted when d < -2 SE on at least one measure and no measure has d > 2 SE,
- not decided otherwise.

"A matches B" (WSRL vs RLPD, which keeps the offline data) is a non-inferiority claim with a
margin of `MATCH_MARGIN` points: supported when d - 2 SE > -margin on both measures,
contradicted when d + 2 SE < -margin on either, not decided otherwise.

No verdict is given from a pre-training that had not settled (learner/readiness.py): when a
method of the comparison fine-tuned from a pre-training whose readiness verdict (the
package's `pretraining_readiness` column) is not "settled" in some seed, or was not recorded,
the verdict is "not decided" and says why; the differences are still shown.
"""

from __future__ import annotations

import argparse
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from envs.atomic_files import atomic_write_bytes
from lab.plots import GroupSummary, RunRecord, mean_se, read_results, summarize

MATCH_MARGIN = 10.0  # points of normalized score (success rate in percent on the maze tasks)
MEASURES = (("final", "seed_final"), ("fine-tuning AUC", "seed_finetune_auc"))
FORGETTING_METHODS = ("wsrl", "wsrl_no_warmup")
FORGETTING_KEYS = (
    ("offline_q_mean", "Q on held-out offline data"),
    ("offline_td_error", "TD error on held-out offline data"),
    ("kl_policy_offline", "KL(pi_pre || pi) on offline states"),
)
FORGETTING_POINTS = (0, 250, 500, 1000, 2000, 4000)  # fine-tuning steps at which the table reads the curves


@dataclass(frozen=True)
class Comparison:
    """One claim as a comparison of two methods."""

    claim: str
    method: str
    baseline: str
    kind: str  # "beats" or "matches"


COMPARISONS = (
    Comparison("WSRL beats no-retention fine-tuning of its own pre-training", "wsrl", "calql", "beats"),
    Comparison("the warmup is what prevents the collapse", "wsrl", "wsrl_no_warmup", "beats"),
    Comparison("WSRL matches RLPD without retaining data", "wsrl", "rlpd", "matches"),
    Comparison("WSRL beats CalQL that keeps the offline data", "wsrl", "calql_retain", "beats"),
    Comparison("pre-training helps: WSRL beats SAC(fast) from scratch", "wsrl", "sac", "beats"),
)


def shares_pretraining(a: GroupSummary, b: GroupSummary) -> bool:
    """Whether `a` and `b` have the same seeds and fine-tuned from the same pre-training run in
    each of them (then their per-seed differences are paired)."""
    pa, pb = dict(zip(a.seeds, a.seed_pretraining)), dict(zip(b.seeds, b.seed_pretraining))
    return bool(pa) and set(pa) == set(pb) and all(pa[s] and pa[s] == pb[s] for s in pa)


def difference(a: GroupSummary, b: GroupSummary, field: str, paired: bool) -> tuple[float, float]:
    """Mean of a - b over seeds and its standard error (see the module docstring)."""
    if paired:
        by_seed_b = dict(zip(b.seeds, getattr(b, field)))
        shared = [s for s in a.seeds if s in by_seed_b]
        if len(shared) != len(a.seeds) or len(shared) != len(b.seeds):
            raise ValueError(f"{a.method} vs {b.method}: paired comparison needs the same seeds, got {a.seeds} and {b.seeds}")
        by_seed_a = dict(zip(a.seeds, getattr(a, field)))
        return mean_se([by_seed_a[s] - by_seed_b[s] for s in shared])
    mean_a, se_a = mean_se(getattr(a, field))
    mean_b, se_b = mean_se(getattr(b, field))
    return mean_a - mean_b, math.hypot(se_a, se_b)


def verdict(diffs: Sequence[tuple[float, float]], kind: str, margin: float = MATCH_MARGIN) -> str:
    """"supported", "contradicted" or "not decided" from (difference, standard error) pairs,
    one per measure, by the 2-standard-error rule of the module docstring."""
    if any(math.isnan(d) or math.isnan(se) for d, se in diffs):
        return "not decided"
    if kind == "beats":
        ahead = any(d > 2 * se for d, se in diffs)
        behind = any(d < -2 * se for d, se in diffs)
        if ahead and not behind:
            return "supported"
        if behind and not ahead:
            return "contradicted"
        return "not decided"
    if kind == "matches":
        if all(d - 2 * se > -margin for d, se in diffs):
            return "supported"
        if any(d + 2 * se < -margin for d, se in diffs):
            return "contradicted"
        return "not decided"
    raise ValueError(f"comparison kind: got {kind!r}, expected 'beats' or 'matches'")


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _pm(mean: float, se: float, digits: int = 1) -> str:
    return _fmt(mean, digits) if math.isnan(se) else f"{_fmt(mean, digits)} ± {_fmt(se, digits)}"


def scores_block(groups: Sequence[GroupSummary]) -> str:
    """The score table of one task: final, fine-tuning AUC and whole-run AUC, and per seed."""
    lines = [
        "| method | warmup | final | fine-tuning AUC | AUC (whole run) | final per seed | seeds |",
        "| --- | ---: | --- | --- | --- | --- | ---: |",
    ]
    for g in groups:
        per_seed = ", ".join(_fmt(v, 0) for v in g.seed_final)
        warmup = "/".join(str(w) for w in g.warmup_steps)
        lines.append(
            f"| {g.method} | {warmup} | {_pm(g.final_mean, g.final_se)} | {_pm(g.finetune_auc_mean, g.finetune_auc_se)} | "
            f"{_pm(g.auc_mean, g.auc_se)} | {per_seed} | {g.n} |"
        )
    return "\n".join(lines)


def claims_block(groups: Sequence[GroupSummary]) -> str:
    """One row per comparison whose two methods were run: the differences and the verdict."""
    by_method = {g.method: g for g in groups}
    lines = [
        "| claim | comparison | final: difference ± SE | fine-tuning AUC: difference ± SE | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in COMPARISONS:
        if c.method not in by_method or c.baseline not in by_method:
            continue
        a, b = by_method[c.method], by_method[c.baseline]
        paired = shares_pretraining(a, b)
        diffs = [difference(a, b, field, paired) for _, field in MEASURES]
        cells = [_pm(d, se) for d, se in diffs]
        pairing = "paired" if paired else "unpaired"
        unsettled = unsettled_pretraining(a) or unsettled_pretraining(b)
        decided = f"not decided: {unsettled}" if unsettled else verdict(diffs, c.kind)
        lines.append(f"| {c.claim} | {c.method} - {c.baseline} ({pairing}) | {cells[0]} | {cells[1]} | **{decided}** |")
    return "\n".join(lines)


def unsettled_pretraining(group: GroupSummary) -> str:
    """Why `group`'s pre-trainings cannot carry a verdict ("" when they all settled, or when
    it has none): e.g. "wsrl's pre-training still moving in 5 of 5 seeds"."""
    verdicts = [r for p, r in zip(group.seed_pretraining, group.seed_readiness or [""] * len(group.seed_pretraining)) if p]
    if not verdicts:
        return ""
    if not any(verdicts):
        return f"{group.method}'s pre-training readiness not recorded"
    bad = [v or "not recorded" for v in verdicts if v != "settled"]
    if not bad:
        return ""
    kinds = sorted(set(bad))
    return f"{group.method}'s pre-training {' / '.join(kinds)} in {len(bad)} of {len(verdicts)} seeds"


def forgetting_curves(records: Sequence[RunRecord], method: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fine-tuning steps, mean, se) over seeds of diagnostics `key` for `method`, the steps
    counted from the method's warmup end (0 = the first online update), on the steps all
    seeds share."""
    curves = []
    for r in records:
        if r.method != method or not r.diagnostics:
            continue
        pairs = sorted((int(float(row["step"])) - r.warmup_steps, float(row[key])) for row in r.diagnostics
                       if row.get(key) not in (None, "", "nan") and int(float(row["step"])) >= r.warmup_steps)
        curves.append(dict(pairs))
    if not curves:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    shared = sorted(set.intersection(*(set(c) for c in curves)))
    values = np.array([[c[s] for s in shared] for c in curves])  # (seeds, steps)
    n = values.shape[0]
    se = values.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full(len(shared), math.nan)
    return np.array(shared, np.int64), values.mean(axis=0), se


def forgetting_block(records: Sequence[RunRecord]) -> str:
    """The forgetting diagnostics of WSRL and WSRL without warmup at a few fine-tuning steps."""
    header = "| method | measure | " + " | ".join(f"+{p}" for p in FORGETTING_POINTS) + " |"
    lines = [header, "| --- | --- | " + " | ".join("---:" for _ in FORGETTING_POINTS) + " |"]
    for method in FORGETTING_METHODS:
        for key, label in FORGETTING_KEYS:
            steps, mean, se = forgetting_curves(records, method, key)
            if not len(steps):
                continue
            cells = []
            for p in FORGETTING_POINTS:
                hit = np.nonzero(steps == p)[0]
                cells.append(_pm(float(mean[hit[0]]), float(se[hit[0]]), 2) if len(hit) else "-")
            lines.append(f"| {method} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def forgetting_figure(records: Sequence[RunRecord], task: str) -> bytes:
    """PNG: one panel per forgetting measure, WSRL vs WSRL without warmup, mean ± SE over seeds
    against fine-tuning steps (0 = the first online update)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 3.6), dpi=100)
    for i, (key, label) in enumerate(FORGETTING_KEYS):
        ax = fig.add_subplot(1, len(FORGETTING_KEYS), i + 1)
        for j, method in enumerate(FORGETTING_METHODS):
            steps, mean, se = forgetting_curves(records, method, key)
            if not len(steps):
                continue
            ax.plot(steps, mean, color=f"C{j}", lw=1.6, marker="o", ms=2.5, label=method)
            if not np.all(np.isnan(se)):
                ax.fill_between(steps, mean - se, mean + se, color=f"C{j}", alpha=0.2, lw=0)
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("fine-tuning env steps (after the warmup)")
        if key.startswith(("offline_td", "kl")):
            ax.set_yscale("symlog", linthresh=0.1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{task}: forgetting in the first fine-tuning steps (mean ± s.e. over seeds)", fontsize="medium")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def package_blocks(package: str | Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """The generated text blocks ({"<experiment>:<task>:scores|claims|forgetting": markdown})
    and figures ({file name: PNG}) of one results package."""
    records = read_results(package)
    experiment = records[0].experiment or Path(package).name
    blocks: dict[str, str] = {}
    figures: dict[str, bytes] = {}
    for task, groups in summarize(records).items():
        task_records = [r for r in records if r.task == task]
        prefix = f"{experiment}:{task}"
        blocks[f"{prefix}:scores"] = scores_block(groups)
        blocks[f"{prefix}:claims"] = claims_block(groups)
        if any(r.diagnostics for r in task_records if r.method in FORGETTING_METHODS):
            blocks[f"{prefix}:forgetting"] = forgetting_block(task_records)
            figures[f"forgetting-{task}.png"] = forgetting_figure(task_records, task)
    return blocks, figures


# A block's body never contains another marker (a tempered match), and may be empty.
_BLOCK = re.compile(
    r"<!-- generated: (?P<name>\S+) -->\n(?P<body>(?:(?!<!-- (?:generated: |end generated)).)*?)\n?<!-- end generated -->",
    re.DOTALL,
)


def fill_document(text: str, blocks: dict[str, str]) -> tuple[str, list[str]]:
    """`text` with the body of every `<!-- generated: NAME -->` ... `<!-- end generated -->`
    block replaced by blocks[NAME]; returns (new text, names of the blocks that changed).
    A marker naming no known block is an error (a stale or misspelt name)."""
    unknown = [m.group("name") for m in _BLOCK.finditer(text) if m.group("name") not in blocks]
    if unknown:
        raise ValueError(f"document block {unknown[0]!r}: no such generated block; expected one of {sorted(blocks)}")
    changed: list[str] = []

    def replace(m: re.Match) -> str:
        name, body = m.group("name"), blocks[m.group("name")]
        if body != m.group("body"):
            changed.append(name)
        return f"<!-- generated: {name} -->\n{body}\n<!-- end generated -->"

    return _BLOCK.sub(replace, text), changed


def add_command(sub) -> None:
    p = sub.add_parser("evidence", help="score tables, claim verdicts and the forgetting figure from results packages, into a document's generated blocks")
    p.add_argument("packages", nargs="+", metavar="PACKAGE", help="results package directories (results.csv + diagnostics.csv), e.g. docs/results/evidence-pointmass")
    p.add_argument("--doc", required=True, help="markdown document whose <!-- generated: NAME --> blocks are rewritten (e.g. docs/results.md)")
    p.add_argument("--figures", default=None, help="where the figures go (default: the document's directory/results)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the document's blocks differ from the packages")


def run_command(args: argparse.Namespace) -> int:
    blocks: dict[str, str] = {}
    figures: dict[str, bytes] = {}
    for package in args.packages:
        b, f = package_blocks(package)
        blocks.update(b)
        figures.update(f)
    doc = Path(args.doc)
    if not doc.is_file():
        raise FileNotFoundError(f"--doc: {str(doc)!r} does not exist")
    text, changed = fill_document(doc.read_text(), blocks)
    missing = [name for name in blocks if f"<!-- generated: {name} -->" not in text]
    if args.check:
        for name in changed:
            print(f"[wsrl evidence] stale block: {name}")
        print(f"[wsrl evidence] {len(blocks) - len(missing)} blocks checked, {len(changed)} stale")
        return 1 if changed else 0
    atomic_write_bytes(doc, text.encode())
    figure_dir = Path(args.figures) if args.figures else doc.parent / "results"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for name, png in figures.items():
        atomic_write_bytes(figure_dir / name, png)
    print(f"[wsrl evidence] {doc}: {len(changed)} of {len(blocks) - len(missing)} blocks rewritten; figures: "
          + ", ".join(str(figure_dir / n) for n in figures))
    if missing:
        print(f"[wsrl evidence] blocks not in the document (add a marker to show them): {', '.join(missing)}")
    return 0

