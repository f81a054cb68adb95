"""The registries are the one source: every CLI choice list of policy kinds, tasks, decode modes,
execution modes and merge rules equals its registry, the simulator's tasks are the registered
specs, each kind names its class, and no module keeps its own full copy of a registry."""

import argparse
import ast
from pathlib import Path

import pytest

from apo_ros.actions.bins import DECODE_MODES
from apo_ros.cli import build_parser
from apo_ros.control.action_queue import MERGE_RULES
from apo_ros.control.policy_runner import EXECUTIONS
from apo_ros.policies.factory import POLICY_KINDS, policy_class, policy_kinds
from apo_ros.sim.task_specs import TASK_SPECS, task_names

ROOT = Path(__file__).resolve().parents[1] / "apo_ros"


def _parser(*words: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def _option(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest)


def test_policy_kind_choices_are_the_registry():
    new = _parser("policy", "new")
    assert tuple(_option(new, "kind").choices) == policy_kinds() == tuple(POLICY_KINDS)
    assert tuple(_option(new, "kind_pos").choices) == policy_kinds()
    assert tuple(_option(new, "decode").choices) == DECODE_MODES


@pytest.mark.parametrize("words", [("sim", "eval"), ("sim", "view"), ("session",)])
def test_task_lists_are_the_registry(words):
    help_text = _option(_parser(*words), "task").help
    named = [name for name in help_text.replace("|", " ").replace(",", " ").split()
             if name.replace("_", "").isalpha() and "_" in name]
    assert tuple(named) == task_names()


@pytest.mark.parametrize("words", [("sim", "eval"), ("session",)])
def test_queue_settings_are_the_registry(words):
    parser = _parser(*words)
    assert tuple(_option(parser, "execution").choices) == EXECUTIONS
    assert tuple(_option(parser, "merge").choices) == MERGE_RULES


def test_sim_tasks_lists_every_registered_task(capsys):
    from apo_ros.cli import main

    assert main(["sim", "tasks"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert tuple(listed) == task_names()


def test_the_simulator_builds_exactly_the_registered_tasks():
    from apo_ros.sim.tasks import TASKS

    assert tuple(TASKS) == task_names()
    for name, task in TASKS.items():
        spec = TASK_SPECS[name]
        assert type(task).__name__ == spec.task_class
        assert (task.instruction, task.max_steps, task.hold_steps, task.state_bodies) == (
            spec.instruction, spec.max_steps, spec.hold_steps,
            tuple(b for b in (spec.object_body, spec.target_body) if b))
        for field, value in spec.options:
            assert getattr(task, field) == value


def test_each_registered_kind_names_its_class():
    for name in POLICY_KINDS:
        cls = policy_class(name)
        assert cls.kind == name
        assert callable(getattr(cls, "build", None)), f"{name}: no build classmethod"


def _full_copies(registry: set[str], root: Path = ROOT) -> list[tuple[str, int]]:
    """(file, line) of every literal tuple / list / set / dict keys holding all of `registry`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                items = node.elts
            elif isinstance(node, ast.Dict):
                items = [k for k in node.keys if k is not None]
            else:
                continue
            names = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
            if registry <= names:
                found.append((str(path.relative_to(root.parent)), node.lineno))
    return found


@pytest.mark.parametrize("what, registry", [("policy kinds", set(POLICY_KINDS)),
                                            ("tasks", set(TASK_SPECS))])
def test_no_module_keeps_a_copy_of_a_registry(what, registry):
    copies = _full_copies(registry)
    assert not copies, f"hand-kept copies of the {what}: {copies}"


def test_the_copy_finder_sees_a_copy(tmp_path):
    (tmp_path / "apo_ros").mkdir()
    (tmp_path / "apo_ros" / "a.py").write_text('KINDS = ("small", "state")\nOPTIONS = {"small": 1}\n')
    (tmp_path / "apo_ros" / "b.py").write_text('def f(kind):\n    return kind in ("state", "x", "small")\n')
    assert _full_copies({"small", "state"}, tmp_path / "apo_ros") == [("apo_ros/a.py", 1),
                                                                       ("apo_ros/b.py", 2)]
