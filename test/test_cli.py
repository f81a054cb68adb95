import argparse
import io
import subprocess
import sys

import pytest

from apo_ros.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "bench" in capsys.readouterr().out


def _commands(parser, prefix=()):
    """(command words, parser) of every command and subcommand, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


def test_every_command_and_option_is_documented_and_handled():
    commands = list(_commands(build_parser()))
    names = {" ".join(words) for words, _ in commands}
    assert {"sim eval", "bags info", "bags plot", "bags repair", "policy new", "policy info", "train",
            "session", "demo", "bench"} <= names
    for words, parser in commands[1:]:
        label = " ".join(words)
        assert (parser.description or "").strip(), f"{label}: no description"
        undocumented = [a.option_strings or a.dest for a in parser._actions
                        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
                        and not (a.help or "").strip()]
        assert not undocumented, f"{label}: options without help {undocumented}"
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        assert has_sub or callable(parser.get_default("func")), f"{label}: no handler"


def test_a_group_without_its_subcommand_prints_its_help(capsys):
    assert main(["bags"]) == 2
    assert "info" in capsys.readouterr().out


def test_console_entry_runs():
    out = subprocess.run([sys.executable, "-m", "apo_ros.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "apo_ros" in out.stdout


def test_bench_parses_no_sections_and_rejects_unknown(capsys):
    args = build_parser().parse_args(["bench", "--quick"])
    assert args.sections == [] and args.quick
    assert main(["bench", "no_such_section"]) == 2
    assert "no_such_section" in capsys.readouterr().err


# One error path: every user mistake below gives one line naming the file and exit code 2.

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("apo-ros: error: "), err
    return lines[-1]


def test_user_error_from_python_m_is_one_line(tmp_path):
    """`python -m apo_ros.cli` runs cli.py as __main__: the error class must still be recognised."""
    out = subprocess.run([sys.executable, "-m", "apo_ros.cli", "bags", "info", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"apo-ros: error: no readable bag in {tmp_path / 'none'}"


def test_unwritable_output_is_reported_before_any_work(tmp_path, capsys):
    assert main(["policy", "new", "--kind", "small", "-o", "/sys/apo"]) == 2
    assert "/sys/apo" in _one_error_line(capsys)
    from apo_ros.recording.synthetic import write_synthetic_episode

    write_synthetic_episode(str(tmp_path / "ep"), ["policy"] * 3, size=8)
    assert main(["bags", "plot", str(tmp_path / "ep"), "-o", "/proc/nope/x.png"]) == 2
    line = _one_error_line(capsys)
    assert "/proc/nope/x.png" in line and "does not exist" in line


def test_truncated_safetensors_names_the_file(tmp_path, capsys):
    import os

    assert main(["policy", "new", "--kind", "small", "-o", str(tmp_path / "p"), "--device", "cpu"]) == 0
    capsys.readouterr()
    weights = next(os.path.join(root, f) for root, _, files in os.walk(tmp_path / "p")
                   for f in files if f.endswith(".safetensors"))
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    assert main(["policy", "info", str(tmp_path / "p")]) == 2
    line = _one_error_line(capsys)
    assert weights in line and "safetensors" in line


def test_invalid_yaml_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: apo\nsteps: [1, 2\n")
    assert main(["train", "--config", str(bad), "--demos", str(tmp_path), "--init", "small",
                 "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and "YAML" in line and "line 2" in line.replace(":2:", " line 2")


def test_user_message_leaves_bugs_alone():
    from apo_ros.errors import UserError, reading, user_message

    assert user_message(ValueError("a bug")) is None and user_message(KeyError("x")) is None
    assert user_message(PermissionError(13, "Permission denied", "/x")) == "/x: Permission denied"
    import yaml

    with pytest.raises(yaml.YAMLError) as bad_yaml:
        yaml.safe_load(io.StringIO("a: [1,\n"))
    assert user_message(bad_yaml.value).startswith("<file>:2:1: invalid YAML: ")
    with pytest.raises(UserError, match=r"^cfg.yaml: steps: not an int$"):
        with reading("cfg.yaml"):
            raise ValueError("steps: not an int")
    with pytest.raises(ZeroDivisionError):  # not an input error: the traceback stays
        with reading("cfg.yaml"):
            raise ZeroDivisionError


def test_arguments_are_checked_before_any_work(tmp_path, capsys):
    assert main(["policy", "new", "--kind", "small", "--chunk-size", "0", "-o", str(tmp_path / "p")]) == 2
    assert "--chunk-size must be >= 1" in _one_error_line(capsys)
    base = ["session", "--task", "hang_cup", "--policy", "expert", "--bags", str(tmp_path / "b")]
    assert main([*base, "--max-steps", "0"]) == 2
    assert "--max-steps must be >= 1" in _one_error_line(capsys)
    bad = tmp_path / "safety.yaml"
    bad.write_text("safety_filter:\n  ros__parameters:\n    gripper_max: high\n")
    assert main([*base, "--safety-config", str(bad)]) == 2
    assert f"{bad} [safety_filter]: gripper_max: expected float, got 'high'" in _one_error_line(capsys)
    assert not (tmp_path / "b").exists() and not (tmp_path / "p").exists()  # nothing was started


def test_sim_view_checks_its_output_before_running_the_episode(capsys):
    assert main(["sim", "view", "--task", "hang_cup", "-o", "/proc/nope/sheet.png"]) == 2
    assert "/proc/nope/sheet.png" in _one_error_line(capsys)
    assert main(["sim", "eval", "--task", "hang_cup", "--max-steps", "0"]) == 2
    assert "--max-steps must be >= 1" in _one_error_line(capsys)
