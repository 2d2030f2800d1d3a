"""From run directories to a report: tidy CSV, learning curves and a score table.

Used by `wsrl experiment` (after its grid has run) and `wsrl plot RUN_DIRS...` (redraws from
logs). Reads only what every fine-tuning run writes (`config.yaml`, `eval.csv`) plus the
harness's `done.json` marker where there is one (experiment name, method name). No JAX;
matplotlib is imported only when a figure is drawn.

Conventions (docs/experiments.md):
- runs are grouped by (task, method); the method is `done.json`'s "method" (the experiment
  spec's name) or else the config's `variant`; every run of a group is one seed;
- the metric is `normalized_score` when every run of the task logs one, else `success_rate`
  when any run of the task ever succeeds, else `return` (or the one asked for);
- seeds are aligned on the evaluation steps they all share;
- final score = the metric at the last shared evaluation step; AUC = the trapezoid-rule area
  under the curve divided by the step range (the mean score over training; undefined for
  fewer than two evaluation steps); fine-tuning AUC = the same over the fine-tuning phase
  only, from the method's warmup end (its value there linearly interpolated between the
  evaluations around it) to the last step, so that no method is scored on the steps where it
  acts with the frozen pre-trained policy; all reported as mean +- standard error over seeds
  (sample std with ddof=1 / sqrt(n); undefined for one seed).
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import sys
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import yaml

from envs.atomic_files import atomic_write_bytes

METRICS = ("auto", "normalized_score", "success_rate", "return")
DONE_FILE = "done.json"
TIDY_KEYS = ("experiment", "task", "method", "variant", "seed", "warmup_steps", "step")
# Optional tidy column (packages written before it lack it): the pre-training run a
# fine-tuning run started from (its directory name; empty: none), so that comparisons can be
# paired by seed exactly where two methods share each seed's pre-training.
PRETRAINING_KEY = "pretraining"
# Optional tidy column too: that pre-training's readiness verdict ("settled", "still moving",
# "unmeasured"; learner/readiness.py), empty when unknown (no pre-training, or one from before
# readiness was recorded). `wsrl evidence` decides no claim from an unsettled pre-training.
READINESS_KEY = "pretraining_readiness"
RESULTS_CSV, DIAGNOSTICS_CSV = "results.csv", "diagnostics.csv"


@dataclass
class RunRecord:
    """One fine-tuning run's evaluation log and the facts that place it in the grid."""

    run_dir: Path
    experiment: str
    task: str
    method: str
    variant: str
    seed: int
    warmup_steps: int
    rows: list[dict[str, str]]  # eval.csv, raw strings, in file order
    diagnostics: list[dict[str, str]] = dataclasses.field(default_factory=list)  # diagnostics.csv, if any
    pretraining: str = ""  # the pre-training run directory's name ("" when none or unknown)
    pretraining_readiness: str = ""  # its readiness verdict ("" when none or unknown)

    def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of `metric`, rows without a value dropped, sorted by step."""
        pairs = sorted(
            (int(float(r["step"])), float(r[metric])) for r in self.rows if r.get(metric) not in (None, "")
        )
        steps = np.array([s for s, _ in pairs], dtype=np.int64)
        values = np.array([v for _, v in pairs], dtype=np.float64)
        return steps, values

    def has_metric(self, metric: str) -> bool:
        return any(r.get(metric) not in (None, "") for r in self.rows)


@dataclass
class GroupSummary:
    """Mean and standard error over the seeds of one (task, method)."""

    task: str
    method: str
    metric: str
    seeds: list[int]
    steps: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    final_mean: float
    final_se: float
    auc_mean: float
    auc_se: float
    finetune_auc_mean: float
    finetune_auc_se: float
    warmup_steps: list[int]  # distinct values over the seeds
    # Per seed, in the order of `seeds`: the values the means above are taken over.
    seed_final: list[float] = dataclasses.field(default_factory=list)
    seed_auc: list[float] = dataclasses.field(default_factory=list)
    seed_finetune_auc: list[float] = dataclasses.field(default_factory=list)
    seed_pretraining: list[str] = dataclasses.field(default_factory=list)
    seed_readiness: list[str] = dataclasses.field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.seeds)


# ----------------------------------------------------------------------------------------
# Reading runs.


def read_run(run_dir: str | Path) -> RunRecord:
    """Reads one fine-tuning run directory (config.yaml, eval.csv, optional done.json)."""
    path = Path(run_dir)
    config_file, eval_file = path / "config.yaml", path / "eval.csv"
    for needed in (config_file, eval_file):
        if not needed.is_file():
            raise FileNotFoundError(f"run directory {str(path)!r} has no {needed.name}; is it a fine-tuning run directory?")
    config = yaml.safe_load(config_file.read_text()) or {}
    done = {}
    if (path / DONE_FILE).is_file():
        done = json.loads((path / DONE_FILE).read_text())
    with open(eval_file, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "step" not in rows[0]:
        raise ValueError(f"{eval_file}: no evaluation rows (expected a 'step' column and at least one row)")
    diagnostics: list[dict[str, str]] = []
    if (path / DIAGNOSTICS_CSV).is_file():
        with open(path / DIAGNOSTICS_CSV, newline="") as f:
            diagnostics = list(csv.DictReader(f))
    return RunRecord(
        run_dir=path,
        experiment=str(done.get("experiment", "")),
        task=str(config.get("task", "")),
        method=str(done.get("method") or config.get("variant", "")),
        variant=str(config.get("variant", "")),
        seed=int(config.get("seed", 0)),
        warmup_steps=_warmup_end(config.get("finetune") or {}),
        rows=rows,
        pretraining=Path(str((config.get("finetune") or {}).get("checkpoint") or "")).parent.name,
        pretraining_readiness=_readiness_of((config.get("finetune") or {}).get("checkpoint")),
        diagnostics=diagnostics,
    )


def _readiness_of(checkpoint) -> str:
    """The readiness verdict of the pre-training that wrote `checkpoint` (from its run
    directory's summary.json), or "" when there is none or it recorded none."""
    if not checkpoint:
        return ""
    summary = Path(str(checkpoint)).parent / "summary.json"
    try:
        return str(((json.loads(summary.read_text()) or {}).get("readiness") or {}).get("verdict") or "")
    except (OSError, ValueError):
        return ""


def read_results(directory: str | Path) -> list[RunRecord]:
    """The runs of a results package: `results.csv` (and `diagnostics.csv`, if present) as
    `write_report` wrote them, one record per (task, method, seed). Everything the report
    shows is computed from these files alone, so a committed package regenerates its tables
    and figures without the run directories."""
    path = Path(directory)
    results = path / RESULTS_CSV
    if not results.is_file():
        raise FileNotFoundError(f"{str(path)!r} has no {RESULTS_CSV}; is it a results package (`wsrl plot` or `wsrl experiment` output)?")
    records: dict[tuple[str, str, int], RunRecord] = {}

    def rows_of(file: Path) -> list[dict[str, str]]:
        with open(file, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = [k for k in TIDY_KEYS if rows and k not in rows[0]]
        if missing:
            raise ValueError(f"{file}: missing column {missing[0]!r} (expected {', '.join(TIDY_KEYS)} first)")
        return rows

    for row in rows_of(results):
        key = (row["task"], row["method"], int(row["seed"]))
        if key not in records:
            records[key] = RunRecord(
                run_dir=path / f"{row['task']}/{row['method']}/seed{row['seed']}", experiment=row["experiment"], task=row["task"],
                method=row["method"], variant=row["variant"], seed=int(row["seed"]), warmup_steps=int(row["warmup_steps"]), rows=[],
                pretraining=row.get(PRETRAINING_KEY) or "", pretraining_readiness=row.get(READINESS_KEY) or "",
            )
        records[key].rows.append({k: v for k, v in row.items() if k == "step" or k not in (*TIDY_KEYS, PRETRAINING_KEY, READINESS_KEY)})
    if (path / DIAGNOSTICS_CSV).is_file():
        for row in rows_of(path / DIAGNOSTICS_CSV):
            record = records.get((row["task"], row["method"], int(row["seed"])))
            if record is not None:
                record.diagnostics.append({k: v for k, v in row.items() if k == "step" or k not in (*TIDY_KEYS, PRETRAINING_KEY, READINESS_KEY)})
    if not records:
        raise ValueError(f"{results}: no rows")
    return list(records.values())


def _warmup_end(finetune: dict) -> int:
    """The env step where warmup ends: finetune.warmup_steps, except for a "dataset" warmup
    (offline transitions fill the buffer before the first env step: no warmup env steps)."""
    if finetune.get("warmup") == "dataset":
        return 0
    return int(finetune.get("warmup_steps", 0))


def _is_pretrain(path: Path) -> bool:
    done = path / DONE_FILE
    if done.is_file():
        try:
            return json.loads(done.read_text()).get("phase") == "pretrain"
        except (OSError, ValueError):
            return False
    return False


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories under `paths`: a path holding config.yaml and eval.csv is a run (not
    searched further); any other directory is searched recursively, skipping runs set aside
    (`*.partial-N`) and the harness's pre-training runs."""
    found: list[Path] = []

    def is_run(p: Path) -> bool:
        return (p / "config.yaml").is_file() and (p / "eval.csv").is_file()

    def walk(p: Path) -> None:
        if ".partial-" in p.name or _is_pretrain(p):
            return
        if is_run(p):
            found.append(p)
            return
        for child in sorted(c for c in p.iterdir() if c.is_dir()):
            walk(child)

    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise FileNotFoundError(f"{str(p)!r} is not a directory")
        if is_run(p):
            found.append(p)
        else:
            before = len(found)
            walk(p)
            if len(found) == before:
                raise FileNotFoundError(f"no run directories (config.yaml + eval.csv) under {str(p)!r}")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


# ----------------------------------------------------------------------------------------
# The math.


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std, ddof=1, over sqrt(n)); the standard
    error is NaN for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size < 2:
        return float(x.mean()), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def normalized_auc(steps: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid-rule area under (steps, values) divided by the step range: the curve's mean
    height. NaN with fewer than two distinct steps (one point is not a curve)."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if s.size < 2 or s[-1] == s[0]:
        return math.nan
    area = float(np.sum((v[1:] + v[:-1]) / 2.0 * np.diff(s)))
    return area / float(s[-1] - s[0])


def finetune_auc(steps: Sequence[float], values: Sequence[float], warmup_end: float) -> float:
    """`normalized_auc` of the curve from `warmup_end` on: the fine-tuning phase only. The
    value at `warmup_end` is interpolated linearly between the evaluations around it; NaN
    when fewer than two points remain (e.g. no evaluation after the warmup)."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if s.size == 0 or warmup_end >= s[-1]:
        return math.nan
    if warmup_end <= s[0]:
        return normalized_auc(s, v)
    after = s > warmup_end
    start = float(np.interp(warmup_end, s, v))
    return normalized_auc(np.concatenate([[warmup_end], s[after]]), np.concatenate([[start], v[after]]))


def choose_metric(records: Sequence[RunRecord], requested: str = "auto") -> str:
    """normalized_score if every run logs it, else success_rate if any run ever succeeds,
    else return; or `requested` when it is not "auto"."""
    if requested not in METRICS:
        raise ValueError(f"metric: got {requested!r}, expected one of {', '.join(METRICS)}")
    if requested != "auto":
        missing = [str(r.run_dir) for r in records if not r.has_metric(requested)]
        if missing:
            raise ValueError(f"metric {requested!r} is not logged in {missing[0]}/eval.csv")
        return requested
    if records and all(r.has_metric("normalized_score") for r in records):
        return "normalized_score"
    for r in records:
        _, values = r.curve("success_rate") if r.has_metric("success_rate") else (None, np.zeros(0))
        if np.any(values > 0):
            return "success_rate"
    return "return"


def summarize_group(records: Sequence[RunRecord], metric: str) -> GroupSummary:
    """Aligns the seeds of one (task, method) on their shared steps and aggregates them."""
    first = records[0]
    curves = [r.curve(metric) for r in records]
    shared = set(curves[0][0].tolist())
    for steps, _ in curves[1:]:
        shared &= set(steps.tolist())
    if not shared:
        raise ValueError(f"{first.task} / {first.method}: the seeds share no evaluation step; cannot aggregate")
    grid = np.array(sorted(shared), dtype=np.int64)
    if any(len(steps) != len(grid) for steps, _ in curves):
        print(
            f"warning: {first.task} / {first.method}: seeds were evaluated at different steps; "
            f"using the {len(grid)} steps they share (up to {int(grid[-1])})",
            file=sys.stderr,
        )
    aligned = np.stack([values[np.isin(steps, grid)] for steps, values in curves])  # (seeds, steps)
    per_seed_final = aligned[:, -1]
    per_seed_auc = [normalized_auc(grid, row) for row in aligned]
    per_seed_finetune_auc = [finetune_auc(grid, row, r.warmup_steps) for r, row in zip(records, aligned)]
    n = aligned.shape[0]
    mean = aligned.mean(axis=0)
    se = aligned.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full(len(grid), math.nan)
    final_mean, final_se = mean_se(per_seed_final)
    auc_mean, auc_se = mean_se(per_seed_auc)
    finetune_auc_mean, finetune_auc_se = mean_se(per_seed_finetune_auc)
    return GroupSummary(
        task=first.task,
        method=first.method,
        metric=metric,
        seeds=[r.seed for r in records],
        steps=grid,
        mean=mean,
        se=se,
        final_mean=final_mean,
        final_se=final_se,
        auc_mean=auc_mean,
        auc_se=auc_se,
        finetune_auc_mean=finetune_auc_mean,
        finetune_auc_se=finetune_auc_se,
        warmup_steps=sorted({r.warmup_steps for r in records}),
        seed_final=[float(v) for v in per_seed_final],
        seed_auc=[float(v) for v in per_seed_auc],
        seed_finetune_auc=[float(v) for v in per_seed_finetune_auc],
        seed_pretraining=[r.pretraining for r in records],
        seed_readiness=[r.pretraining_readiness for r in records],
    )


def summarize(records: Sequence[RunRecord], metric: str = "auto") -> dict[str, list[GroupSummary]]:
    """{task: [one summary per method]}, tasks and methods in alphabetical order."""
    by_task: dict[str, dict[str, list[RunRecord]]] = {}
    for r in records:
        by_task.setdefault(r.task, {}).setdefault(r.method, []).append(r)
    result = {}
    for task in sorted(by_task):
        methods = by_task[task]
        task_metric = choose_metric([r for rs in methods.values() for r in rs], metric)
        groups = []
        for method in sorted(methods):
            runs = sorted(methods[method], key=lambda r: r.seed)
            seeds = [r.seed for r in runs]
            if len(set(seeds)) != len(seeds):
                dup = sorted({s for s in seeds if seeds.count(s) > 1})
                dirs = [str(r.run_dir) for r in runs if r.seed in dup]
                raise ValueError(f"{task} / {method}: seed {dup[0]} appears in more than one run: {', '.join(dirs)}")
            groups.append(summarize_group(runs, task_metric))
        result[task] = groups
    return result


# ----------------------------------------------------------------------------------------
# Outputs.


def results_csv(records: Sequence[RunRecord], experiment: str, source: str = "rows") -> str:
    """Tidy CSV: one row per (run, logged step): experiment, task, method, variant, seed,
    warmup_steps, step and every column of the run's log (`source` "rows": eval.csv,
    "diagnostics": diagnostics.csv), sorted by task, method, seed, step."""
    columns: list[str] = []
    for r in records:
        for row in getattr(r, source):
            columns += [c for c in row if c not in columns and c not in (*TIDY_KEYS, PRETRAINING_KEY, READINESS_KEY)]
    out = io.StringIO()
    writer = csv.DictWriter(out, [*TIDY_KEYS, PRETRAINING_KEY, READINESS_KEY, *columns], lineterminator="\n")
    writer.writeheader()
    for r in sorted(records, key=lambda r: (r.task, r.method, r.seed)):
        for row in sorted(getattr(r, source), key=lambda row: float(row["step"])):
            tidy = {"experiment": r.experiment or experiment, "task": r.task, "method": r.method, "variant": r.variant,
                    "seed": r.seed, "warmup_steps": r.warmup_steps, PRETRAINING_KEY: r.pretraining,
                    READINESS_KEY: r.pretraining_readiness}
            tidy.update({c: row.get(c, "") for c in ["step"] + columns})
            writer.writerow(tidy)
    return out.getvalue()


def _pm(mean: float, se: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(se) else f"{mean:.3f} ± {se:.3f}"


def summary_markdown(summaries: dict[str, list[GroupSummary]], experiment: str) -> str:
    """The score table: one row per task x method."""
    lines = [
        f"# {experiment}" if experiment else "# Results",
        "",
        "Final: the metric at the last evaluation step the seeds share. AUC: the area under the "
        "evaluation curve (trapezoid rule) divided by the step range, i.e. the mean score over "
        "training (n/a from fewer than two evaluations). Fine-tuning AUC: the same from the "
        "method's warmup end on, so the steps acted with the frozen pre-trained policy count "
        "for no method. All are mean ± standard error over seeds (sample std, ddof=1, / sqrt(n)).",
        "",
        "| task | method | metric | steps | warmup | final | AUC | fine-tuning AUC | seeds |",
        "| --- | --- | --- | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for task, groups in summaries.items():
        for g in groups:
            warmup = "/".join(str(w) for w in g.warmup_steps)
            lines.append(
                f"| {task} | {g.method} | {g.metric} | {int(g.steps[-1])} | {warmup} | "
                f"{_pm(g.final_mean, g.final_se)} | {_pm(g.auc_mean, g.auc_se)} | "
                f"{_pm(g.finetune_auc_mean, g.finetune_auc_se)} | {g.n} |"
            )
    return "\n".join(lines) + "\n"


def plot_task(task: str, groups: Sequence[GroupSummary], all_methods: Sequence[str] = ()) -> bytes:
    """PNG of one task's learning curves: a line per method (mean over seeds) with a band of
    +- one standard error, and a dashed vertical line at each method's warmup end."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

    methods = list(all_methods) or [g.method for g in groups]
    palette = [f"C{i}" for i in range(10)]
    fig = Figure(figsize=(7.0, 4.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    warmups: dict[int, list[str]] = {}  # warmup end -> colours of the methods that have it
    for g in groups:
        color = palette[methods.index(g.method) % len(palette)] if g.method in methods else None
        # Markers where a curve has few points, so a one- or two-evaluation run is visible.
        marker = "o" if len(g.steps) <= 25 else None
        (line,) = ax.plot(g.steps, g.mean, label=f"{g.method} (n={g.n})", color=color, lw=1.8, marker=marker, ms=4)
        color = line.get_color()
        if g.n > 1:
            ax.fill_between(g.steps, g.mean - g.se, g.mean + g.se, color=color, alpha=0.2, lw=0)
        for w in g.warmup_steps:
            if w > 0:
                warmups.setdefault(w, []).append(color)
    for w, colors in sorted(warmups.items()):
        # One method's warmup in its colour; a warmup end several methods share in grey.
        ax.axvline(w, color=colors[0] if len(colors) == 1 else "0.35", ls="--", lw=1.0, alpha=0.9)
    if warmups:
        ax.plot([], [], color="0.35", ls="--", lw=1.0, label="warmup end")
    metric = groups[0].metric if groups else ""
    ax.set_title(task)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"{metric} (mean ± s.e. over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def write_report(records: Sequence[RunRecord], out_dir: str | Path, experiment: str = "", metric: str = "auto") -> dict[str, Path]:
    """Writes results.csv (and diagnostics.csv when the runs logged diagnostics),
    curves_<task>.png per task and summary.md into `out_dir` (each atomically); returns
    {name: path}. The two CSVs are the results package: `read_results` rebuilds the records
    from them, so the same report can be drawn again from the files alone."""
    if not records:
        raise ValueError("no completed runs to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not experiment:
        names = {r.experiment for r in records if r.experiment}
        experiment = names.pop() if len(names) == 1 else ""
    summaries = summarize(records, metric)
    written: dict[str, Path] = {}
    atomic_write_bytes(out / RESULTS_CSV, results_csv(records, experiment).encode())
    written[RESULTS_CSV] = out / RESULTS_CSV
    if any(r.diagnostics for r in records):
        atomic_write_bytes(out / DIAGNOSTICS_CSV, results_csv(records, experiment, "diagnostics").encode())
        written[DIAGNOSTICS_CSV] = out / DIAGNOSTICS_CSV
    all_methods = sorted({r.method for r in records})
    for task, groups in summaries.items():
        name = f"curves_{_safe_name(task)}.png"
        atomic_write_bytes(out / name, plot_task(task, groups, all_methods))
        written[name] = out / name
    atomic_write_bytes(out / "summary.md", summary_markdown(summaries, experiment).encode())
    written["summary.md"] = out / "summary.md"
    return written


def read_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """The fine-tuning runs under `paths`. Two runs of the same task, method and seed (two
    attempts of one command, say) are told apart by their directory: each is labelled
    "METHOD (DIR)", so both are drawn, side by side."""
    records = [read_run(p) for p in find_runs(paths)]
    keys = collections.Counter((r.task, r.method, r.seed) for r in records)
    for r in records:
        if keys[(r.task, r.method, r.seed)] > 1:
            r.method = f"{r.method} ({_run_label(r.run_dir, [q.run_dir for q in records])})"
    return records


def _run_label(run_dir: Path, all_dirs: Sequence[Path]) -> str:
    """The shortest trailing part of `run_dir`'s path that no other directory shares."""
    parts = run_dir.resolve().parts
    others = [d.resolve().parts for d in all_dirs if d.resolve() != run_dir.resolve()]
    for n in range(1, len(parts) + 1):
        tail = parts[-n:]
        if all(o[-n:] != tail for o in others):
            return "/".join(tail)
    return str(run_dir)


def final_score(run_dir: str | Path) -> Optional[tuple[str, float]]:
    """(metric, value at the last evaluation) of one run, for progress lines; None if it has
    no evaluation yet."""
    try:
        record = read_run(run_dir)
    except (OSError, ValueError):
        return None
    metric = choose_metric([record])
    _, values = record.curve(metric)
    return (metric, float(values[-1])) if len(values) else None
