"""Docs as tests: every command has help with an example; the README's commands and
settings exist."""

from __future__ import annotations

import re
from typing import Any

import typer.main
from typer.testing import CliRunner

import drip
from drip.cli import app
from drip.core.config import Settings
from tests.fixtures import ROOT


def _commands() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def walk(prefix: str, command: Any) -> None:
        if hasattr(command, "commands"):  # a group (typer may bundle its own click)
            for name, sub in command.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            found.append((prefix, command))

    walk("", typer.main.get_command(app))
    return found


def test_every_command_has_help_with_an_example() -> None:
    """Each command's --help works and its docstring shows an example invocation."""
    runner = CliRunner()
    for name, command in _commands():
        assert command.help and "Example: drip " in command.help, name
        result = runner.invoke(app, [*name.split(), "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_readme_lists_every_command() -> None:
    """The README's command table mentions each top-level command and noun."""
    readme = (ROOT / "README.md").read_text()
    for name, _ in _commands():
        assert f"drip {name.split()[0]}" in readme, name


def test_the_configuration_page_documents_every_setting() -> None:
    """Each setting's environment variable appears in docs/configuration.md's table, and
    every one the README names exists."""
    table = (ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`DRIP_{name.upper()}`" in table, name
    named = set(re.findall(r"`DRIP_([A-Z_]+)`", (ROOT / "README.md").read_text()))
    assert named and named <= {name.upper() for name in Settings.model_fields}, named


def test_the_readme_is_a_manual_and_its_links_lead_somewhere() -> None:
    """The README stays a short manual (at most 300 lines), and every relative link in it
    and in docs/ names a file that exists."""
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 300
    for page in [readme, *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)


def test_readme_starts_with_the_two_commands() -> None:
    """The README opens with `make run` and `make test`, and the Makefile has both targets."""
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make run" in head and "make test" in head
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_public_api_is_sorted_and_importable() -> None:
    """drip.__all__ is sorted and every name in it exists."""
    assert drip.__all__ == sorted(drip.__all__)
    for name in drip.__all__:
        assert hasattr(drip, name)
