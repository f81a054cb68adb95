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

The messages are built from draccus's structured errors, not its wording: a `DecodingError`
carries the key path of the value it could not decode (the expected type is read off the
dataclass at that path), and a dataclass that refuses its values surfaces as a plain
`ParsingError` raised from the ValueError of its `__post_init__`.

A field made with `flat_choice("method")` holds one class of a draccus ChoiceRegistry, chosen by
the sibling field `method`, its options written flat beside the parent's (`method: apo` and
`beta: 0.2`): TrainConfig's per-method settings. A field made with `later_choice(Base)` holds the
options of one choice whose name comes from outside the config (`apo-ros train --init small`
names the policy kind): TrainConfig's `policy`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import draccus
from draccus.choice_types import CHOICE_TYPE_KEY, ChoiceRegistryBase
from draccus.utils import DecodingError, ParsingError
from draccus.wrappers.docstring import get_attribute_docstring

from apo_ros.errors import ConfigError, reading

T = TypeVar("T")

_FLAG_PREFIX = "config_flag:"  # argparse dest of a config flag: _FLAG_PREFIX + dotted field path


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flat_choice(selector: str) -> Any:
    """A field holding one registered choice, picked by the sibling field `selector`, whose
    options are written flat beside the parent's own.

    The field's type is a draccus ChoiceRegistry base; its subclasses are filed under names.
    In YAML files, dicts and flags the user writes `method: apo` and `beta: 0.2` side by side: the
    keys the chosen class takes fill it (decoded by draccus as `{"type": "apo", "beta": 0.2}`),
    a key another choice takes is refused naming both, and `config_to_dict` writes them flat
    again. The parent's `__post_init__` fills the field when it is left None (code that builds
    the parent without a mapping)."""
    return dataclasses.field(default=None, metadata={_FLAT_CHOICE: selector})


_FLAT_CHOICE = "apo_ros.config.flat_choice"
_LATER_CHOICE = "apo_ros.config.later_choice"


def later_choice(base: Any) -> Any:
    """A field (typed `dict`) holding the options of one registered choice of `base` (a draccus
    ChoiceRegistry) that the caller picks later, outside the config.

    It holds the options as given, each decoded to its type (an option several choices take has
    one type in all of them); a key no choice takes is refused. Flags (`--policy.hidden`) and
    --help list the options of every choice, each naming the choices that take it.
    `choose(base, name, options)` builds the chosen class. The parent's `__post_init__` calls
    `decode_choice_options` (so code that builds the parent from a dict is checked too)."""
    return dataclasses.field(default_factory=dict, metadata={_LATER_CHOICE: base})


def _choice_option_types(base: Any) -> dict[str, Any]:
    types: dict[str, Any] = {}
    for klass in base.get_known_choices().values():
        hints = _hints(klass)
        for f in dataclasses.fields(klass):
            if f.init:
                types.setdefault(f.name, hints[f.name])
    return types


def _check_mapping_of_known(data: Any, known, type_name: str, label: str, where: str) -> None:
    """ConfigError unless `data` is a mapping whose keys are all in `known`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of {type_name} options, got "
                          f"{type(data).__name__} {data!r}")
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{where}unknown option(s) {unknown}; known: {sorted(known)}")


def decode_choice_options(base: Any, options: Any, path: str) -> dict:
    """`options` with each value decoded to its option's type; ConfigError (naming `path` and the
    option) for something other than a mapping, a key no choice of `base` takes, or a value of the
    wrong type."""
    types = _choice_option_types(base)
    _check_mapping_of_known(options, types, base.__name__, path, f"{path}: ")
    out = {}
    for key, value in options.items():
        tp, allows_none = _strip_optional(types[key])
        bad = (value is None and not allows_none) or (tp in (int, float) and isinstance(value, bool))
        try:
            if not bad:
                out[key] = None if value is None else draccus.decode(types[key], value)
        except DecodingError:
            bad = True
        if bad:
            raise ConfigError(f"{path}.{key}: expected {_type_name(tp)}, got {value!r}")
    return out


def choose(base: Any, name: str, options: Mapping, *, source: str, what: str) -> Any:
    """The choice `name` of `base` built from `options`; ConfigError naming `source`, an option
    it does not take and the choice (`policy: ['layers'] are not options of the small policy`)."""
    known = base.get_known_choices()
    if name not in known:
        raise ConfigError(f"{source}: unknown {what} {name!r} (known: {', '.join(known)})")
    takes = choice_options(base, name)
    wrong = sorted(set(options) - set(takes))
    if wrong:
        raise ConfigError(f"{source}: {wrong} are not options of the {name} {what} (it takes {takes})")
    return parse_config(known[name], overrides=dict(options), source=source)


def _flat_choices(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, its choice base class) of every flat-choice field of `cls`."""
    hints = _hints(cls)
    return [(f, _strip_optional(hints[f.name])[0]) for f in dataclasses.fields(cls)
            if _FLAT_CHOICE in f.metadata]


