"""The method registry is the one source of method names and of each method's settings: the CLI's
choices, flags and help, TrainConfig's checks and the docs' tables come from it; a new method is
one config class plus one registration; flat keys keep working as before."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from apo_ros.cli import build_parser, main
from apo_ros.errors import ConfigError
from apo_ros.recording.synthetic import write_synthetic_episode
from apo_ros.training import losses
from apo_ros.training.batches import StepOutput
from apo_ros.training.config import TrainConfig
from apo_ros.training.method_configs import AposConfig, MethodConfig
from apo_ros.training.method_docs import blocks, methods_table, settings_table
from apo_ros.training.registry import (
    METHODS,
    Method,
    get_method,
    method_names,
    needs_demos,
    pooled,
    register,
    unregister,
)
from apo_ros.training.trainer import train_policy

DOCS = Path(__file__).resolve().parents[1] / "docs" / "training.md"
TINY = {"image_size": 16, "channels": [4, 4], "hidden": 16}


def _train_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices["train"].format_help().split())


# ---------------------------------------------------------------------------------------------
# A new method: one config class + one registration, trained through the normal entry points
# ---------------------------------------------------------------------------------------------
@dataclass
class ToyConfig(MethodConfig):
    # factor on the token NLL
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")


def toy_step(b, rows, step) -> StepOutput:
    """bc's token NLL times the method's own setting."""
    out = losses.bc_step(b, rows, step)
    loss = out.loss * b.method_config.scale
    return StepOutput(loss, {"loss": float(loss.detach())}, out.samples)


@pytest.fixture
def toy():
    register(Method("toy", "bc scaled by a factor (a test's method)", toy_step, pooled(lambda s: s.is_demo),
                    needs_reference=False, default_lr=1e-3, check=needs_demos(), config=ToyConfig))
    try:
        yield "toy"
    finally:
        unregister("toy")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_bags")
    paths = [str(root / f"demo{i}") for i in range(2)]
    for i, path in enumerate(paths):
        write_synthetic_episode(path, ["expert"] * 10, seed=i + 1, size=16)
    return paths


def test_a_toy_method_trains_through_train_policy_and_the_cli(toy, demos, tmp_path, capsys):
    assert "toy" in method_names() and MethodConfig.get_choice_class("toy") is ToyConfig
    # code: TrainConfig takes the toy's own setting flat, and its own check runs
    config = TrainConfig(method="toy", scale=2.0, steps=2, batch_size=4, progress=False, cache_dir=None,
                         threads=1, policy=dict(TINY), log_every=1, save_every=0, tensorboard=False)
    assert config.method_config == ToyConfig(scale=2.0) and config.peak_lr == 1e-3
    assert config.to_dict()["scale"] == 2.0 and TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"^TrainConfig: scale must be > 0, got -1.0$"):
        TrainConfig(method="toy", scale=-1.0)
    torch.manual_seed(0)
    path = train_policy(config, demos, [], "small", str(tmp_path / "code"), log=lambda m: None)
    assert json.load(open(os.path.join(tmp_path / "code", "train_config.json")))["config"]["scale"] == 2.0
    assert os.path.isdir(path)
    # the CLI: --method toy and --scale exist, documented, and train
    text = _train_help()
    assert "toy: bc scaled by a factor (a test's method)" in text
    assert "--scale FLOAT toy: factor on the token NLL (default 1.0)" in text
    code = main(["train", "--method", "toy", "--scale", "0.5", "--steps", "1", "--batch_size", "4",
                 "--policy.image_size", "16", "--policy.channels", "[4, 4]", "--policy.hidden", "16",
                 "--demos", *demos, "--init", "small", "--out", str(tmp_path / "cli"), "--no-cache",
                 "--no-progress", "--tensorboard", "false", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    saved = json.load(open(tmp_path / "cli" / "train_config.json"))["config"]
    assert saved["method"] == "toy" and saved["scale"] == 0.5
    capsys.readouterr()
    # an apo setting on the toy: one line naming both
    code = main(["train", "--method", "toy", "--beta", "0.2", "--demos", *demos, "--init", "small",
                 "--out", str(tmp_path / "cli2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("command line: beta: not an option of method toy (only of kto, tpo, "
                                      "apo); toy takes ['scale']"), err


def test_unregister_leaves_no_trace(toy):
    unregister("toy")
    assert "toy" not in method_names() and "toy" not in MethodConfig.get_known_choices()
    assert "--scale" not in _train_help()
    with pytest.raises(ConfigError, match=r"method: unknown 'toy'"):
        TrainConfig.from_dict({"method": "toy"})


def test_register_refuses_a_taken_name_and_a_config_that_is_not_one():
    with pytest.raises(ValueError, match="already registered"):
        register(Method("apo", "again", toy_step, pooled(lambda s: s.is_demo), needs_reference=False,
                        default_lr=1e-3, check=needs_demos()))
    with pytest.raises(TypeError, match="MethodConfig subclass"):
        register(Method("odd", "x", toy_step, pooled(lambda s: s.is_demo), needs_reference=False,
                        default_lr=1e-3, check=needs_demos(), config=dict))
    assert "odd" not in method_names()


def test_a_method_without_settings_gets_a_config_class_of_its_own():
    register(Method("plain", "bc without settings", losses.bc_step, pooled(lambda s: s.is_demo),
                    needs_reference=False, default_lr=1e-3, check=needs_demos()))
    try:
        own = get_method("plain").config
        assert own is not MethodConfig and issubclass(own, MethodConfig)
        assert type(TrainConfig(method="plain").method_config) is own
        # the other methods still decode to their own classes
        assert TrainConfig.from_dict({"method": "apo", "beta": 0.3}).method_config == AposConfig(beta=0.3)
        with pytest.raises(ConfigError, match="beta: not an option of method plain"):
            TrainConfig.from_dict({"method": "plain", "beta": 0.3})
    finally:
        unregister("plain")


# ---------------------------------------------------------------------------------------------
# The user-facing surface is unchanged: flat keys, in code, YAML and flags
# ---------------------------------------------------------------------------------------------
def test_flat_keys_fill_the_chosen_methods_config():
    config = TrainConfig(method="apo", sampling="natural", beta=0.2, apo_weight_norm="mean", steps=5)
    assert config.method_config == AposConfig(beta=0.2, apo_weight_norm="mean")
    assert config.sampling == "natural" and config.steps == 5
    # the saved form is flat as before, and reads back
    flat = config.to_dict()
    assert flat["beta"] == 0.2 and "method_config" not in flat and "label_smoothing" not in flat
    assert TrainConfig.from_dict(flat) == config
    # every method: defaults, a round trip through its flat dict, and its own class
    for name in method_names():
        c = TrainConfig(method=name)
        assert type(c.method_config) is get_method(name).config
        assert TrainConfig.from_dict(c.to_dict()) == c


def test_the_studys_flat_overrides_still_build_every_run():
    from apo_ros.demo.study import StudyConfig

    study = StudyConfig(method_overrides={"apo": {"beta": 0.2}}, train_overrides={"sampling": "natural"})
    for name in study.methods:
        method, overrides = study.trainer(name)
        config = TrainConfig(method=method, steps=10, policy=dict(study.policy), **overrides)
        assert config.sampling == "natural"
        if method == "apo":
            assert config.method_config.beta == 0.2


@pytest.mark.parametrize("flat, message", [
    ({"method": "bc", "beta": 0.2},
     "beta: not an option of method bc (only of kto, tpo, apo); bc takes ['label_smoothing', 'bin_sigma']"),
    ({"method": "apo", "tpo_window": 4}, "tpo_window: not an option of method apo (only of tpo); apo takes"),
    ({"method": "apo", "apo_weight_norm": "max"}, "apo_weight_norm must be 'sum' or 'mean', got 'max'"),
    ({"method": "kto", "z0_clamp": [1, "x"]}, "z0_clamp.1: expected float, got 'x'"),
    ({"method": "tpo", "beta": "big"}, "beta: expected float, got 'big'"),
    ({"method": "sirius", "bin_sigma": -1}, "bin_sigma must be >= 0, got -1.0"),
    ({"method": "nope"}, "method: unknown 'nope'; known: " + str(method_names())),
    ({"method": "apo", "betaa": 1}, "unknown option(s) ['betaa']; known: ["),
])
def test_a_wrong_key_is_one_line_naming_the_field_and_the_method(tmp_path, flat, message):
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(flat))
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(str(path))
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Every copy reads the registry
# ---------------------------------------------------------------------------------------------
def test_the_cli_lists_every_method_and_every_setting():
    text = _train_help()
    assert f"the training method (one of: {', '.join(method_names())})" in text
    for name, m in METHODS.items():
        assert f"{name}: {m.summary}" in text
        for option in (f.name for f in dataclasses.fields(m.config)):
            assert f"--{option} " in text, option


def test_the_docs_tables_are_the_registrys():
    found = blocks(DOCS.read_text())
    assert set(found) == {"methods", "method settings"}
    assert found["methods"].strip() == methods_table(), (
        "docs/training.md is stale: python -m apo_ros.training.method_docs docs/training.md")
    assert found["method settings"].strip() == settings_table(), (
        "docs/training.md is stale: python -m apo_ros.training.method_docs docs/training.md")
    for name in method_names():
        assert f"| `{name}` |" in found["methods"]


def test_no_method_list_is_kept_by_hand_in_training():
    """Outside the registrations, no module of apo_ros/training spells out the method names."""
    root = Path(__file__).resolve().parents[1] / "apo_ros" / "training"
    names = method_names()
    for path in sorted(root.glob("*.py")):
        if path.name == "registry.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            listed = [n for n in names if re.search(rf"\b{n}\b", line)]
            assert len(listed) < 3, f"{path.name}:{i} lists methods {listed}: read the registry instead"
