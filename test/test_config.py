"""apo_ros.config: dataclass configs from YAML, dicts and flags, with one-line type errors."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import draccus
import pytest

from apo_ros.actions.safety import SafetyConfig
from apo_ros.config import add_config_arguments, config_from_args, config_to_dict, flat_choice, parse_config
from apo_ros.errors import ConfigError, UserError, user_message


@dataclass
class Inner:
    # side of the square input image, pixels
    image_size: int = 16


@dataclass
class Outer:
    # peak learning rate
    lr: float = 1e-3
    steps: int = 10  # optimizer steps
    name: str | None = None
    progress: bool = True
    policy: Inner = field(default_factory=Inner)
    limits: tuple[float, ...] = (0.5, 0.5)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    parser.add_argument("--config")
    add_config_arguments(parser, Outer)
    return parser


def test_every_field_is_a_documented_flag():
    text = _parser().format_help()
    for flag in ("--lr", "--steps", "--name", "--progress", "--policy.image_size", "--limits", "--extra"):
        assert flag in text, flag
    assert "peak learning rate (default 0.001)" in text and "optimizer steps (default 10)" in text
    assert "side of the square input image, pixels (default 16)" in " ".join(text.split())


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nsteps: 5\npolicy:\n  image_size: 8\nname: base\n")
    args = _parser().parse_args(["--steps", "7", "--policy.image_size", "32", "--limits", "[1, 2, 3]",
                                 "--name", "123", "--progress", "false", "--extra", "{a: 1}"])
    config = config_from_args(Outer, args, yaml_path=str(path))
    # `1e-4` is a string to YAML 1.1: it is still read as the number
    assert config == Outer(lr=1e-4, steps=7, name="123", progress=False, policy=Inner(32),
                           limits=(1.0, 2.0, 3.0), extra={"a": 1})
    assert parse_config(Outer, **{"overrides": config_to_dict(config)}) == config


@pytest.mark.parametrize("layer, message", [
    ({"steps": "ten"}, "steps: expected int, got 'ten'"),
    ({"lr": "fast"}, "lr: expected float, got 'fast'"),
    ({"stepz": 3}, "unknown option(s) ['stepz']; known: ['extra', 'limits', 'lr', 'name', 'policy', "
                   "'progress', 'steps']"),
    ({"policy": {"image_sise": 16}}, "policy: unknown option(s) ['image_sise']; known: ['image_size']"),
    ({"policy": [1, 2]}, "policy: expected a mapping of Inner options, got list [1, 2]"),
    ({"steps": None}, "steps: expected int, got null"),
    ({"steps": True}, "steps: expected int, got True"),
    ({"limits": [1, "x"]}, "limits.1: expected float, got 'x'"),
    ({"steps": -1}, "steps must be >= 0, got -1"),  # the dataclass's own check
])
def test_each_mistake_is_one_line_naming_source_and_field(tmp_path, layer, message):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(layer))
    with pytest.raises(ConfigError) as info:
        parse_config(Outer, yaml_path=str(path))
    assert str(info.value) == f"{path}: {message}"
    assert user_message(info.value) == str(info.value)  # the CLI prints exactly this line


def test_the_layer_that_made_the_mistake_is_named(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("steps: 3\n")
    with pytest.raises(ConfigError, match=r"^command line: steps: expected int, got 'ten'$"):
        config_from_args(Outer, _parser().parse_args(["--steps", "ten"]), yaml_path=str(path))
    with pytest.raises(ConfigError, match=r"^node parameters: lr: expected float"):
        parse_config(Outer, yaml_path=str(path), overrides={"lr": "x"}, source="node parameters")
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping of options at the top level"):
        parse_config(Outer, yaml_path=str(path))
    with pytest.raises(UserError, match="No such file"):
        parse_config(Outer, yaml_path=str(tmp_path / "missing.yaml"))


def test_config_error_is_a_value_error_for_existing_callers():
    with pytest.raises(ValueError, match=r"^safety: unknown option\(s\) \['max_speed'\]"):
        SafetyConfig.from_dict({"max_speed": 1.0}, source="safety")
    assert SafetyConfig.from_dict({"max_delta": [0.1] * 6}).max_delta == (0.1,) * 6


def test_tiny_vla_config_is_typed():
    from apo_ros.policies.tiny import TinyVLAConfig, tiny_config_from_dict

    assert tiny_config_from_dict({"image_size": "64"}) == TinyVLAConfig(image_size=64)
    with pytest.raises(ConfigError, match=r"^tiny VLA config: unknown option\(s\) \['image_sise'\]"):
        tiny_config_from_dict({"image_sise": 16})


# ---------------------------------------------------------------------------------------------
# Flat choices: one registered class chosen by a sibling field, its options written flat
# ---------------------------------------------------------------------------------------------
@dataclass
class Engine(draccus.ChoiceRegistry):
    pass


@Engine.register_subclass("diesel")
@dataclass
class Diesel(Engine):
    # cylinders of the block
    cylinders: int = 4


@Engine.register_subclass("electric")
@dataclass
class Electric(Engine):
    # battery capacity, kWh
    kwh: float = 50.0
    # cylinders (none, but a shared name: one flag for both)
    cylinders: int = 0

    def __post_init__(self) -> None:
        if self.kwh <= 0:
            raise ValueError(f"kwh must be > 0, got {self.kwh}")


@dataclass
class Car:
    # the engine kind
    kind: str = "diesel"
    wheels: int = 4
    engine: Engine = flat_choice("kind")

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = Engine.get_choice_class(self.kind)()


def test_a_flat_choice_reads_its_options_beside_the_parents_and_writes_them_back():
    car = parse_config(Car, overrides={"kind": "electric", "kwh": "70", "wheels": 3})
    assert car == Car(kind="electric", wheels=3, engine=Electric(kwh=70.0))
    assert config_to_dict(car) == {"kind": "electric", "wheels": 3, "kwh": 70.0, "cylinders": 0}
    assert parse_config(Car, overrides=config_to_dict(car)) == car
    assert parse_config(Car).engine == Diesel()
    parser = argparse.ArgumentParser(prog="t")
    add_config_arguments(parser, Car)
    text = " ".join(parser.format_help().split())
    assert "the engine kind (one of: diesel, electric) (default 'diesel')" in text
    assert "--kwh FLOAT electric: battery capacity, kWh (default 50.0)" in text
    assert "--cylinders INT diesel, electric: cylinders of the block (defaults: diesel 4, electric 0)" in text
    assert "--engine" not in text
    args = parser.parse_args(["--kind", "electric", "--kwh", "12"])
    assert config_from_args(Car, args).engine == Electric(kwh=12.0)


@pytest.mark.parametrize("layer, message", [
    ({"kwh": 10}, "kwh: not an option of kind diesel (only of electric); diesel takes ['cylinders']"),
    ({"kind": "steam"}, "kind: unknown 'steam'; known: ['diesel', 'electric']"),
    ({"kind": "electric", "kwh": "lots"}, "kwh: expected float, got 'lots'"),
    ({"kind": "electric", "kwh": True}, "kwh: expected float, got True"),
    ({"kind": "electric", "kwh": -1}, "kwh must be > 0, got -1.0"),
    ({"engine": {"cylinders": 2}}, "unknown option(s) ['engine']; known: ['cylinders', 'kind', 'wheels']"),
])
def test_a_flat_choice_mistake_is_one_line_naming_the_option(layer, message):
    with pytest.raises(ConfigError) as info:
        parse_config(Car, overrides=layer, source="car.yaml")
    assert str(info.value) == f"car.yaml: {message}"


def test_messages_come_from_draccus_structured_errors_not_its_wording(monkeypatch):
    """The key path, the type and the dataclass's own error are read off draccus's exceptions:
    reworded draccus messages give the same lines."""
    from draccus.parsers import decoding
    from draccus.utils import DecodingError, ParsingError

    original = DecodingError.__init__
    monkeypatch.setattr(DecodingError, "__init__", lambda self, key_path, message: original(
        self, key_path, "reworded"))

    class Reworded(ParsingError):
        def __init__(self, *args):
            super().__init__("reworded")

    monkeypatch.setattr(decoding, "ParsingError", Reworded)
    for layer, message in [({"steps": "ten"}, "steps: expected int, got 'ten'"),
                           ({"limits": [1, "x"]}, "limits.1: expected float, got 'x'"),
                           ({"policy": {"image_size": "big"}}, "policy.image_size: expected int, got 'big'"),
                           ({"steps": -1}, "steps must be >= 0, got -1")]:
        with pytest.raises(ConfigError) as info:
            parse_config(Outer, overrides=layer, source="s")
        assert str(info.value) == f"s: {message}"


def test_a_later_layers_choice_applies_to_the_earlier_layers_options(tmp_path):
    path = tmp_path / "car.yaml"
    path.write_text("kwh: 80\n")  # no kind: the command line picks it
    parser = argparse.ArgumentParser(prog="t")
    add_config_arguments(parser, Car)
    car = config_from_args(Car, parser.parse_args(["--kind", "electric"]), yaml_path=str(path))
    assert car.engine == Electric(kwh=80.0)
    # the mistake is still named against the layer that made it
    path.write_text("kind: electric\nkwh: 80\n")
    with pytest.raises(ConfigError, match=rf"^{path}: kwh: not an option of kind diesel"):
        config_from_args(Car, parser.parse_args(["--kind", "diesel"]), yaml_path=str(path))