def _init_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def choice_options(base: Any, name: str) -> list[str]:
    """The options of the choice `name` of `base` (a draccus ChoiceRegistry)."""
    return _init_names(base.get_choice_class(name))


def _nest_flat_choices(cls: type, data: Mapping) -> dict:
    """`data` with the flat options of each flat-choice field moved under that field, as
    `{"type": name, option: value ...}`; ConfigError for a key no option of `cls` or its chosen
    class takes (naming the choice when the key belongs to another one)."""
    out = dict(data)
    for f, base in _flat_choices(cls):
        selector = f.metadata[_FLAT_CHOICE]
        known = base.get_known_choices()
        defaults = {g.name: g.default for g in dataclasses.fields(cls)}
        name = out.get(selector, defaults.get(selector))
        own = [n for n in _init_names(cls) if n != f.name]
        if not isinstance(name, str) or name not in known:
            raise ConfigError(f"{selector}: unknown {name!r}; known: {list(known)}")
        takes = choice_options(base, name)
        nested, unknown = {}, []
        for key in list(out):
            if key in own:
                continue
            if key in takes:
                nested[key] = out.pop(key)
                continue
            others = [other for other in known if key in choice_options(base, other)]
            if others:
                raise ConfigError(f"{key}: not an option of {selector} {name} (only of "
                                  f"{', '.join(others)}); {name} takes {takes or 'none'}")
            unknown.append(str(key))
        if unknown:
            raise ConfigError(f"unknown option(s) {sorted(unknown)}; known: {sorted(own + takes)}")
        out[f.name] = {CHOICE_TYPE_KEY: name, **nested}
    return out


def _flatten_flat_choices(cls: type, encoded: dict) -> dict:
    """The inverse of `_nest_flat_choices` on an encoded config."""
    for f, _ in _flat_choices(cls):
        nested = encoded.pop(f.name, None) or {}
        encoded.update({k: v for k, v in nested.items() if k != CHOICE_TYPE_KEY})
    return encoded


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


def _is_choice(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, ChoiceRegistryBase)


def _check(cls: type, data: Any, path: str) -> None:
    """What draccus lets through or words badly: unknown keys (listed with the known ones), a
    nested config that is not a mapping, None for a field that does not allow it, a bool where a
    number is expected."""
    where = f"{path}: " if path else ""
    names = _init_names(cls)
    _check_mapping_of_known(data, names, cls.__name__, path or "config", where)
    hints = _hints(cls)
    flat = {f.name for f, _ in _flat_choices(cls)}
    later = {f.name: f.metadata[_LATER_CHOICE] for f in dataclasses.fields(cls)
             if _LATER_CHOICE in f.metadata}
    for name, value in data.items():
        tp, allows_none = _strip_optional(hints[name])
        field_path = f"{path}.{name}" if path else name
        if name in later:
            decode_choice_options(later[name], value, field_path)
        elif value is None:
            if not allows_none:
                raise ConfigError(f"{field_path}: expected {_type_name(tp)}, got null")
        elif (_is_choice(tp) and isinstance(value, Mapping)
              and value.get(CHOICE_TYPE_KEY) in tp.get_known_choices()):
            chosen = tp.get_choice_class(value[CHOICE_TYPE_KEY])
            options = {k: v for k, v in value.items() if k != CHOICE_TYPE_KEY}
            _check(chosen, options, path if name in flat else field_path)
        elif dataclasses.is_dataclass(tp):
            _check(tp, value, field_path)
        elif tp in (int, float) and isinstance(value, bool):
            raise ConfigError(f"{field_path}: expected {tp.__name__}, got {value!r}")


