"""Lazy package exports: a package's public names load their module on first use, so
`apo-ros --help` and light imports do not pay for torch, MuJoCo or rosbags."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` (its `__name__`): `exports` maps a public name to the
    module that defines it. The value is cached in the package on first access."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
