"""Dataclass configs from YAML files, dicts and command-line flags, with clear type errors.

One pattern for every config in apo_ros, over draccus (the dataclass-config library LeRobot uses):
the config is a plain dataclass whose fields carry a type, a default and a comment above them;
draccus decodes values into those types. Layers apply in this order, later ones win:

    defaults  <-  a YAML file  <-  an overrides dict (ROS parameters, a caller's settings)  <-  flags

A command adopts it in two lines; every field, nested ones too, becomes a flag:

    add_config_arguments(parser, TrainConfig)            # --steps, --lr, --policy.image_size ...
    config = config_from_args(TrainConfig, args, yaml_path=args.config)

and a library reads a mapping with `parse_config(TinyVLAConfig, overrides=d, source="...")`.
Every mistake is one `ConfigError` line naming its source and the field: `steps: ten` gives
"train.yaml: steps: expected int, got 'ten'", an unknown key lists the known ones. A number
written `1e-4` (a string to YAML 1.1) is read as the number. Checks across fields stay in the
dataclass's `__post_init__` (raise ValueError); their message gets the source prepended.
`config_to_dict` is the inverse (plain YAML/JSON types).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from apo_ros.errors import ConfigError, reading

T = TypeVar("T")

_FLAG_PREFIX = "config_flag:"  # argparse dest of a config flag: _FLAG_PREFIX + dotted field path


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        allows_none = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else tp), allows_none
    return tp, tp is Any or tp is type(None)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(cls: type, data: Any, path: str) -> None:
    """What draccus lets through or words badly: unknown keys (listed with the known ones), a
    nested config that is not a mapping, None for a field that does not allow it, a bool where a
    number is expected."""
    where = f"{path}: " if path else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping of {cls.__name__} options, "
                          f"got {type(data).__name__} {data!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ConfigError(f"{where}unknown option(s) {unknown}; known: {sorted(names)}")
    hints = _hints(cls)
    for name, value in data.items():
        tp, allows_none = _strip_optional(hints[name])
        field_path = f"{path}.{name}" if path else name
        if value is None:
            if not allows_none:
                raise ConfigError(f"{field_path}: expected {_type_name(tp)}, got null")
        elif dataclasses.is_dataclass(tp):
            _check(tp, value, field_path)
        elif tp in (int, float) and isinstance(value, bool):
            raise ConfigError(f"{field_path}: expected {tp.__name__}, got {value!r}")


def _decode(cls: type[T], data: Mapping, source: str) -> T:
    import draccus
    from draccus.utils import ParsingError

    try:
        _check(cls, data, "")
        return draccus.decode(cls, dict(data))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except ParsingError as err:
        check = _post_init_error(err)
        if check is not None:  # the dataclass's own checks, wrapped by draccus
            raise ConfigError(f"{source}: {' '.join(str(check).split())}") from None
        key_path = ".".join(getattr(err, "key_path", ()) or ())
        message = " ".join(str(getattr(err, "message", err)).split())
        wrong = re.fullmatch(r"Couldn't parse (.*) into an? (\w+)", message)
        if wrong:
            message = f"expected {wrong.group(2)}, got {wrong.group(1)}"
        elif "Underlying error is" in message or "Failed when parsing" in message:
            message = f"cannot read {_lookup(data, key_path)!r} as this option's type"
        raise ConfigError(f"{source}: {key_path + ': ' if key_path else ''}{message}") from None
    except (ValueError, TypeError) as err:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"{source}: {' '.join(str(err).split())}") from None


def _post_init_error(err: BaseException) -> BaseException | None:
    """The ValueError/TypeError a dataclass's __post_init__ raised, if draccus wrapped one."""
    link: BaseException | None = err
    while link is not None:
        wrapped = str(link).startswith("Couldn't instantiate")
        if wrapped and isinstance(link.__cause__, (ValueError, TypeError)):
            return link.__cause__
        link = link.__cause__
    return None


def _lookup(data: Mapping, dotted: str) -> Any:
    value: Any = data
    for part in dotted.split(".") if dotted else []:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return value
    return value


