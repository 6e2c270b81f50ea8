"""medvit's import graph, read from the source (every import statement, those inside functions too): no
cycle, and no arrow from a lower layer to a higher one. An import inside a function cannot hide a cycle here."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medvit"

# Lowest first. A module may import its own layer's modules and lower layers' (ARCHITECTURE.md draws them).
LAYERS = [
    ("base", ("medvit.resources", "medvit.config", "medvit.files", "medvit.layout")),
    ("data", ("medvit.data",)),
    ("models", ("medvit.models",)),
    ("compute", ("medvit.metrics", "medvit.train", "medvit.segment", "medvit.knn", "medvit.features",
                 "medvit.saliency", "medvit.attention", "medvit.stats", "medvit.pretrain", "medvit.predictions")),
    ("settings", ("medvit.params", "medvit.paper")),
    ("store", ("medvit.claims", "medvit.results")),
    ("runs", ("medvit.runs", "medvit.device")),
    ("executors", ("medvit.experiments",)),
    ("figures", ("medvit.figures",)),
    ("execution", ("medvit.execution", "medvit.launch")),
    ("book", ("medvit.page", "medvit.plots", "medvit.explorer")),
    ("runner", ("medvit.runner",)),
    ("command line", ("medvit.cli", "medvit.__main__", "medvit")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The medvit modules ``name`` imports anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from .x import y`: y itself when it is a module, else x
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import medvit.data.cache` names the module itself
                target = target.rpartition(".")[0]
            if target.startswith("medvit") and target != name:
                found.add(target)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def layer(name: str) -> int:
    matches = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if name == prefix or name.startswith(prefix + ".")]
    assert matches, f"{name} is in no layer of this test (and of ARCHITECTURE.md): give it one"
    return max(matches)[1]


def test_every_module_is_in_a_layer():
    for name in MODULES:
        layer(name)


def test_no_arrow_goes_up_a_layer():
    upward = [f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
              for a, targets in GRAPH.items() for b in sorted(targets) if layer(b) > layer(a)]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_graph_is_read_from_every_import_statement():
    """The reader sees imports inside functions and relative imports of every depth (what the rules rely on)."""
    assert "medvit.execution" in GRAPH["medvit.cli"]  # imported inside a function, for a fast --help
    assert "medvit.runs" in GRAPH["medvit.experiments.finetune"]  # `from ..runs import`
    assert "medvit.figures.fig1" in GRAPH["medvit.figures"]  # `from . import fig1`
