"""The experiment harness (`wsrl experiment`, `wsrl plot`): grid expansion and shared
pre-training, resume, the aggregation math, the report files, strict spec parsing, and one
real pre-train -> fine-tune chain through subprocesses."""

import csv
import io
import json
import math
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from learner.cli import build_parser, main, parse_args
from learner.config import ConfigError, dump_yaml, load_config
from lab.experiment import plan_experiment, run_experiment
from lab.spec import SpecError, load_spec, parse_spec
from lab.plots import finetune_auc, mean_se, normalized_auc, read_results, read_runs, summarize, write_report

TINY = [
    "agent.critic_hidden_dims=[16,16]",
    "agent.actor_hidden_dims=[16,16]",
    "agent.critic_ensemble_size=2",
    "agent.batch_size=16",
    "agent.cql_num_actions=2",
    "pretrain.num_steps=20",
    "pretrain.eval_every=0",
    "pretrain.eval_episodes=1",
    "pretrain.dataset_episodes=5",
    "finetune.num_steps=60",
    "finetune.warmup_steps=20",
    "finetune.eval_every=20",
    "finetune.eval_episodes=1",
    "logging.tensorboard=false",
    "logging.progress=false",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def spec(**changes):
    data = {"name": "t", "family": "pointmass", "seeds": [0, 1], "methods": ["wsrl", "sac"], "overrides": list(TINY)}
    data.update(changes)
    return parse_spec(data)


class FakeRunner:
    """Stands in for `wsrl pretrain|finetune` processes: checks the command line resolves, then
    writes what a run writes (config.yaml, eval.csv, checkpoint.ckpt) with made-up scores."""

    def __init__(self, fail=()):
        self.calls = []
        self.fail = set(fail)
        self.lock = threading.Lock()

    def __call__(self, argv, log_path):
        args = build_parser().parse_args(argv)
        config = load_config(args.config, args.variant, args.overrides)
        run_dir = Path(args.run_dir)
        with self.lock:
            self.calls.append((args.command, config.variant, config.seed, str(run_dir)))
        log_path.write_text("fake run\n")
        (run_dir / "config.yaml").write_text(dump_yaml(config))
        if (args.command, config.variant, config.seed) in self.fail:
            return 1
        if args.command == "finetune" and config.finetune.checkpoint:
            assert Path(config.finetune.checkpoint).is_file(), "fine-tuning started before its pre-training finished"
        bonus = 0.5 if config.variant == "wsrl" else 0.0
        steps = range(0, config.finetune.num_steps + 1, config.finetune.eval_every)
        with open(run_dir / "eval.csv", "w") as f:
            f.write("step,return,success_rate,normalized_score\n")
            for s in steps:
                score = bonus + 0.1 * config.seed + s / 1000
                f.write(f"{s},{score * 10},{min(score, 1.0)},{score}\n")
        (run_dir / "checkpoint.ckpt").write_bytes(b"fake")
        return 0


def test_grid_expands_to_runs_and_shares_one_pretraining_per_seed(tmp_path):
    plan = plan_experiment(spec(methods=["wsrl", "calql", "sac"]), tmp_path)
    assert [(j.task, j.method, j.seed) for j in plan.finetunes] == [
        ("pointmass-goal", m, s) for m in ("wsrl", "calql", "sac") for s in (0, 1)
    ]
    # wsrl and calql both pre-train CalQL with the same agent section: one pre-training per seed.
    assert [(j.seed, j.method) for j in plan.pretrains] == [(0, "wsrl,calql"), (1, "wsrl,calql")]
    by = {(j.method, j.seed): j for j in plan.finetunes}
    for seed in (0, 1):
        assert by["wsrl", seed].pretrain is plan.pretrains[seed] and by["calql", seed].pretrain is plan.pretrains[seed]
        assert by["sac", seed].pretrain is None
        ckpt = plan.pretrains[seed].run_dir / "checkpoint.ckpt"
        assert f"finetune.checkpoint={ckpt}" in by["wsrl", seed].argv(plan.family)
        assert not any(a.startswith("finetune.checkpoint") for a in by["sac", seed].argv(plan.family))
    # Every command line parses and resolves to the planned run.
    for job in plan.jobs:
        args = build_parser().parse_args(job.argv(plan.family))
        config = load_config(args.config, args.variant, args.overrides)
        assert (args.command, config.task, config.seed, config.finetune.num_steps) == (job.phase, "pointmass-goal", job.seed, 60)
    # Tasks multiply the grid; pre-training is per task.
    plan = plan_experiment(spec(tasks=["pointmass-goal", "pointmaze-umaze"]), tmp_path)
    assert len(plan.finetunes) == 8 and sorted((j.task, j.seed) for j in plan.pretrains) == [
        ("pointmass-goal", 0), ("pointmass-goal", 1), ("pointmaze-umaze", 0), ("pointmaze-umaze", 1)
    ]
    # A different agent section (iql's learning rates) is a different pre-training.
    plan = plan_experiment(spec(methods=["wsrl", "iql"], seeds=[0]), tmp_path)
    assert len(plan.pretrains) == 2


def test_budget_and_method_overrides_reach_the_runs(tmp_path):
    s = spec(
        methods={"short": {"variant": "wsrl", "overrides": {"finetune.warmup_steps": 5}}, "sac": None},
        budget={"pretrain_steps": 7, "finetune_steps": 40},
        seeds=1,
    )
    assert s.seeds == (0,)
    plan = plan_experiment(s, tmp_path)
    configs = {}
    for job in plan.jobs:
        args = build_parser().parse_args(job.argv(plan.family))
        configs[job.phase, job.method] = load_config(args.config, args.variant, args.overrides)
    assert configs["finetune", "short"].finetune.warmup_steps == 5
    assert configs["finetune", "sac"].finetune.num_steps == 40
    assert configs["pretrain", "short"].pretrain.num_steps == 7


def test_resume_skips_done_runs_and_sets_a_partial_run_aside(tmp_path):
    out = tmp_path / "exp"
    runner = FakeRunner()
    result = run_experiment(spec(), out, jobs=2, runner=runner, stream=io.StringIO())
    assert sorted((c[0], c[1], c[2]) for c in runner.calls) == sorted(
        [("pretrain", "wsrl", 0), ("pretrain", "wsrl", 1)] + [("finetune", m, s) for m in ("wsrl", "sac") for s in (0, 1)]
    )
    assert not result.failed and {p.name for p in result.report.values()} == {"results.csv", "curves_pointmass-goal.png", "summary.md"}
    markers = {j.run_dir: j.done_file.stat().st_mtime_ns for j in result.plan.jobs}
    assert all(json.loads((d / "done.json").read_text())["config_hash"] for d in markers)

    # Everything done: nothing runs, no marker is rewritten.
    runner = FakeRunner()
    result = run_experiment(spec(), out, jobs=2, runner=runner, stream=io.StringIO())
    assert runner.calls == [] and len(result.skipped) == 6
    assert {j.run_dir: j.done_file.stat().st_mtime_ns for j in result.plan.jobs} == markers

    # An interrupted fine-tuning run (no marker): set aside with its data, rerun alone.
    victim = out / "runs" / "pointmass-goal" / "wsrl" / "seed1"
    (victim / "done.json").unlink()
    (victim / "notes.txt").write_text("half-written run")
    runner = FakeRunner()
    result = run_experiment(spec(), out, jobs=2, runner=runner, stream=io.StringIO())
    assert [(c[0], c[1], c[2]) for c in runner.calls] == [("finetune", "wsrl", 1)]
    aside = victim.with_name("seed1.partial-1")
    assert result.set_aside == [aside] and (aside / "notes.txt").read_text() == "half-written run"
    assert (victim / "done.json").is_file() and not (victim / "notes.txt").exists()

    # A second interruption keeps the first one's data too.
    (victim / "done.json").unlink()
    run_experiment(spec(), out, jobs=1, runner=FakeRunner(), stream=io.StringIO())
    assert (victim.with_name("seed1.partial-2") / "eval.csv").is_file() and aside.is_dir()

    # A pre-training checkpoint deleted to save space is made again only when a run needs it.
    (result.plan.pretrains[0].run_dir / "checkpoint.ckpt").unlink()
    runner = FakeRunner()
    run_experiment(spec(), out, jobs=2, runner=runner, stream=io.StringIO())
    assert runner.calls == []
    (out / "runs" / "pointmass-goal" / "wsrl" / "seed0" / "done.json").unlink()
    run_experiment(spec(), out, jobs=2, runner=runner, stream=io.StringIO())
    assert [(c[0], c[1], c[2]) for c in runner.calls] == [("pretrain", "wsrl", 0), ("finetune", "wsrl", 0)]


def test_a_failed_pretraining_skips_its_finetuning_and_reruns_next_time(tmp_path):
    out = tmp_path / "exp"
    runner = FakeRunner(fail={("pretrain", "wsrl", 0)})
    result = run_experiment(spec(), out, jobs=1, runner=runner, stream=io.StringIO())
    assert {(j.phase, j.method, j.seed) for j in result.failed} == {("pretrain", "wsrl", 0), ("finetune", "wsrl", 0)}
    assert ("finetune", "wsrl", 0) not in {(c[0], c[1], c[2]) for c in runner.calls}
    assert "wsrl" in (out / "summary.md").read_text()  # the report covers what completed
    assert main(["plot", str(out / "runs"), "--out", str(tmp_path / "p")]) == 0
    runner = FakeRunner()
    result = run_experiment(spec(), out, jobs=1, runner=runner, stream=io.StringIO())
    assert [(c[0], c[1], c[2]) for c in runner.calls] == [("pretrain", "wsrl", 0), ("finetune", "wsrl", 0)]
    assert not result.failed


def test_a_done_run_with_a_different_config_is_refused(tmp_path):
    out = tmp_path / "exp"
    run_experiment(spec(methods=["sac"], seeds=[0]), out, jobs=1, runner=FakeRunner(), stream=io.StringIO())
    changed = spec(methods=["sac"], seeds=[0], overrides=TINY + ["finetune.utd_ratio=2"])
    with pytest.raises(SpecError, match="different config"):
        run_experiment(changed, out, jobs=1, runner=FakeRunner(), stream=io.StringIO())
    # Logging settings are not part of a run's identity.
    run_experiment(spec(methods=["sac"], seeds=[0], overrides=TINY + ["logging.progress=true"]), out, jobs=1,
                   runner=FakeRunner(), stream=io.StringIO())


# ----------------------------------------------------------------------------------------
# Aggregation on synthetic logs.


def write_run(path, method, seed, rows, task="pointmass-goal", warmup=10, experiment="synthetic",
              columns=("step", "normalized_score", "success_rate", "return"), warmup_kind="policy"):
    path.mkdir(parents=True)
    config = {"task": task, "variant": method, "seed": seed, "finetune": {"warmup_steps": warmup, "warmup": warmup_kind}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "done.json").write_text(json.dumps({"phase": "finetune", "experiment": experiment, "method": method}))
    with open(path / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


@pytest.fixture
def synthetic(tmp_path):
    """wsrl: 2 seeds evaluated at steps 0, 10, 30 (uneven spacing); sac: 1 seed."""
    root = tmp_path / "runs"
    write_run(root / "wsrl0", "wsrl", 0, [(0, 0.0, 0, 1), (10, 0.4, 0, 2), (30, 1.0, 1, 3)])
    write_run(root / "wsrl1", "wsrl", 1, [(0, 0.2, 0, 1), (10, 0.6, 1, 2), (30, 0.8, 1, 3)])
    write_run(root / "sac0", "sac", 0, [(0, 0.1, 0, 1), (10, 0.1, 0, 1), (30, 0.3, 0, 1)], warmup=0)
    return root


def test_mean_standard_error_and_normalized_auc_by_hand():
    mean, se = mean_se([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and se == pytest.approx(math.sqrt(7 / 3) / math.sqrt(3))  # ddof=1
    assert math.isnan(mean_se([5.0])[1])
    # (0+0.4)/2*10 + (0.4+1)/2*20 = 16 over the range 30.
    assert normalized_auc([0, 10, 30], [0.0, 0.4, 1.0]) == pytest.approx(16 / 30)
    assert normalized_auc([0, 10, 30], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(normalized_auc([20], [0.7]))  # one point is not a curve


def test_finetune_auc_starts_at_the_warmup_end_by_hand():
    # Warmup ends at 20, between the evaluations at 10 (0.4) and 30 (1.0): interpolated 0.7.
    # Area from 20 to 30: (0.7 + 1.0) / 2 * 10 = 8.5 over the range 10.
    assert finetune_auc([0, 10, 30], [0.0, 0.4, 1.0], 20) == pytest.approx(0.85)
    # A warmup end on an evaluation step: the curve from that step on.
    assert finetune_auc([0, 10, 30], [0.0, 0.4, 1.0], 10) == pytest.approx((0.4 + 1.0) / 2)
    # No warmup: the whole-run AUC.
    assert finetune_auc([0, 10, 30], [0.0, 0.4, 1.0], 0) == pytest.approx(16 / 30)
    # Nothing evaluated after the warmup: undefined.
    assert math.isnan(finetune_auc([0, 10, 30], [0.0, 0.4, 1.0], 30))


def test_summary_of_synthetic_runs_matches_hand_computed_numbers(synthetic):
    summaries = summarize(read_runs([synthetic]))
    sac, wsrl = summaries["pointmass-goal"]  # alphabetical
    assert wsrl.metric == "normalized_score" and wsrl.seeds == [0, 1]
    np.testing.assert_allclose(wsrl.mean, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(wsrl.se, [0.1, 0.1, 0.1])  # |a - b| / 2 for two seeds with ddof=1
    assert wsrl.final_mean == pytest.approx(0.9) and wsrl.final_se == pytest.approx(0.1)
    aucs = [16 / 30, 18 / 30]
    assert wsrl.auc_mean == pytest.approx(np.mean(aucs)) and wsrl.auc_se == pytest.approx(abs(aucs[1] - aucs[0]) / 2)
    assert sac.n == 1 and math.isnan(sac.final_se) and sac.auc_mean == pytest.approx((1 + 4) / 30)
    # wsrl's warmup ends at 10: seed 0 (0.4 + 1.0) / 2, seed 1 (0.6 + 0.8) / 2; sac has none.
    assert wsrl.finetune_auc_mean == pytest.approx((0.7 + 0.7) / 2) and wsrl.finetune_auc_se == pytest.approx(0.0)
    assert sac.finetune_auc_mean == pytest.approx(sac.auc_mean)


def test_metric_falls_back_to_success_rate_then_return(tmp_path):
    write_run(tmp_path / "a", "m", 0, [(0, 0, 1.0), (10, 1, 2.0)], columns=("step", "success_rate", "return"))
    assert summarize(read_runs([tmp_path]))["pointmass-goal"][0].metric == "success_rate"
    write_run(tmp_path / "b" / "r", "m", 0, [(0, 0, 1.0), (10, 0, 2.0)], task="other", columns=("step", "success_rate", "return"))
    assert summarize(read_runs([tmp_path / "b"]))["other"][0].metric == "return"
    assert summarize(read_runs([tmp_path / "b"]), "success_rate")["other"][0].metric == "success_rate"


def test_a_dataset_warmup_has_no_warmup_env_steps_to_mark(tmp_path):
    write_run(tmp_path / "a", "wsrl_dataset_warmup", 0, [(0, 0.1, 0, 1), (10, 0.2, 0, 1)], warmup=50, warmup_kind="dataset")
    write_run(tmp_path / "b", "wsrl", 0, [(0, 0.1, 0, 1), (10, 0.2, 0, 1)], warmup=50)
    assert [g.warmup_steps for g in summarize(read_runs([tmp_path]))["pointmass-goal"]] == [[50], [0]]


def test_report_files_png_table_and_tidy_csv(synthetic, tmp_path):
    written = write_report(read_runs([synthetic]), tmp_path / "report")
    png = written["curves_pointmass-goal.png"].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    table = written["summary.md"].read_text()
    assert table.startswith("# synthetic\n")
    rows = [line for line in table.splitlines() if line.startswith("| pointmass-goal")]
    assert rows == [
        "| pointmass-goal | sac | normalized_score | 30 | 0 | 0.300 | 0.167 | 0.167 | 1 |",
        "| pointmass-goal | wsrl | normalized_score | 30 | 10 | 0.900 ± 0.100 | 0.567 ± 0.033 | 0.700 ± 0.000 | 2 |",
    ]
    with open(written["results.csv"]) as f:
        tidy = list(csv.DictReader(f))
    assert list(tidy[0])[:7] == ["experiment", "task", "method", "variant", "seed", "warmup_steps", "step"]
    assert len(tidy) == 9 and {r["experiment"] for r in tidy} == {"synthetic"}
    assert [(r["method"], r["seed"], r["step"], r["normalized_score"]) for r in tidy[:2]] == [("sac", "0", "0", "0.1"), ("sac", "0", "10", "0.1")]


def test_results_package_regenerates_the_report_from_its_files_alone(synthetic, tmp_path, capsys):
    # One run also logged forgetting diagnostics: they travel in the package's diagnostics.csv.
    with open(synthetic / "wsrl0" / "diagnostics.csv", "w", newline="") as f:
        f.write("step,online_td_error,policy_kl\n0,0.5,0.0\n10,1.5,0.25\n")
    package = tmp_path / "package"
    written = write_report(read_runs([synthetic]), package)
    assert set(written) == {"results.csv", "diagnostics.csv", "summary.md", "curves_pointmass-goal.png"}
    with open(package / "diagnostics.csv") as f:
        diag = list(csv.DictReader(f))
    assert [(r["method"], r["seed"], r["warmup_steps"], r["step"], r["policy_kl"]) for r in diag] == [("wsrl", "0", "10", "0", "0.0"), ("wsrl", "0", "10", "10", "0.25")]
    records = read_results(package)
    assert sorted((r.method, r.seed, r.warmup_steps, len(r.rows)) for r in records) == [("sac", 0, 0, 3), ("wsrl", 0, 10, 3), ("wsrl", 1, 10, 3)]
    # The synthetic run directories are gone: only the package's files remain.
    shutil.rmtree(synthetic)
    assert main(["plot", "--from-results", str(package), "--out", str(tmp_path / "again")]) == 0
    for name in ("results.csv", "diagnostics.csv", "summary.md"):
        assert (tmp_path / "again" / name).read_text() == (package / name).read_text()
    assert "0.700 ± 0.000" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="has no results.csv"):
        read_results(tmp_path)


def test_wsrl_plot_redraws_the_experiment_report(tmp_path, capsys):
    out = tmp_path / "exp"
    run_experiment(spec(methods=["wsrl", "sac", "calql"]), out, jobs=2, runner=FakeRunner(), stream=io.StringIO())
    # A set-aside partial run and the pre-training runs must not be picked up.
    (out / "runs" / "pointmass-goal" / "sac" / "seed0").rename(out / "runs" / "pointmass-goal" / "sac" / "seed0.partial-1")
    run_experiment(spec(methods=["wsrl", "sac", "calql"]), out, jobs=2, runner=FakeRunner(), stream=io.StringIO())
    assert main(["plot", str(out), "--out", str(tmp_path / "replot")]) == 0
    for name in ("summary.md", "results.csv"):
        assert (tmp_path / "replot" / name).read_text() == (out / name).read_text()
    assert (tmp_path / "replot" / "curves_pointmass-goal.png").read_bytes().startswith(PNG_MAGIC)
    rows = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| pointmass-goal")]
    assert [r.split(" | ")[1] for r in rows] == ["calql", "sac", "wsrl"] and all(r.endswith("| 2 |") for r in rows)
    machine = json.loads((out / "machine.json").read_text())
    assert machine["cores"] == os.cpu_count() and machine["versions"]["jax"] and len(machine["commit"]) in (0, 40)
    # One experiment directory: the report is redrawn in place.
    assert main(["plot", str(out)]) == 0
    assert "[wsrl plot] 6 runs" in capsys.readouterr().out


def test_overrides_may_follow_the_options_as_the_docs_show(tmp_path, capsys):
    args = parse_args(["experiment", "s.yaml", "--out", "d", "--jobs", "2", "finetune.eval_every=5", "seed=1"])
    assert (args.spec, args.out, args.jobs, args.overrides) == ("s.yaml", "d", 2, ["finetune.eval_every=5", "seed=1"])
    args = parse_args(["finetune", "agent.actor_lr=1e-4", "--run-dir", "r", "finetune.num_steps=9"])
    assert args.overrides == ["agent.actor_lr=1e-4", "finetune.num_steps=9"] and args.run_dir == "r"
    for bad in (["experiment", "s.yaml", "--out", "d", "--bogus"], ["experiment", "s.yaml", "--out", "d", "stray"], ["status", "h:1", "a.b=1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    assert "unrecognized arguments" in capsys.readouterr().err
    # End to end: the documented form plans runs that carry the override.
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "o", "seeds": [0], "methods": ["sac"], "overrides": TINY}))
    assert main(["experiment", str(spec_file), "--out", str(tmp_path / "out"), "--jobs", "1", "--dry-run", "finetune.eval_every=7"]) == 0
    assert "finetune.eval_every=7" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------
# Strict spec parsing.


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": ["wsrl"]}, "unknown key 'method'"),
        ({"seeds": "three"}, "field 'seeds': got 'three', expected"),
        ({"seeds": [0, 0]}, "field 'seeds'"),
        ({"seeds": 0}, "field 'seeds': got 0"),
        ({"methods": []}, "field 'methods'"),
        ({"methods": {"a": {"variant": "wsrl", "overides": []}}}, "'methods.a': unknown key 'overides'"),
        ({"methods": {"a": {"variant": 3}}}, "field 'methods.a.variant': got 3, expected"),
        ({"methods": {"a": {"overrides": ["finetune.warmup_steps"]}}}, "field 'methods.a.overrides[0]'"),
        ({"budget": {"finetune_steps": 0}}, "field 'budget.finetune_steps': got 0, expected an integer >= 1"),
        ({"budget": {"env_steps": 10}}, "'budget': unknown key 'env_steps'"),
        ({"overrides": ["seed=3"]}, "field 'overrides': got 'seed=3', expected no 'seed' override"),
        ({"jobs": 0}, "field 'jobs': got 0, expected an integer >= 1"),
        ({"metric": "auc"}, "field 'metric': got 'auc', expected one of"),
        ({"tasks": 5}, "field 'tasks'"),
    ],
)
def test_bad_spec_fields_are_named(changes, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec(**changes)


def test_bad_methods_and_overrides_are_named_at_planning(tmp_path):
    with pytest.raises(SpecError, match=r"'methods.nope'.*'variant': 'nope' is not defined"):
        plan_experiment(spec(methods=["nope"]), tmp_path)
    with pytest.raises(ConfigError, match=r"'methods.wsrl'.*unknown config field 'agent.nonsense'"):
        plan_experiment(spec(methods=["wsrl"], overrides=["agent.nonsense=1"]), tmp_path)
    with pytest.raises(SpecError, match="'tasks'.*unknown task 'pointmass-nowhere'"):
        plan_experiment(spec(tasks=["pointmass-nowhere"]), tmp_path)
    with pytest.raises(SpecError, match="'family'"):
        plan_experiment(spec(family="no_such_family"), tmp_path)
    (tmp_path / "s.yaml").write_text("name: x\nseeds: 1\nmethods: [sac]\nbogus: 1\n")
    assert main(["experiment", str(tmp_path / "s.yaml")]) == 2


def test_example_spec_plans(tmp_path):
    example = load_spec(Path(__file__).resolve().parent.parent / "configs" / "experiments" / "example.yaml")
    plan = plan_experiment(example, tmp_path)
    assert len(plan.finetunes) == len(example.methods) * len(example.seeds)
    assert not any(j.pretrain for j in plan.finetunes if j.method == "sac")


# ----------------------------------------------------------------------------------------
# The real thing: `wsrl experiment` runs `wsrl pretrain` then `wsrl finetune` as processes
# (IQL: the pre-training that compiles fastest).


def test_experiment_command_runs_a_real_pretrain_finetune_chain(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "real", "seeds": [0], "methods": ["iql"], "overrides": TINY}))
    out = tmp_path / "exp"
    assert main(["experiment", str(spec_file), "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "[0/2] start       pretrain" in printed and "[1/2] finished    pretrain" in printed
    assert "[1/2] start       finetune" in printed and "[2/2] finished    finetune" in printed
    run = out / "runs" / "pointmass-goal" / "iql" / "seed0"
    assert json.loads((run / "done.json").read_text())["phase"] == "finetune"
    with open(run / "eval.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["0", "20", "40", "60"]
    assert (out / "curves_pointmass-goal.png").read_bytes().startswith(PNG_MAGIC)
    assert "| pointmass-goal | iql | normalized_score | 60 | 20 |" in (out / "summary.md").read_text()
    # Resumed: nothing to do.
    assert main(["experiment", str(spec_file), "--out", str(out), "--jobs", "1"]) == 0
    assert "2 already done, 0 to run" in capsys.readouterr().out


def test_wsrl_plot_writes_next_to_the_runs_never_over_a_report_and_draws_two_attempts_of_one_seed(tmp_path, capsys, monkeypatch):
    def attempt(name: str, scores: list) -> Path:
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"task": "pointmass-goal", "variant": "wsrl", "seed": 0,
                                                         "finetune": {"warmup_steps": 10}}))
        (run / "eval.csv").write_text("step,success_rate,normalized_score\n" + "".join(f"{10 * i},{s / 100},{s}\n" for i, s in enumerate(scores)))
        return run

    first, second = attempt("demo", [100, 0, 100]), attempt("demo-again", [100, 100, 100])
    monkeypatch.chdir(tmp_path)  # nothing may land in the current directory
    assert main(["plot", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'runs' / 'plots'}" in out
    summary = (tmp_path / "runs" / "plots" / "summary.md").read_text()
    assert "wsrl (demo)" in summary and "wsrl (demo-again)" in summary  # both attempts, labelled
    assert main(["plot", str(first)]) == 0  # one run: its own plots/, beside nothing else
    assert (first / "plots" / "summary.md").is_file()
    assert main(["plot", str(first)]) == 0  # again: a new directory, the first report kept
    assert (first / "plots-2" / "summary.md").is_file() and (first / "plots" / "summary.md").is_file()
    assert not (tmp_path / "plots").exists()
    assert main(["plot", str(first), "--out", str(first / "plots")]) == 0  # an explicit --out replaces, and says so
    assert "replacing the report there" in capsys.readouterr().out
