"""The docs' tables of the training methods and their settings, written from the method registry.

docs/training.md holds them between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`
lines; `python -m apo_ros.training.method_docs docs/training.md` rewrites them after a method or
a setting changes, and a test fails while the page differs from what the registry says.
"""

from __future__ import annotations

import json
import re
import sys

from apo_ros.config import choice_options, config_to_dict, field_doc
from apo_ros.training.method_configs import MethodConfig
from apo_ros.training.registry import METHODS


def _range(value) -> str:
    """A resolved setting as the docs show it; a [min, max] pair's null sides are unbounded."""
    if isinstance(value, list) and len(value) == 2:
        lo = "-inf" if value[0] is None else f"{value[0]:g}"
        hi = "inf" if value[1] is None else f"{value[1]:g}"
        return f"[{lo}, {hi}]"
    return json.dumps(value)


def _loss_name(m) -> str:
    loss = m.loss_path
    return loss.rsplit(":", 1)[-1] if isinstance(loss, str) else loss.__name__


def methods_table() -> str:
    """One row per registered method: what it trains, what it needs, the defaults it leaves to
    itself."""
    rows = ["| method | what it trains | step loss | needs | reference | default lr | default sampling | "
            "other defaults of null settings |", "|---|---|---|---|---|---|---|---|"]
    for name, m in METHODS.items():
        sampling = m.default_sampling + ("" if len(m.samplings) > 1 else " (only)")
        effective = m.config().effective()
        other = ", ".join(f"`{k}` {_range(v)}" for k, v in effective.items()) or "-"
        rows.append(f"| `{name}` | {m.summary} | `{_loss_name(m)}` | {m.check.needs} | "
                    f"{'yes' if m.needs_reference else 'no'} | {m.default_lr:g} | {sampling} | {other} |")
    return "\n".join(rows)


def settings_table() -> str:
    """One row per method setting (a YAML key and a flag): the methods that take it, its default
    and what it does."""
    settings: dict[str, dict] = {}
    for name in METHODS:
        cls = MethodConfig.get_choice_class(name)
        defaults = config_to_dict(cls())
        for option in choice_options(MethodConfig, name):
            entry = settings.setdefault(option, {"methods": [], "defaults": set(),
                                                 "text": field_doc(cls, option)})
            entry["methods"].append(name)
            entry["defaults"].add(json.dumps(defaults[option]))
    rows = ["| setting | methods | default | meaning |", "|---|---|---|---|"]
    for option, e in settings.items():
        default = " / ".join(sorted(e["defaults"]))
        rows.append(f"| `{option}` | {', '.join(e['methods'])} | {default} | {e['text']} |")
    return "\n".join(rows)


TABLES = {"methods": methods_table, "method settings": settings_table}


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {re.escape(name)} [^\n]*-->\n)(.*?)(<!-- end generated: "
                      rf"{re.escape(name)} -->)", re.S)


def rendered(text: str) -> str:
    """`text` (a docs page) with every generated block rewritten from the registry."""
    for name, table in TABLES.items():
        text = _block(name).sub(lambda m, t=table: f"{m.group(1)}{t()}\n{m.group(3)}", text)
    return text


def blocks(text: str) -> dict[str, str]:
    """The generated blocks a page holds, by name."""
    return {name: m.group(2) for name in TABLES if (m := _block(name).search(text))}


def main(argv: list[str]) -> int:
    for path in argv:
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(rendered(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
