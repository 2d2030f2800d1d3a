"""The `wsrl` command line: `wsrl pretrain`, `wsrl finetune`, `wsrl config`, `wsrl record`, and the
distributed `wsrl learner`, `wsrl actor`, `wsrl run`, `wsrl status`, `wsrl pause/resume/estop`.

Other rooms add commands through the `wsrl.commands` entry point group (pyproject.toml): the
lab (lab/commands.py) adds `wsrl experiment`, `plot`, `evidence` and `dataset`, so the learner
never imports the lab. Heavy imports (jax, the loops) happen inside the commands so
`wsrl --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from actor import record as record_command
from learner.config import CONFIGS_DIR, ConfigError, dump_yaml, load_config
from learner.distributed import commands as distributed

# The entry point group through which other rooms (the lab) add `wsrl` subcommands.
COMMAND_PLUGINS = "wsrl.commands"
# An example for every help text; tests check that it parses.
OVERRIDE_EXAMPLE = ("finetune.utd_ratio=2", "finetune.num_steps=10000")


def families() -> list[str]:
    """The config families: the YAML files of configs/ (pointmass first, the default)."""
    names = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
    return sorted(names, key=lambda n: n != "pointmass")


def variants() -> list[str]:
    """The methods every family offers (configs/common/methods.yaml)."""
    import yaml

    return list(yaml.safe_load((CONFIGS_DIR / "common" / "methods.yaml").read_text()))


def command_plugins() -> list:
    """The modules that add `wsrl` subcommands (`COMMANDS`, `add_commands(sub)`,
    `run_command(args)`), from the installed package's `wsrl.commands` entry points."""
    from importlib.metadata import entry_points

    return [entry.load() for entry in sorted(entry_points(group=COMMAND_PLUGINS), key=lambda e: e.name)]


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="pointmass", help=f"config family in configs/ ({', '.join(families())}) or a YAML path (default: pointmass)")
    parser.add_argument("--variant", default="wsrl", help=f"method: {', '.join(variants())} (default: wsrl)")
    parser.add_argument("overrides", nargs="*", metavar="section.field=value", help=f"override any config field, e.g. {' '.join(OVERRIDE_EXAMPLE)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsrl", description="Warm-Start RL: offline pre-training and high-UTD online fine-tuning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="offline pre-training (CalQL/CQL/IQL) on the task's dataset")
    _add_config_args(p)
    p.add_argument("--run-dir", default=None, help="output directory (default: runs/<task>-<variant>-pretrain-<time>)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the pre-training in DIR (stopped by Ctrl-C/SIGTERM, or finished: give a larger pretrain.num_steps)")

    p = sub.add_parser("finetune", help="online fine-tuning from a pre-trained checkpoint (Algorithm 1)")
    _add_config_args(p)
    p.add_argument("--checkpoint", default=None, help="pre-trained checkpoint (same as finetune.checkpoint=PATH)")
    p.add_argument("--run-dir", default=None, help="output directory (default: runs/<task>-<variant>-finetune-<time>)")

    p = sub.add_parser("config", help="print the resolved config for a family, variant and overrides")
    _add_config_args(p)

    record_command.add_commands(sub)  # record
    distributed.add_commands(sub, _add_config_args)  # learner, actor, run, status
    for plugin in command_plugins():  # the lab: experiment, plot, evidence, dataset
        plugin.add_commands(sub)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses a `wsrl` command line. `section.field=value` overrides may stand anywhere after
    the command, also between or after options (`wsrl experiment SPEC --out DIR k=v`):
    argparse fills a positional list only from its first run of positionals, so the later
    ones are collected here."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    return args


def resolve_dataset_quietly(config):
    from learner.startup import resolve_dataset

    return resolve_dataset(config, announce=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    overrides = list(getattr(args, "overrides", ()))  # actor/status take none
    if getattr(args, "checkpoint", None):
        overrides.append(f"finetune.checkpoint={args.checkpoint}")
    try:
        # `actor` and `status` take no config; `learner` and `run` do.
        resuming_pretrain = args.command == "pretrain" and args.resume
        if resuming_pretrain:
            from learner.startup import resumed_pretrain_config

            if args.run_dir:
                raise ValueError("--run-dir: not with --resume DIR (the pre-training continues in DIR)")
            config = resolve_dataset_quietly(resumed_pretrain_config(args.resume, tuple(overrides)))
        else:
            config = load_config(args.config, args.variant, overrides) if hasattr(args, "config") else None
        if args.command in ("pretrain", "finetune"):
            # Start-up checks: nothing is written when one fails.
            from learner.runs import check_run_dir, resolve_run_dir
            from learner.startup import check_start, resolve_dataset

            if args.command == "finetune":
                config, _ = check_start(config, "finetune", args.run_dir, pretrain_first=False)
            elif not resuming_pretrain:
                check_run_dir(resolve_run_dir(config, "pretrain", args.run_dir))
                config = resolve_dataset(config)
        if args.command == "record":
            return record_command.run_command(args)
        for plugin in command_plugins():
            if args.command in plugin.COMMANDS:
                return plugin.run_command(args)
        if args.command in distributed.COMMANDS:
            return distributed.run_command(args, config)
        if args.command == "config":
            print(dump_yaml(config), end="")
        elif args.command in ("pretrain", "finetune"):
            from learner.finetune import finetune
            from learner.pretrain import pretrain
            from learner.runs import keep_freed_memory

            keep_freed_memory()
            if args.command == "finetune":
                finetune(config, args.run_dir)
            else:
                from actor.interrupts import GracefulStop

                # One Ctrl-C / SIGTERM saves a checkpoint to continue from (`--resume`).
                stop = GracefulStop("wsrl pretrain", "stopping after this dispatch: saving a checkpoint to continue from").install()
                try:
                    pretrain(config, args.resume or args.run_dir, stop=stop, resume=bool(resuming_pretrain))
                finally:
                    stop.restore()
                return stop.exit_status
    except (ConfigError, FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as e:
        print(f"wsrl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a child process or the training thread failed; it says where to look
        print(f"wsrl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"wsrl {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
