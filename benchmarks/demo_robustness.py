"""How robust is the README demo? Runs `wsrl run` (the embedded default: pointmass-goal,
pre-training, warmup, fine-tuning) on several seeds with each `agent.critic_matmul_dtype`
setting, one run at a time, and prints one row per run and a summary per dtype: the
pre-training's readiness verdict, the final score, the dip after warmup and its recovery,
the warmup episodes' success rate and the wall time.

    python benchmarks/demo_robustness.py                       # seeds 0-4, float32 and bfloat16
    python benchmarks/demo_robustness.py --seeds 0 1 --dtypes float32 --out /tmp/demo

A run "recovers" when its final score is at least its step-0 (pre-trained) score. The run
directories are kept under --out (default: a fresh temporary directory) for `wsrl plot`.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(run_dir: Path, seed: int, dtype: str, extra: list[str]) -> dict:
    started = time.perf_counter()
    command = [sys.executable, "-m", "learner.cli", "run", "--run-dir", str(run_dir), f"seed={seed}",
               f"agent.critic_matmul_dtype={dtype}", "logging.progress=false", *extra]
    log = run_dir.with_suffix(".log")
    with open(log, "w") as out:
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    if status != 0:
        return {"seed": seed, "dtype": dtype, "error": f"exit status {status} (see {log})", "wall_s": wall}
    summary = json.loads((run_dir / "summary.json").read_text())
    pretrain = json.loads((run_dir / "pretrain" / "summary.json").read_text())
    with open(run_dir / "episode.csv", newline="") as f:
        episodes = list(csv.DictReader(f))
    warmup = [float(e["success"]) for e in episodes if float(e.get("warmup") or 0) == 1]
    return {
        "seed": seed, "dtype": dtype, "readiness": pretrain["readiness"]["verdict"],
        "pretrained": summary["pretrained_score"], "final": summary["final_score"], "dip": summary["dip"],
        "recovery_step": summary["recovery_step"], "warmup_success": sum(warmup) / len(warmup) if warmup else float("nan"),
        "warmup_episodes": len(warmup), "wall_s": wall,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=None, help="where the run directories go (default: a new temporary directory)")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides for every run")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="wsrl-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| dtype | seed | readiness | pre-trained | final | dip | recovered by | warmup success | wall s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for dtype in args.dtypes:
        for seed in args.seeds:
            row = one_run(out / f"demo-{dtype}-seed{seed}", seed, dtype, args.overrides)
            rows.append(row)
            if "error" in row:
                print(f"| {dtype} | {seed} | {row['error']} | | | | | | {row['wall_s']:.0f} |", flush=True)
                continue
            print(f"| {dtype} | {seed} | {row['readiness']} | {row['pretrained']:.0f} | {row['final']:.0f} | {row['dip']:+.0f} | "
                  f"{row['recovery_step'] if row['recovery_step'] is not None else 'never'} | "
                  f"{row['warmup_success']:.0%} of {row['warmup_episodes']} | {row['wall_s']:.0f} |", flush=True)
    print()
    for dtype in args.dtypes:
        done = [r for r in rows if r["dtype"] == dtype and "error" not in r]
        recovered = [r for r in done if r["final"] >= r["pretrained"]]
        walls = [r["wall_s"] for r in done]
        finals = ", ".join(f"{r['final']:.0f}" for r in done)
        print(f"{dtype}: {len(recovered)} of {len(done)} runs end at or above the pre-trained score "
              f"(finals {finals}); median wall time "
              f"{statistics.median(walls) if walls else float('nan'):.0f} s")
    print(f"run directories: {out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