def merge(base: Mapping, update: Mapping) -> dict:
    """Nested dict merge: mappings merge key by key, anything else in `update` replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str) -> dict:
    """A YAML file holding one mapping (an empty file is an empty mapping); errors name the file."""
    import yaml

    with reading(path):
        with open(path) as f:
            data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of options at the top level, "
                          f"got {type(data).__name__}")
    return dict(data)


def parse_config(cls: type[T], *, yaml_path: str | None = None, overrides: Mapping | None = None,
                 flags: Mapping | None = None, source: str | None = None) -> T:
    """Build `cls` from its defaults, then `yaml_path`, then `overrides` (a nested dict), then
    `flags` (a nested dict of command-line values). Each layer is checked on its own first, so a
    mistake is reported against the layer that made it. Raises ConfigError (a UserError and a
    ValueError) with one line naming the source and the field."""
    layers: list[tuple[str, Mapping]] = []
    if yaml_path is not None:
        layers.append((yaml_path, load_yaml(yaml_path)))
    if overrides is not None:
        layers.append((source or f"{cls.__name__} options", overrides))
    if flags:
        layers.append(("command line", flags))
    merged: dict = {}
    for name, layer in layers:
        if not isinstance(layer, Mapping):
            raise ConfigError(f"{name}: expected a mapping of {cls.__name__} options, got "
                              f"{type(layer).__name__} {layer!r}")
        merged = merge(merged, layer)
        _decode(cls, merged, name)
    return _decode(cls, merged, layers[-1][0] if layers else source or cls.__name__)


def config_to_dict(config: Any) -> dict:
    """The config as plain YAML/JSON types (tuples become lists); parse_config reads it back."""
    import draccus

    return draccus.encode(config)


def _leaves(cls: type, prefix: str = ""):
    """(dotted name, type, default, help) of every field, nested dataclasses expanded."""
    from draccus.wrappers.docstring import get_attribute_docstring

    hints = _hints(cls)
    try:
        defaults = cls()
    except TypeError:  # a field without default
        defaults = None
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, _ = _strip_optional(hints[f.name])
        name = prefix + f.name
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, name + ".")
            continue
        try:
            doc = get_attribute_docstring(cls, f.name)
            text = " ".join((doc.comment_inline or doc.comment_above or doc.docstring_below or "").split())
        except Exception:  # docstrings are a nicety: a class without source still parses
            text = ""
        default = getattr(defaults, f.name, None) if defaults is not None else None
        yield name, tp, default, text


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None,
                         exclude: tuple[str, ...] = ()) -> None:
    """Add one `--name` flag per field of `cls` (nested: `--policy.image_size`), documented by the
    comment above the field. Values are YAML (`--max_delta "[0.1, 0.1, 0.1]"`, `--name null`);
    read them back with `config_from_args`. Fields named in `exclude` get no flag."""
    group = parser.add_argument_group(title or f"{cls.__name__} options (also settable in the YAML file)")
    for name, tp, default, text in _leaves(cls):
        if name in exclude or name.split(".")[0] in exclude:
            continue
        shown = config_to_dict(default) if dataclasses.is_dataclass(default) else default
        if isinstance(shown, tuple):
            shown = list(shown)
        help_text = f"{text} (default {shown!r})" if text else f"default {shown!r}"
        group.add_argument(f"--{name}", dest=_FLAG_PREFIX + name, default=argparse.SUPPRESS,
                           metavar=_type_name(tp).upper(), help=help_text.replace("%", "%%"))


def flags_from_args(args: argparse.Namespace) -> dict:
    """The config flags given on the command line, as a nested dict. A value that is a YAML list,
    mapping or `null` is parsed; any other stays text, which draccus converts to the field's type
    (so `--name 123` stays the string "123" for a str field)."""
    import yaml

    nested: dict = {}
    for dest, text in vars(args).items():
        if not dest.startswith(_FLAG_PREFIX):
            continue
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = text
        value = parsed if parsed is None or isinstance(parsed, (Mapping, list)) else text
        *parents, leaf = dest[len(_FLAG_PREFIX):].split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def config_from_args(cls: type[T], args: argparse.Namespace, *, yaml_path: str | None = None,
                     overrides: Mapping | None = None) -> T:
    """`cls` from a parsed command line whose parser had `add_config_arguments(parser, cls)`."""
    return parse_config(cls, yaml_path=yaml_path, overrides=overrides, flags=flags_from_args(args))
