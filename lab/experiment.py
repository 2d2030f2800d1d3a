"""The experiment harness behind `wsrl experiment SPEC`: a grid of methods x seeds x tasks, planned, run and reported.

An experiment spec (lab/spec.py; docs/experiments.md, configs/experiments/example.yaml) names
a config family, tasks, seeds, methods (a method = a variant of the family + overrides),
overrides common to every run and a step budget. The harness

1. plans: one fine-tuning run per (task, method, seed), and one pre-training run per distinct
   (task, seed, agent section, pretrain section), shared by every method that fine-tunes from
   it (a method with `finetune.init: scratch`, e.g. `sac` or `rlpd`, needs none, nor does one
   whose overrides name a `finetune.checkpoint`);
2. runs them as separate `wsrl pretrain` / `wsrl finetune` processes, up to `--jobs` at a
   time, each fine-tuning run as soon as its pre-training is done;
3. marks each finished run with `done.json` (written atomically after the process exits
   successfully); a rerun skips marked runs and moves a directory without the marker (an
   interrupted run) aside to `<dir>.partial-<n>` before running it again;
4. writes `results.csv`, `curves_<task>.png` and `summary.md` (lab/plots.py).

Layout of the experiment directory (`--out`, default runs/experiments/<name>):
    spec.yaml                                   the spec as given
    pretrain/<task>/<algorithm>-seed<k>-<key>/  shared pre-training runs (checkpoint.ckpt)
    runs/<task>/<method>/seed<k>/               fine-tuning runs (+ output.log, done.json)
    results.csv  curves_<task>.png  summary.md
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TextIO

import yaml

from envs.atomic_files import atomic_write_bytes
from lab.plots import DONE_FILE
from lab.spec import BUDGET_KEYS, ExperimentSpec, SpecError, parse_overrides
from learner.config import Config, ConfigError, config_path, load_config, pretraining_agent_config, to_dict

REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------
# The plan.


@dataclasses.dataclass
class Job:
    """One `wsrl pretrain` or `wsrl finetune` process of the grid."""

    phase: str  # "pretrain" | "finetune"
    task: str
    seed: int
    variant: str
    method: str  # for pretrain: the methods sharing it, comma-separated
    overrides: tuple[str, ...]
    run_dir: Path
    config_hash: str
    pretrain: Optional["Job"] = None  # the pre-training this fine-tuning waits for
    checkpoint: str = ""  # an explicit checkpoint (no pre-training) or ""
    label: str = ""

    def argv(self, family: str) -> list[str]:
        """The `wsrl` command line (without the program name)."""
        args = [self.phase, "--config", family, "--variant", self.variant, "--run-dir", str(self.run_dir)]
        args += ["logging.progress=false", *self.overrides, f"task={self.task}", f"seed={self.seed}"]
        if self.phase == "finetune" and self.pretrain is not None:
            args.append(f"finetune.checkpoint={self.pretrain.run_dir / 'checkpoint.ckpt'}")
        return args

    @property
    def done_file(self) -> Path:
        return self.run_dir / DONE_FILE


@dataclasses.dataclass
class Plan:
    spec: ExperimentSpec
    out_dir: Path
    family: str
    pretrains: list[Job]
    finetunes: list[Job]

    @property
    def jobs(self) -> list[Job]:
        return self.pretrains + self.finetunes


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def needs_pretraining(config: Config) -> bool:
    """Whether a fine-tuning run of `config` starts from a pre-training of its own grid: not
    when `finetune.checkpoint` names a checkpoint, nor when `finetune.init` is "scratch"
    (SAC(fast), RLPD)."""
    return not config.finetune.checkpoint and config.finetune.init != "scratch"


def _resolve_family(family: str) -> str:
    path = Path(family)
    if path.suffix in (".yaml", ".yml"):
        return str(config_path(family).resolve())
    config_path(family)  # raises ConfigError naming the known families
    return family


def plan_experiment(spec: ExperimentSpec, out_dir: str | Path, extra_overrides: Sequence[str] = ()) -> Plan:
    """Expands the grid and resolves (validates) every run's config; runs nothing."""
    out = Path(out_dir).resolve()
    try:
        family = _resolve_family(spec.family)
    except ConfigError as e:
        raise SpecError(f"experiment spec field 'family': {e}") from None
    extra = parse_overrides("<command line overrides>", list(extra_overrides))
    budget = tuple(f"{BUDGET_KEYS[k]}={v}" for k, v in spec.budget)
    tasks = spec.tasks
    if not tasks:
        try:
            tasks = (load_config(family, spec.methods[0].variant, spec.overrides + extra).task,)
        except ConfigError as e:
            raise SpecError(f"experiment spec field 'methods.{spec.methods[0].name}': {e}") from None
    from envs.tasks import get_task

    for task in tasks:
        try:
            get_task(task)
        except ValueError as e:
            raise SpecError(f"experiment spec field 'tasks': {e}") from None
    pretrains: dict[str, Job] = {}
    finetunes: list[Job] = []
    for task in tasks:
        for method in spec.methods:
            overrides = spec.overrides + extra + budget + method.overrides
            for seed in spec.seeds:
                try:
                    config = load_config(family, method.variant, list(overrides) + [f"task={task}", f"seed={seed}"])
                except ConfigError as e:
                    raise SpecError(f"experiment spec field 'methods.{method.name}' (task {task}, seed {seed}): {e}") from None
                checkpoint = config.finetune.checkpoint
                pre = None
                if needs_pretraining(config):
                    key = _hash({"task": config.task, "seed": config.seed, "agent": to_dict(pretraining_agent_config(config.agent)), "pretrain": to_dict(config.pretrain)})
                    pre = pretrains.get(key)
                    if pre is None:
                        pre = Job(
                            phase="pretrain", task=task, seed=seed, variant=method.variant, method=method.name,
                            overrides=overrides, run_dir=out / "pretrain" / task / f"{config.pretrain.algorithm}-seed{seed}-{key}",
                            config_hash=key, label=f"pretrain {task} {config.pretrain.algorithm} seed={seed}",
                        )
                        pretrains[key] = pre
                    else:
                        pre.method += f",{method.name}"
                ft_config = to_dict(config)
                ft_config.pop("logging")
                ft_config["finetune"]["checkpoint"] = f"pretrain:{pre.config_hash}" if pre else checkpoint
                finetunes.append(
                    Job(
                        phase="finetune", task=task, seed=seed, variant=method.variant, method=method.name,
                        overrides=overrides, run_dir=out / "runs" / task / method.name / f"seed{seed}",
                        config_hash=_hash(ft_config), pretrain=pre, checkpoint=checkpoint,
                        label=f"finetune {task} {method.name} seed={seed}",
                    )
                )
    return Plan(spec=spec, out_dir=out, family=family, pretrains=list(pretrains.values()), finetunes=finetunes)


