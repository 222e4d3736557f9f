"""The package's shape: imports point one way along the pipeline, no cycles, short functions."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pump_keras"

# Each top-level module or package of pump_keras, in pipeline order: a module
# may import its own stage and the stages before it, never a later one.
STAGES = [
    ("errors", "files"),
    ("config",),
    ("run_dir",),
    ("audio",),
    ("data",),
    ("layers",),
    ("models",),
    ("evaluation",),
    ("training",),
    ("deploy",),
    ("cli",),
    ("__main__", "train", "evaluate", "export", "predict", "ablate", "demo", "serving_client"),
]
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_main_guard(node) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def imported_modules(path: Path, known) -> set:
    """The pump_keras modules `path` imports anywhere (functions too), except under `if __name__ == "__main__"`."""
    found = set()

    def visit(node):
        if _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pump_keras"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pump_keras"):
            for alias in node.names:  # `from pump_keras.x import y`: y may be a module
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph():
    known = modules()
    return {name: {target for target in imported_modules(path, known) if target in known and target != name}
            for name, path in known.items()}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_module_has_a_stage():
    stages = {stage(name) for name in modules()} - {"__init__"}
    assert stages <= set(RANK), f"place these in STAGES: {sorted(stages - set(RANK))}"


def test_imports_point_one_way_along_the_pipeline():
    backwards = [f"{source} imports {target}" for source, targets in import_graph().items()
                 if source != "pump_keras" for target in targets
                 if target != "pump_keras" and RANK[stage(target)] > RANK[stage(source)]]
    assert not backwards, "imports against the pipeline order:\n" + "\n".join(sorted(backwards))


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = {name: targets - {"pump_keras"} for name, targets in import_graph().items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_only_the_command_line_sets_the_environment_or_parses_arguments():
    offenders = []
    for name, path in modules().items():
        if stage(name) in ("cli", "__main__") or name.endswith("cpu_allocator"):
            continue  # the allocator is the training runtime's own setting (train.cpu_allocator)
        text = path.read_text(encoding="utf-8")
        offenders += [f"{name}: {word}" for word in ("import argparse", "os.environ[", "os.environ.setdefault",
                                                      "sys.path") if word in text]
    assert not offenders, offenders


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_function_is_longer_than_80_lines(name):
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{name}: split {', '.join(long)}"
