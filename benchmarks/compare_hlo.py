"""Whether two checkouts compile the same SAC fine-tuning step (locomotion shapes, UTD 4).

Each checkout's `SACAgent.update` is lowered and compiled by XLA in a process of its own
(PYTHONPATH = that checkout) on one fixed batch shaped (4, 256, ...), observation 17, action 6,
2 x 256 critics and actor, the default AgentConfig otherwise. Compared: the optimized HLO's
instructions as a multiset of (result shape, opcode), names, metadata and source locations
left out, and XLA's scratch memory. Equal means the two steps do the same work on every call;
a speed difference between them can then only come from the values (e.g. the
initialization) or from the machine. No timing: it answers the question on a loaded box.

    python benchmarks/compare_hlo.py /path/to/old/checkout /path/to/new/checkout
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys

CHILD = r"""
import json, re, sys, collections
import numpy as np
from learner.agents import make_agent
from learner.config import AgentConfig
agent = make_agent("sac", AgentConfig(critic_hidden_dims=(256, 256), actor_hidden_dims=(256, 256)), 17, 6, seed=0)
rng = np.random.default_rng(0)
shapes = {"observations": (17,), "actions": (6,), "rewards": (), "next_observations": (17,), "terminals": (), "masks": (), "mc_returns": ()}
batch = {k: rng.uniform(-1, 1, (4, 256) + s).astype(np.float32) for k, s in shapes.items()}
try:
    lowered = type(agent).update.lower(agent, batch)
except (KeyError, TypeError, ValueError):
    batch.pop("masks")
    lowered = type(agent).update.lower(agent, batch)
compiled = lowered.compile()
ops = collections.Counter()
for line in compiled.as_text().splitlines():
    line = re.sub(r", metadata=\{.*?\}", "", line)
    m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.*?) ([\w\-]+)\(", line)
    if m:
        ops[m.group(1) + " " + m.group(2)] += 1
print(json.dumps({"ops": ops, "temp_bytes": compiled.memory_analysis().temp_size_in_bytes}))
"""


def signature(checkout: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs=2, metavar="CHECKOUT")
    args = parser.parse_args()
    a, b = (signature(c) for c in args.checkouts)
    ca, cb = collections.Counter(a["ops"]), collections.Counter(b["ops"])
    for checkout, sig, counter in zip(args.checkouts, (a, b), (ca, cb)):
        print(f"{checkout}: {sum(counter.values())} HLO instructions, {len(counter)} distinct (shape, opcode), scratch {sig['temp_bytes'] / 1e6:.1f} MB")
    if ca == cb and a["temp_bytes"] == b["temp_bytes"]:
        print("same compiled step: identical instruction multisets and scratch memory")
        return
    print("different compiled steps:")
    for label, diff in (("only in the first", ca - cb), ("only in the second", cb - ca)):
        for key, n in sorted(diff.items())[:20]:
            print(f"  {label}: {n} x {key}")


if __name__ == "__main__":
    main()