def _decode(cls: type[T], data: Mapping, source: str) -> T:
    try:
        if not isinstance(data, Mapping):
            _check(cls, data, "")
        data = _nest_flat_choices(cls, data)
        _check(cls, data, "")
        return draccus.decode(cls, dict(data))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except ParsingError as err:
        check = _post_init_error(err)
        if check is not None:  # the dataclass's own checks, which draccus wraps
            raise ConfigError(f"{source}: {' '.join(str(check).split())}") from None
        if isinstance(err, DecodingError):  # a value that is not of its field's type
            key_path = _deepest_key_path(err)
            where, tp = _field_at(cls, data, key_path)
            value = _lookup(data, key_path)
            raise ConfigError(f"{source}: {where + ': ' if where else ''}expected {_type_name(tp)}, "
                              f"got {value!r}") from None
        raise ConfigError(f"{source}: {' '.join(str(err).split())}") from None
    except (ValueError, TypeError) as err:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"{source}: {' '.join(str(err).split())}") from None


def _post_init_error(err: BaseException) -> BaseException | None:
    """The ValueError/TypeError a dataclass's __post_init__ raised, if draccus wrapped one: draccus
    raises a plain ParsingError (not its DecodingError) from it when the class will not build."""
    link: BaseException | None = err
    while link is not None:
        if (isinstance(link, ParsingError) and not isinstance(link, DecodingError)
                and isinstance(link.__cause__, (ValueError, TypeError))):
            return link.__cause__
        link = link.__cause__
    return None


def _deepest_key_path(err: DecodingError) -> typing.Sequence[str]:
    """The key path of the innermost DecodingError in the chain: draccus re-raises a failed
    union member (an optional list, say) at the union's own path, from the member's error."""
    best: typing.Sequence[str] = err.key_path
    link: BaseException | None = err.__cause__
    while link is not None:
        if isinstance(link, DecodingError) and len(link.key_path) > len(best):
            best = link.key_path
        link = link.__cause__
    return best


def _field_at(cls: type, data: Mapping, key_path: typing.Sequence[str]) -> tuple[str, Any]:
    """(the dotted path as the user wrote it, the type expected there) of draccus's key path into
    the nested data: flat-choice fields leave the shown path, list items show their index."""
    shown: list[str] = []
    tp: Any = cls
    value: Any = data
    for part in key_path:
        tp, _ = _strip_optional(tp)
        if isinstance(value, Mapping) and _is_choice(tp) and CHOICE_TYPE_KEY in value:
            tp = tp.get_choice_class(value[CHOICE_TYPE_KEY])
        if dataclasses.is_dataclass(tp):
            is_flat = any(f.name == part for f, _ in _flat_choices(tp))
            tp = _hints(tp).get(part, Any)
            if not is_flat:
                shown.append(part)
        else:
            args = typing.get_args(tp)
            origin = typing.get_origin(tp)
            fixed_tuple = origin is tuple and args and args[-1] is not Ellipsis
            if fixed_tuple and part.isdigit() and int(part) < len(args):
                tp = args[int(part)]
            elif origin in (dict, Mapping) and len(args) == 2:
                tp = args[1]
            else:
                tp = args[0] if args else Any
            shown.append(part)
        value = value.get(part) if isinstance(value, Mapping) else (
            value[int(part)] if isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value)
            else None)
    return ".".join(shown), _strip_optional(tp)[0]


def _lookup(data: Mapping, key_path: typing.Sequence[str]) -> Any:
    value: Any = data
    for part in key_path:
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
    for name, layer in layers:
        if not isinstance(layer, Mapping):
            raise ConfigError(f"{name}: expected a mapping of {cls.__name__} options, got "
                              f"{type(layer).__name__} {layer!r}")
    # a flat choice picked by a later layer (`--method bc`) applies to the earlier ones' options
    chosen = _selectors(cls, [layer for _, layer in layers])
    merged: dict = {}
    for name, layer in layers:
        merged = merge(merged, layer)
        _decode(cls, {**merged, **chosen}, name)
    return _decode(cls, {**merged, **chosen}, layers[-1][0] if layers else source or cls.__name__)


