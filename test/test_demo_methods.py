"""The study compares what the training registry holds: a method registered there is swept,
tested and tabled without touching apo_ros.demo, and the demo keeps no list of method names."""

import ast
import dataclasses
import os
import pathlib

import pytest

import apo_ros.demo
from apo_ros.demo.config import (
    CONTROLS,
    VARIANTS,
    StudyConfig,
    learning_methods,
    study_methods,
    trainable_methods,
)
from apo_ros.demo.plan import Study
from apo_ros.demo.report import policy_order
from apo_ros.training.registry import METHODS, unregister

DEMO_DIR = os.path.dirname(apo_ros.demo.__file__)


@pytest.fixture
def toy_method():
    """A method registered for this test only (dagger's objective under a new name)."""
    METHODS["toy"] = dataclasses.replace(METHODS["dagger"], name="toy")
    try:
        yield "toy"
    finally:
        unregister("toy")


def test_the_study_compares_every_registered_learning_method_then_the_controls():
    assert trainable_methods() == tuple(METHODS)
    assert learning_methods() == tuple(m for m in METHODS if m != "bc")
    assert study_methods() == (*learning_methods(), *CONTROLS)
    assert policy_order() == ("base", *study_methods())
    assert StudyConfig().methods == [*study_methods(), *VARIANTS]


def test_a_newly_registered_method_is_swept_tested_and_tabled(toy_method, tmp_path):
    defaults = StudyConfig().methods
    assert defaults.index("apo") < defaults.index(toy_method) < defaults.index("fresh")  # a learner
    assert policy_order().index(toy_method) < policy_order().index("fresh")
    config = StudyConfig(tasks=["lemon_on_plate"], out=str(tmp_path), pipeline_seeds=1, sweep_lrs=[1e-3],
                         sweep_steps=[10], rounds=0, lifelong_methods=[], methods=[toy_method, "toy_natural"],
                         variants={"toy_natural": {"method": toy_method, "sampling": "natural"}})
    assert config.trainer("toy_natural") == (toy_method, {"sampling": "natural"})
    sweep = {j.key: j for j in Study(config).phase_a() if "/sweep/" in j.key and "/val" not in j.key}
    assert set(sweep) == {"lemon_on_plate/seed0/sweep/toy_lr1e-3_s10_cosine",
                          "lemon_on_plate/seed0/sweep/toy_natural_lr1e-3_s10_cosine"}
    for job in sweep.values():  # from the base, on the demos and the deployments
        assert job.kwargs["method"] == toy_method
        assert job.kwargs["init"].endswith("seed0/base/policy") and job.kwargs["data"]


def test_an_unregistered_method_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        StudyConfig(methods=["toy"], lifelong_methods=[])
    with pytest.raises(ValueError, match="variant 'v'"):
        StudyConfig(variants={"v": {"method": "toy"}})


def test_no_module_of_the_demo_spells_out_the_method_names():
    """A literal naming most of the registered methods is a hand-kept copy of the registry (a
    setting that picks two, as the lifelong methods do, or the CLI's presets are choices)."""
    names = set(METHODS)
    copies = []
    for path in pathlib.Path(DEMO_DIR).glob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if len(words & names) > len(names) // 2:
                    copies.append(f"{path.name}:{node.lineno}")
    assert not copies, f"method names kept by hand in {copies}"
