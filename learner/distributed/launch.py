"""The settings a learner starts with, from its flags.

The launch settings (saved as launch.json for `--resume`), its DistributedSettings, and the
config with a checkpoint to start from.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional

# The learner's launch settings: its flags' defaults, saved in RUN_DIR/launch.json at start and
# restored by `wsrl learner --resume` (flags given with --resume replace them).
LAUNCH_FILE = "launch.json"
LAUNCH_DEFAULTS = {
    "mode": "sync", "max_lead": 64, "min_utd": 0.0, "max_utd": None, "max_batch_size": 1024, "publish_every": 1,
    "save_every": 60.0, "bind": "127.0.0.1:50051", "forever": False,
}


def launch_settings(args: argparse.Namespace, saved: Optional[dict] = None) -> tuple[dict, list[str]]:
    """The launch settings of a learner (`LAUNCH_DEFAULTS` keys) and what changed: the flags
    given on the command line, else `saved` (a resumed run's launch.json), else the defaults.
    Returns (settings, ["--flag new (was old)", ...] for flags that replaced a saved value)."""
    settings, changed = {}, []
    for key, default in LAUNCH_DEFAULTS.items():
        given = getattr(args, key, None)
        before = (saved or {}).get(key, default)
        settings[key] = before if given is None else given
        if saved is not None and given is not None and given != before:
            changed.append(f"--{key.replace('_', '-')} {given} (was {before})")
    return settings, changed


def read_launch(run_dir: str) -> Optional[dict]:
    """A learner run's saved launch settings, or None (a run from before they were saved)."""
    import json

    path = Path(run_dir, LAUNCH_FILE)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"--resume {run_dir!r}: {LAUNCH_FILE} is not valid JSON ({e})") from None
    return {k: v for k, v in data.items() if k in LAUNCH_DEFAULTS}


def with_launch_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with every unset launch flag at its default (commands that do not resume)."""
    settings, _ = launch_settings(args)
    return argparse.Namespace(**{**vars(args), **settings})


def settings_from_args(args: argparse.Namespace, config: Any):
    """The learner's DistributedSettings from its flags. In async mode `--max-utd` defaults to
    `finetune.utd_ratio`, so an actor-learner run trains at the algorithm's UTD however fast the
    env steps arrive (and not at all while none arrive); 0 lifts the cap, with a warning."""
    from learner.distributed.settings import DistributedSettings

    args = with_launch_defaults(args)
    max_utd = float(config.finetune.utd_ratio) if args.max_utd is None else args.max_utd
    if args.mode == "async" and max_utd == 0:
        print(f"[wsrl {args.command}] warning: --max-utd 0: no cap on critic updates per env step; the learner trains as fast as "
              f"it can on the data it has, beyond the UTD {config.finetune.utd_ratio} the algorithm uses (and on a paused robot's frozen buffer)",
              file=sys.stderr, flush=True)
    return DistributedSettings(
        mode=args.mode,
        max_lead=args.max_lead,
        min_utd=args.min_utd,
        max_utd=max_utd,
        max_batch_size=args.max_batch_size,
        publish_every=args.publish_every,
        state_every_s=args.save_every,
    )


def _with_finetune(config, **changes):
    return dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, **changes))
