import subprocess
import sys

import pytest

from apo_ros.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sub.choices, "no subcommands registered"
    for name, p in sub.choices.items():
        assert p.format_help().strip(), name


def test_console_entry_runs():
    out = subprocess.run([sys.executable, "-m", "apo_ros.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "apo_ros" in out.stdout


def test_bench_parses_no_sections_and_rejects_unknown(capsys):
    args = build_parser().parse_args(["bench", "--quick"])
    assert args.sections == [] and args.quick
    assert main(["bench", "no_such_section"]) == 1
    assert "no_such_section" in capsys.readouterr().err
