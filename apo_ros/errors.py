"""Errors a user can cause, and how they are shown: one line naming the file and the problem.

This module imports nothing from apo_ros, so any area can raise `UserError` without importing the
CLI. `apo_ros.cli.main` prints `describe(err)` for every error it recognises (see `user_message`)
and exits with code 2; anything else is a bug and keeps its traceback.

Wrap code that parses one user-given input in `reading(source)` so the message names it:

    with reading(path):
        config = yaml.safe_load(open(path))
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

EXIT_USER_ERROR = 2  # the same code argparse uses for a bad command line


class UserError(Exception):
    """An error caused by the user's input (a bad path, a bad bag, a missing option). The CLI
    prints its message on one line, without a traceback."""


class ConfigError(UserError, ValueError):
    """A bad configuration value (a YAML file, a flag, a parameter). A ValueError too, so code
    that catches ValueError around config parsing keeps working."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _yaml_message(err: BaseException) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or _one_line(err)
    if mark is None:
        return f"invalid YAML: {_one_line(problem)}"
    context, where = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and where is not None and where.line != mark.line:  # e.g. where an unclosed [ opened
        problem = f"{_one_line(problem)} ({_one_line(context)} at line {where.line + 1})"
    return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {_one_line(problem)}"


def _is_yaml_error(err: BaseException) -> bool:
    yaml = sys.modules.get("yaml")  # a YAMLError can only exist if yaml was imported
    return yaml is not None and isinstance(err, yaml.YAMLError)


def _is_safetensors_error(err: BaseException) -> bool:
    return type(err).__module__.split(".")[0] == "safetensors"


def user_message(err: BaseException) -> str | None:
    """The one-line message for an error a user can cause, or None for a bug.

    Recognised: UserError; OSError (missing file, permission denied, disk full, refused
    connection); invalid YAML; a corrupt safetensors file. ValueError and TypeError are not
    recognised here (they are usually bugs): code that parses user input turns them into a
    UserError with `reading(source)`."""
    if isinstance(err, UserError):
        return _one_line(err)
    if isinstance(err, OSError):
        if err.filename is not None and err.strerror:
            target = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
            return f"{target}: {err.strerror}"
        return _one_line(err.strerror or err) or type(err).__name__
    if _is_yaml_error(err):
        return _yaml_message(err)
    if _is_safetensors_error(err):
        return f"not a valid safetensors file ({_one_line(err)})"
    return None


@contextlib.contextmanager
def reading(source: str) -> Iterator[None]:
    """Turn an error raised while parsing `source` (a file, a flag, a config section) into one
    UserError line that names it. ValueError, TypeError and KeyError count as bad input here."""
    try:
        yield
    except UserError as err:
        if source in str(err):
            raise
        raise UserError(f"{source}: {err}") from err
    except (ValueError, TypeError, KeyError) as err:
        detail = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise UserError(f"{source}: {_one_line(detail)}") from err
    except Exception as err:
        message = user_message(err)
        if message is None:
            raise
        raise UserError(message if source in message else f"{source}: {message}") from err



def check_writable(path: str, what: str, *, create_parents: bool = True) -> None:
    """Raise UserError now, before any slow work, if `path` (to be written; `what` names it in the
    message, e.g. "--out") cannot be. With create_parents (a directory made with os.makedirs) the
    nearest existing ancestor must be a writable directory; without (a file opened for writing) its
    parent directory must exist and be writable. Nothing is created."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        probe = target
    elif not create_parents:
        probe = os.path.dirname(target)
        if not os.path.exists(probe):
            raise UserError(f"{what} {path}: directory {probe} does not exist")
    else:
        probe = os.path.dirname(target)
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"{what} {path}: {probe} is not a directory")
    try:  # the real test (permission bits, read-only mounts, pseudo file systems like /sys)
        os.rmdir(tempfile.mkdtemp(prefix=".apo_ros_write_check_", dir=probe))
    except OSError as err:
        raise UserError(f"{what} {path}: cannot write in {probe} ({err.strerror or err})") from None