def _selectors(cls: type, layers: list[Mapping]) -> dict:
    """The selector fields of `cls`'s flat choices that some layer sets: the last value of each."""
    out: dict = {}
    for f, _ in _flat_choices(cls):
        selector = f.metadata[_FLAT_CHOICE]
        for layer in layers:
            if selector in layer:
                out[selector] = layer[selector]
    return out


def config_to_dict(config: Any) -> dict:
    """The config as plain YAML/JSON types (tuples become lists, flat-choice options flat beside
    the parent's); parse_config reads it back."""
    return _flatten_encoded(type(config), draccus.encode(config))


def _flatten_encoded(cls: type, encoded: Any) -> Any:
    if not (dataclasses.is_dataclass(cls) and isinstance(encoded, dict)):
        return encoded
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[f.name])
        if f.name in encoded and dataclasses.is_dataclass(tp) and not _is_choice(tp):
            encoded[f.name] = _flatten_encoded(tp, encoded[f.name])
    return _flatten_flat_choices(cls, encoded)


def field_doc(cls: type, name: str) -> str:
    """The comment documenting field `name` of `cls` (in the class that declares it)."""
    owner = next((k for k in cls.__mro__ if name in vars(k).get("__annotations__", {})), cls)
    try:
        doc = get_attribute_docstring(owner, name)
        return " ".join((doc.comment_inline or doc.comment_above or doc.docstring_below or "").split())
    except Exception:  # docstrings are a nicety: a class without source still parses
        return ""


def _shown(default: Any) -> Any:
    shown = config_to_dict(default) if dataclasses.is_dataclass(default) else default
    return list(shown) if isinstance(shown, tuple) else shown


def _leaves(cls: type, prefix: str = ""):
    """(dotted name, type, default as help shows it, help) of every field, nested dataclasses
    expanded; a flat-choice field gives the options of all its choices, each once, its help
    naming the choices that take it."""
    hints = _hints(cls)
    try:
        defaults = cls()
    except TypeError:  # a field without default
        defaults = None
    flat = dict(_flat_choices(cls))
    selectors = {f.metadata[_FLAT_CHOICE]: base for f, base in flat.items()}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, _ = _strip_optional(hints[f.name])
        name = prefix + f.name
        if f in flat:
            yield from _choice_leaves(flat[f], prefix)
            continue
        if _LATER_CHOICE in f.metadata:
            yield from _choice_leaves(f.metadata[_LATER_CHOICE], name + ".")
            continue
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, name + ".")
            continue
        text = field_doc(cls, f.name)
        if f.name in selectors:
            text = f"{text} (one of: {', '.join(selectors[f.name].get_known_choices())})".strip()
        default = getattr(defaults, f.name, None) if defaults is not None else None
        yield name, tp, f"default {_shown(default)!r}", text


def _choice_leaves(base: Any, prefix: str):
    options: dict[str, dict] = {}  # option -> {"tp", "text", "defaults": {choice: default}}
    for choice, klass in base.get_known_choices().items():
        hints = _hints(klass)
        instance = klass()
        for f in dataclasses.fields(klass):
            if not f.init:
                continue
            entry = options.setdefault(f.name, {"tp": _strip_optional(hints[f.name])[0],
                                                "text": field_doc(klass, f.name), "defaults": {}})
            entry["defaults"][choice] = _shown(getattr(instance, f.name))
    for option, entry in options.items():
        values = list(entry["defaults"].values())
        if all(v == values[0] for v in values):
            default = f"default {values[0]!r}"
        else:
            default = "defaults: " + ", ".join(f"{c} {v!r}" for c, v in entry["defaults"].items())
        text = f"{', '.join(entry['defaults'])}: {entry['text']}"
        yield prefix + option, entry["tp"], default, text


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None,
                         exclude: tuple[str, ...] = ()) -> None:
    """Add one `--name` flag per field of `cls` (nested: `--policy.image_size`; a flat-choice
    field's options flat: `--beta`), documented by the comment above the field. Values are YAML
    (`--max_delta "[0.1, 0.1, 0.1]"`, `--name null`); read them back with `config_from_args`.
    Fields named in `exclude` get no flag."""
    group = parser.add_argument_group(title or f"{cls.__name__} options (also settable in the YAML file)")
    for name, tp, default, text in _leaves(cls):
        if name in exclude or name.split(".")[0] in exclude:
            continue
        help_text = f"{text} ({default})" if text else default
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