# ----------------------------------------------------------------------------------------
# Running.

# A runner executes one job's `wsrl` command line with its output going to `log_path` and
# returns the exit status. The default starts a separate process (isolating JAX); tests
# pass a fake.
Runner = Callable[[list[str], Path], int]


def subprocess_runner(parallel: bool) -> Runner:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if parallel:
        # Several JAX processes on one accelerator: allocate GPU memory on demand instead of
        # each grabbing 75% of it up front.
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    def run(argv: list[str], log_path: Path) -> int:
        with open(log_path, "w") as log:
            return subprocess.run([sys.executable, "-m", "learner.cli", *argv], stdout=log, stderr=subprocess.STDOUT, env=env).returncode

    return run


def _set_aside(run_dir: Path) -> Optional[Path]:
    """Moves an unfinished run directory to `<dir>.partial-<n>` (n = 1, 2, ...)."""
    if not run_dir.exists():
        return None
    n = 1
    while run_dir.with_name(f"{run_dir.name}.partial-{n}").exists():
        n += 1
    target = run_dir.with_name(f"{run_dir.name}.partial-{n}")
    run_dir.rename(target)
    return target


def _read_done(job: Job) -> Optional[dict]:
    if not job.done_file.is_file():
        return None
    try:
        return json.loads(job.done_file.read_text())
    except (OSError, ValueError):
        return None


def _fmt_score(run_dir: Path) -> str:
    from lab.plots import final_score

    score = final_score(run_dir)
    return f"{score[0]} {score[1]:.3f}" if score else "no evaluation"


@dataclasses.dataclass
class ExperimentResult:
    plan: Plan
    ran: list[Job]  # started in this call
    skipped: list[Job]  # already done
    failed: list[Job]
    set_aside: list[Path]
    report: dict[str, Path]


