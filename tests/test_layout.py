"""The folders' roles as an import graph: `lab/` (experiments, evidence, plots, data generators
that train) builds on `learner/` (the GPU box), which builds on `actor/` (the robot machine), all
on `envs/` and `protos/`; nothing imports upward and no modules import each other in a circle
(function-level imports included). The lab reaches the `wsrl` command line only through the
`wsrl.commands` entry point."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lab", "learner", "actor", "envs", "protos")
# What each package may import from the others.
ALLOWED = {
    "lab": {"learner", "actor", "envs", "protos"},
    "learner": {"actor", "envs", "protos"},
    "actor": {"envs", "protos"},
    "envs": set(),
    "protos": set(),
}


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
    assert "actor.process" in graph["learner.distributed.actor_command"]  # inside a function


def test_nothing_imports_the_lab():
    importers = sorted(module for module, targets in import_graph().items() if not module.startswith("lab") and any(t.split(".")[0] == "lab" for t in targets))
    assert importers == []


def test_the_lab_adds_its_commands_through_the_entry_point():
    import tomllib

    from lab import commands
    from learner.cli import COMMAND_PLUGINS, build_parser, command_plugins

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"][COMMAND_PLUGINS] == {"lab": "lab.commands"}
    assert commands in command_plugins()  # the installed metadata says the same as pyproject.toml
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(commands.COMMANDS) <= set(choices)


def test_layout_table_names_every_room():
    readme = (ROOT / "README.md").read_text()
    rooms = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms == set(PACKAGES)
    for room in rooms:
        assert f"| `{room}/` |" in readme, room
