"""The folders' roles as an import graph: `learner/` (the GPU box) builds on `actor/` (the robot
machine), both on `envs/` and `protos/`; nothing imports upward and no modules import each
other in a circle (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("learner", "actor", "envs", "protos")
# What each package may import from the others.
ALLOWED = {"learner": {"actor", "envs", "protos"}, "actor": {"envs", "protos"}, "envs": set(), "protos": set()}


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports anywhere in its file}."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            targets = graph.setdefault(module, set())
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] in PACKAGES:
                    targets.add(node.module)
                    # `from actor import policy` imports the module actor.policy
                    targets.update(f"{node.module}.{a.name}" for a in node.names if (ROOT / node.module.replace(".", "/") / f"{a.name}.py").exists())
                elif isinstance(node, ast.Import):
                    targets.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
    return graph


def test_packages_import_only_downward():
    upward = sorted(
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] != module.split(".")[0] and target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    )
    assert upward == []


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if target == module or target not in graph:
                continue
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "actor.policy" in graph["learner.pretrain"]  # module level
    assert "actor.process" in graph["learner.distributed.commands"]  # inside a function