class _Lock:
    """An exclusive lock on the experiment directory (two harnesses must not share one)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise FileExistsError(f"experiment directory {str(self.path.parent)!r} is in use by another `wsrl experiment`") from None
        return self

    def __exit__(self, *exc):
        self._file.close()


def run_experiment(
    spec: ExperimentSpec,
    out_dir: str | Path,
    jobs: Optional[int] = None,
    extra_overrides: Sequence[str] = (),
    runner: Optional[Runner] = None,
    dry_run: bool = False,
    stream: Optional[TextIO] = None,
) -> ExperimentResult:
    """Plans, runs what is not done yet (up to `jobs` processes at a time), then writes the
    report. A failed run is reported and does not stop the others (its dependents are
    skipped); the report covers the runs that completed."""
    plan = plan_experiment(spec, out_dir, extra_overrides)
    jobs = jobs or spec.jobs or os.cpu_count() or 1
    runner = runner or subprocess_runner(parallel=jobs > 1)
    out = plan.out_dir
    total = len(plan.jobs)
    say_lock = threading.Lock()
    stream = stream or sys.stdout

    def say(text: str) -> None:
        with say_lock:
            print(text, file=stream, flush=True)

    if dry_run:
        say(f"[experiment {spec.name}] plan: {len(plan.pretrains)} pre-training + {len(plan.finetunes)} fine-tuning runs -> {out}")
        for job in plan.jobs:
            state = "done" if _read_done(job) else ("partial (will be set aside)" if job.run_dir.exists() else "to run")
            say(f"  [{state}] {job.label}: wsrl {' '.join(job.argv(plan.family))}")
        return ExperimentResult(plan, [], [], [], [], {})

    with _Lock(out / ".lock"):
        atomic_write_bytes(out / "spec.yaml", yaml.safe_dump(_spec_dict(spec), sort_keys=False).encode())
        atomic_write_bytes(out / MACHINE_FILE, (json.dumps(machine_facts(), indent=1) + "\n").encode())
        skipped, todo = [], []
        for job in plan.jobs:
            done = _read_done(job)
            if done is not None and done.get("config_hash") != job.config_hash:
                raise SpecError(
                    f"run directory {str(job.run_dir)!r} was completed with a different config than the spec now gives "
                    f"(changed overrides, budget or variant); use another --out, or move that directory away"
                )
            if done is not None and job.phase == "pretrain" and not (job.run_dir / "checkpoint.ckpt").is_file():
                done = None  # its checkpoint is gone: pre-train again if a fine-tuning run needs it
            (skipped if done is not None else todo).append(job)
        # A pre-training whose fine-tuning runs are all done is not needed (e.g. deleted to save space).
        needed = {id(job.pretrain) for job in todo if job.phase == "finetune" and job.pretrain is not None}
        unneeded = [job for job in todo if job.phase == "pretrain" and id(job) not in needed]
        todo = [job for job in todo if job not in unneeded]
        set_aside = [p for p in (_set_aside(job.run_dir) for job in todo) if p is not None]
        for p in set_aside:
            say(f"[experiment {spec.name}] unfinished run set aside: {p}")
        counter = {"finished": 0}
        say(f"[experiment {spec.name}] {total} runs ({len(plan.pretrains)} pre-training, {len(plan.finetunes)} fine-tuning), "
            f"{len(skipped) + len(unneeded)} already done, {len(todo)} to run, {jobs} at a time -> {out}")
        for job in skipped:
            counter["finished"] += 1
            say(f"[{counter['finished']}/{total}] done earlier  {job.label}: {_fmt_score(job.run_dir)}")
        for job in unneeded:
            counter["finished"] += 1
            say(f"[{counter['finished']}/{total}] not needed  {job.label}: its fine-tuning runs are done")

        done_keys = {id(j) for j in skipped}
        failed: list[Job] = []
        ran: list[Job] = []
        waiting: dict[int, list[Job]] = collections.defaultdict(list)
        ready: collections.deque[Job] = collections.deque()
        for job in todo:
            if job.phase == "finetune" and job.pretrain is not None and id(job.pretrain) not in done_keys:
                waiting[id(job.pretrain)].append(job)
            else:
                ready.append(job)
        started_at = time.monotonic()

        def execute(job: Job) -> tuple[int, float]:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            rc = runner(job.argv(plan.family), job.run_dir / "output.log")
            elapsed = time.monotonic() - t0
            expected = job.run_dir / ("checkpoint.ckpt" if job.phase == "pretrain" else "eval.csv")
            if rc == 0 and not expected.is_file():
                rc = -1000  # exited cleanly but left no output
            if rc == 0:
                marker = {
                    "phase": job.phase, "experiment": spec.name, "task": job.task, "method": job.method,
                    "variant": job.variant, "seed": job.seed, "config_hash": job.config_hash,
                    "elapsed_s": round(elapsed, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
                atomic_write_bytes(job.done_file, (json.dumps(marker, indent=1) + "\n").encode())
            return rc, elapsed

        def fail_dependents(job: Job) -> None:
            for dep in waiting.pop(id(job), []):
                counter["finished"] += 1
                failed.append(dep)
                say(f"[{counter['finished']}/{total}] SKIPPED     {dep.label}: its pre-training failed")

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            running: dict[Future, Job] = {}
            try:
                while ready or running:
                    while ready and len(running) < jobs:
                        job = ready.popleft()
                        ran.append(job)
                        say(f"[{counter['finished']}/{total}] start       {job.label} -> {job.run_dir}")
                        running[pool.submit(execute, job)] = job
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in finished:
                        job = running.pop(future)
                        counter["finished"] += 1
                        try:
                            rc, elapsed = future.result()
                            error = "" if rc == 0 else (f"exit status {rc}" if rc != -1000 else "no output written")
                        except Exception as e:  # the runner itself broke
                            rc, elapsed, error = 1, 0.0, f"{type(e).__name__}: {e}"
                        if rc == 0:
                            say(f"[{counter['finished']}/{total}] finished    {job.label} in {elapsed:.1f}s: {_fmt_score(job.run_dir)}")
                            for dep in waiting.pop(id(job), []):
                                ready.appendleft(dep)
                        else:
                            failed.append(job)
                            say(f"[{counter['finished']}/{total}] FAILED      {job.label} after {elapsed:.1f}s ({error}); log: {job.run_dir / 'output.log'}")
                            say(_log_tail(job.run_dir / "output.log"))
                            fail_dependents(job)
            except KeyboardInterrupt:
                for future in running:
                    future.cancel()
                raise
        say(f"[experiment {spec.name}] {total - len(failed)}/{total} runs complete ({len(ran)} run now, "
            f"{len(failed)} failed) in {time.monotonic() - started_at:.1f}s")

        report: dict[str, Path] = {}
        from lab.plots import read_run, write_report

        records = [read_run(job.run_dir) for job in plan.finetunes if _read_done(job) is not None]
        if records:
            report = write_report(records, out, spec.name, spec.metric)
            say(f"[experiment {spec.name}] wrote " + ", ".join(str(p) for p in report.values()))
            say((out / "summary.md").read_text().rstrip())
    return ExperimentResult(plan, ran, skipped, failed, set_aside, report)


MACHINE_FILE = "machine.json"


def machine_facts() -> dict:
    """What a result depends on beyond the spec: the code's commit (and whether the tree had
    uncommitted changes), the CPU, cores, platform and library versions, and what
    `critic_matmul_dtype: auto` chooses here. Runs are deterministic per machine, not across
    machines, so a results package records where it was made."""
    import platform
    from importlib import metadata

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "mujoco", "gymnasium", "gymnasium-robotics"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = ""
    try:
        from learner.networks import auto_matmul_dtype

        dtype, reason = auto_matmul_dtype()
        matmul = f"{dtype} ({reason})"
    except Exception as e:  # facts are best effort; a report must not fail on them
        matmul = f"unknown ({type(e).__name__})"
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "critic_matmul_auto": matmul,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _spec_dict(spec: ExperimentSpec) -> dict:
    return {
        "name": spec.name,
        "family": spec.family,
        "tasks": list(spec.tasks),
        "seeds": list(spec.seeds),
        "methods": {m.name: {"variant": m.variant, "overrides": list(m.overrides)} for m in spec.methods},
        "overrides": list(spec.overrides),
        "budget": dict(spec.budget),
        "metric": spec.metric,
    }
