"""The package's layout: data flows one way (ops -> render -> data -> losses/metrics/baselines -> models -> config
-> training/evaluation -> sweeps/benchmarks -> api -> demo page/commands), so no module imports one from a layer
above it and no import cycle exists."""

import ast
from pathlib import Path

import defocus_lit

PACKAGE = Path(defocus_lit.__file__).parent
# Lowest layer first; a module belongs to the layer of its longest matching prefix.
LAYERS = (
    ("defocus_lit", "defocus_lit.errors", "defocus_lit.io", "defocus_lit.visualize", "defocus_lit.ops"),
    ("defocus_lit.render",),
    ("defocus_lit.data",),
    ("defocus_lit.losses", "defocus_lit.metrics", "defocus_lit.baselines"),
    ("defocus_lit.models",),
    ("defocus_lit.config",),
    ("defocus_lit.training", "defocus_lit.evaluation"),
    ("defocus_lit.sweeps", "defocus_lit.benchmarks"),
    ("defocus_lit.api",),
    ("defocus_lit.demo_page", "defocus_lit.commands", "defocus_lit.cli"),
)
# The package's `__getattr__` loads the Python API on first use (PEP 562): the one import from the bottom layer to
# the top, made so that `import defocus_lit` stays light; no module of the package uses it.
LAZY_API = ("defocus_lit", "defocus_lit.api")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {name for name in found if name in modules}


def layer(module: str) -> int:
    matches = [
        (len(prefix), i)
        for i, group in enumerate(LAYERS)
        for prefix in group
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def graph() -> dict[str, set[str]]:
    modules = module_names()
    edges = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    edges[LAZY_API[0]].discard(LAZY_API[1])
    return edges


def test_no_module_imports_from_a_layer_above_it():
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, deps in graph().items()
        for b in deps
        if layer(b) > layer(a)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep) :] + [node, dep]) if dep in path else f"{node} -> {dep}")
            elif dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [])
    assert not cycles, "\n".join(cycles)


def transitive(module: str) -> set[str]:
    edges, seen, todo = graph(), set(), [module]
    while todo:
        for dep in edges[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_the_deployable_model_needs_only_the_ops_and_the_networks():
    deps = transitive("defocus_lit.models.inference")
    assert not {d for d in deps if d.split(".")[1] in ("baselines", "render", "data", "losses", "metrics", "training")}


def test_the_datamodule_reads_through_the_layout_module_not_the_writer():
    assert "defocus_lit.data.build" not in transitive("defocus_lit.data.datamodule")
