"""The README's two quick-start commands and CI stay in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_exactly_two_commands() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "sfsync dev" in commands[0]
    assert "pytest" in commands[1]
    for cmd in commands:  # each does its own set-up from a fresh venv
        assert cmd.startswith("python3.11 -m venv .venv && .venv/bin/pip install")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert quick_start_commands()[1] in ci.splitlines()
    assert "rm -rf .venv" in ci.split(quick_start_commands()[1])[0]
