"""The lab's commands in the `wsrl` command line: `wsrl experiment`, `wsrl plot`, `wsrl evidence`
and `wsrl dataset`.

The lab plugs into `learner.cli` through the `wsrl.commands` entry point (pyproject.toml), so
the learner never imports the lab: a plugin module has `COMMANDS`, `add_commands(sub)` and
`run_command(args)`. Heavy imports stay inside the commands so `wsrl --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from lab import dataset_commands, evidence
from lab.experiment import run_experiment
from lab.spec import SpecError, load_spec
from lab.plots import METRICS

COMMANDS = ("experiment", "plot", "evidence", "dataset")


def add_commands(sub) -> None:
    """Adds `wsrl experiment`, `wsrl plot`, `wsrl evidence` and `wsrl dataset` to the top-level subparsers."""
    p = sub.add_parser("experiment", help="run a grid of methods x seeds x tasks (resumable) and report it")
    p.add_argument("spec", help="experiment spec YAML (see configs/experiments/example.yaml, docs/experiments.md)")
    p.add_argument("--out", default=None, help="experiment directory (default: runs/experiments/<spec name>); rerun with the same one to resume")
    p.add_argument("--jobs", type=int, default=None, help="runs at a time, each a separate process (default: the spec's jobs, else the number of CPU cores)")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and their commands; run nothing")
    p.add_argument("overrides", nargs="*", metavar="section.field=value", help="added to the spec's common overrides for every run")

    p = sub.add_parser("plot", help="learning curves, tidy CSV and score table from run directories")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="fine-tuning run directories, or directories to search for them (e.g. an experiment directory); "
                   "with --from-results, one results package directory")
    p.add_argument("--from-results", action="store_true", help="redraw from a results package (results.csv + diagnostics.csv, as committed under docs/results/) instead of run directories")
    p.add_argument("--out", default=None, help="output directory (default: the directory given when it is one experiment directory, else "
                   "plots/ next to the runs, plots-2/ ... when an earlier report is there)")
    p.add_argument("--metric", choices=METRICS, default="auto", help="y axis and score (default auto: normalized_score, else success_rate, else return)")
    p.add_argument("--name", default="", help="title of summary.md (default: the runs' experiment name)")

    evidence.add_command(sub)
    dataset_commands.add_commands(sub)  # dataset generate, dataset inspect


def default_plot_dir(run_dirs: Sequence[str]) -> Path:
    """Where `wsrl plot` writes without --out: `plots/` next to the runs (inside the one run
    directory given, or in the directory the given ones share), `plots-2/`, `plots-3/`, ...
    when an earlier report is there: a report is never written over silently."""
    paths = [Path(p).resolve() for p in run_dirs]
    base = paths[0] if len(paths) == 1 else Path(os.path.commonpath([str(p) for p in paths]))
    candidate, n = base / "plots", 1
    while (candidate / "summary.md").is_file() or (candidate.exists() and any(candidate.glob("curves_*.png"))):
        n += 1
        candidate = base / f"plots-{n}"
    return candidate


def run_command(args: argparse.Namespace) -> int:
    """Runs one of COMMANDS; returns its exit status."""
    if args.command == "dataset":
        return dataset_commands.run_command(args)
    if args.command == "evidence":
        return evidence.run_command(args)
    if args.command == "experiment":
        if args.jobs is not None and args.jobs < 1:
            raise SpecError(f"--jobs: got {args.jobs}, expected an integer >= 1")
        spec = load_spec(args.spec)
        out = args.out or str(Path("runs") / "experiments" / spec.name)
        result = run_experiment(spec, out, jobs=args.jobs, extra_overrides=args.overrides, dry_run=args.dry_run)
        return 1 if result.failed else 0
    from lab.plots import read_runs, write_report

    out = args.out
    if out is None:
        single = Path(args.run_dirs[0])
        out = str(single) if len(args.run_dirs) == 1 and (single / "spec.yaml").is_file() else str(default_plot_dir(args.run_dirs))
    elif (Path(out) / "summary.md").is_file() and not args.from_results:
        print(f"[wsrl plot] --out {out}: replacing the report there", flush=True)
    if args.from_results:
        from lab.plots import read_results

        if len(args.run_dirs) != 1:
            raise ValueError(f"--from-results: got {len(args.run_dirs)} directories, expected one results package")
        if args.out is None:
            out = args.run_dirs[0]
        records = read_results(args.run_dirs[0])
    else:
        records = read_runs(args.run_dirs)
    written = write_report(records, out, args.name, args.metric)
    print(f"[wsrl plot] {len(records)} runs -> " + ", ".join(str(p) for p in written.values()))
    print((Path(out) / "summary.md").read_text().rstrip())
    return 0
