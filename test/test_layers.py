"""The import graph keeps the layer order: no module imports from a layer above its own, and no
import cycle. Every `import` counts (at the top of a file, inside a function, under
TYPE_CHECKING), and so does a module named in a string (lazy exports, `importlib` tables): a lazy
import is still a dependency.

The layers, low to high (a module may import its own layer and the layers below it):

    core       apo_ros/{__init__,errors,lazy,config,observation}.py: no apo_ros imports above
    actions    action space, statistics, tokenizers, safety filter
    recording  bag schema, writer, reader, labels
    teleop     devices and the arbiter
    control    the action queue and the policy runner: chunks -> one safe action per tick
    sim        MuJoCo scene, tasks, experts, simulated operator, evaluation
    policies   token policies, the kind registry, checkpoints
    training   samples, objectives, trainer
    serving    the policy server and client; `open_policy` (a checkpoint or a server)
    runtime    the in-process session, recorder, training rounds
    nodes      the ROS 2 nodes and their graph bench
    demo       the study
    commands   apo_ros/cli.py, apo_ros/bench.py and each area's cli.py: a command wires any layer

There is no allowlist: a shared piece a lower layer needs moves down to it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "apo_ros"

LAYERS: tuple[str, ...] = ("core", "actions", "recording", "teleop", "control", "sim", "policies",
                           "training", "serving", "runtime", "nodes", "demo", "commands")
CORE_MODULES = {"apo_ros", "apo_ros.errors", "apo_ros.lazy", "apo_ros.config", "apo_ros.observation"}
COMMAND_MODULES = {"apo_ros.cli", "apo_ros.bench"}  # plus every apo_ros.<area>.cli

_MODULE_STRING = re.compile(r"^apo_ros(\.[a-z_0-9]+)+(:\w+)?$")


def all_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module in COMMAND_MODULES or (len(parts) == 3 and parts[2] == "cli"):
        return "commands"
    if module in CORE_MODULES:
        return "core"
    assert len(parts) >= 2 and parts[1] in LAYERS, f"{module}: in no layer; add it to LAYERS"
    return parts[1]


class Import:
    def __init__(self, importer: str, imported: str, line: int, in_function: bool):
        self.importer, self.imported, self.line, self.in_function = importer, imported, line, in_function

    def __repr__(self) -> str:
        where = "in a function" if self.in_function else "at module level"
        return f"{self.importer}:{self.line} -> {self.imported} ({where})"


def _package_exports(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """package -> {public name: defining module} from its imports and its lazy-export table."""
    exports: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        table: dict[str, str] = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("apo_ros"):
                for alias in node.names:
                    table[alias.asname or alias.name] = node.module
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if (isinstance(key, ast.Constant) and isinstance(value, ast.Constant)
                            and isinstance(value.value, str)):
                        target = value.value if "." in value.value else f"{name}.{value.value}"
                        table[str(key.value)] = target
        exports[name] = table
    return exports


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports_of(tree: ast.AST, package: str, target, modules: dict[str, Path]):
    """(imported module or None, line, inside a function) for every import in `tree`."""
    for node, in_function in _walk(tree, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("apo_ros"):
                    yield _resolve(alias.name, modules), node.lineno, in_function
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base.startswith("apo_ros"):
                for alias in node.names:
                    yield target(base, alias.name), node.lineno, in_function
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and _MODULE_STRING.match(node.value)):
            # a module named for importlib / a lazy export: loaded at run time
            name, _, attribute = node.value.partition(":")
            yield target(name, attribute or None), node.lineno, True


def _walk(node: ast.AST, in_function: bool):
    """(node, inside a function) depth first, leaving out docstrings (they name modules for the
    reader) and a module run as a process (`[python, "-m", "apo_ros.x"]`: not an import)."""
    after_m = False
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Expr) and isinstance(child.value, ast.Constant):
            continue
        if after_m:
            after_m = False
            continue
        if isinstance(node, (ast.List, ast.Tuple)) and isinstance(child, ast.Constant) \
                and child.value == "-m":
            after_m = True
        inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield child, inside
        yield from _walk(child, inside)


def collect_imports(modules: dict[str, Path] | None = None) -> list[Import]:
    modules = modules or all_modules()
    exports = _package_exports(modules)
    found: list[Import] = []

    def target(base: str, attribute: str | None) -> str | None:
        if attribute is not None:
            if f"{base}.{attribute}" in modules:
                return f"{base}.{attribute}"
            if attribute in exports.get(base, {}):
                return _resolve(exports[base][attribute], modules)
        return _resolve(base, modules)

    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for imported, line, in_function in _imports_of(ast.parse(path.read_text(), str(path)), package,
                                                       target, modules):
            if imported and imported != module:
                found.append(Import(module, imported, line, in_function))
    return found


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return cycles


def upward_imports(imports: list[Import]) -> list[Import]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    return [imp for imp in imports
            if rank[layer_of(imp.imported)] > rank[layer_of(imp.importer)]]


def import_cycles(imports: list[Import]) -> list[list[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        edges[imp.importer].add(imp.imported)
    return find_cycles(edges)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return collect_imports()


def test_every_module_has_a_layer():
    for module in all_modules():
        assert layer_of(module) in LAYERS


def test_no_import_runs_from_a_lower_layer_to_a_higher_one(imports):
    wrong = [f"{imp!r}: {layer_of(imp.importer)} -> {layer_of(imp.imported)}"
             for imp in upward_imports(imports)]
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycle_at_module_level(imports):
    cycles = import_cycles([imp for imp in imports if not imp.in_function])
    assert not cycles, f"module-level import cycles: {cycles}"


def test_no_import_cycle_through_imports_inside_functions(imports):
    # an import moved into a function to dodge a cycle is still a cycle
    cycles = import_cycles(imports)
    assert not cycles, f"import cycles (counting imports inside functions): {cycles}"


def test_the_checker_sees_a_back_door_a_lazy_import_and_a_cycle(tmp_path):
    """The checks can fail: a small tree with one upward import inside a function, one lazy
    export string, and one cycle."""
    pkg = tmp_path / "apo_ros"
    for area in ("sim", "policies"):
        (pkg / area).mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sim" / "__init__.py").write_text("")
    (pkg / "policies" / "__init__.py").write_text("_LAZY = {'Thing': 'apo_ros.policies.b'}\n")
    (pkg / "sim" / "a.py").write_text("def f():\n    from apo_ros.policies import Thing\n")
    (pkg / "sim" / "c.py").write_text("TABLE = {'x': 'apo_ros.policies.b:Thing'}\n")
    (pkg / "policies" / "b.py").write_text("from apo_ros.policies import d\nThing = 1\n")
    (pkg / "policies" / "d.py").write_text("def g():\n    import apo_ros.policies.b\n")
    modules = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = list(path.relative_to(tmp_path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    found = collect_imports(modules)
    assert {(i.importer, i.imported) for i in upward_imports(found)} == {
        ("apo_ros.sim.a", "apo_ros.policies.b"), ("apo_ros.sim.c", "apo_ros.policies.b")}
    assert import_cycles([i for i in found if not i.in_function]) == []
    assert import_cycles(found) == [["apo_ros.policies.b", "apo_ros.policies.d"]]


# The libraries a command imports inside its handler, so `apo-ros --help` stays light.
HEAVY_LIBRARIES = ("torch", "transformers", "peft", "rclpy", "av", "pyarrow", "mujoco")


def test_building_the_command_line_loads_no_heavy_library():
    code = ("import sys; from apo_ros.cli import build_parser; build_parser(); "
            f"print(' '.join(m for m in {HEAVY_LIBRARIES!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT.parent).stdout.split()
    assert not loaded, f"apo-ros --help imports {loaded}"
