"""Docs that a test keeps honest: every CLI command and every setting is documented."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from banditloop import errors
from banditloop.cli import main
from banditloop.config import ServiceConfiguration, Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def commands(group: click.Group, prefix: str = "banditloop") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += commands(cmd, f"{prefix} {name}")
        else:
            out.append(f"{prefix} {name}")
    return out


@pytest.mark.parametrize("command", commands(main))
def test_every_cli_command_is_in_the_operator_guide(command: str) -> None:
    assert f"`{command}" in (DOCS / "operator-guide.md").read_text()


@pytest.mark.parametrize("command", commands(main))
def test_every_cli_command_has_help_with_an_example(command: str) -> None:
    cmd: click.Command = main
    for part in command.split()[1:]:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[part]
    assert "Example: banditloop" in (cmd.help or "")


@pytest.mark.parametrize("field", [*Settings.model_fields, *ServiceConfiguration.model_fields])
def test_every_setting_is_in_the_configuration_docs(field: str) -> None:
    assert f"`{field}`" in (DOCS / "configuration.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    quickstart = readme[: readme.index("make test") + 20]
    assert "make run" in quickstart


def _exception_classes() -> dict[str, str]:
    """Every public exception class defined in the package: name -> module."""
    import ast

    found = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {b.id if isinstance(b, ast.Name) else "" for b in node.bases}
                if bases & {"Exception", *ERROR_NAMES}:
                    found[node.name] = str(path.relative_to(SRC))
    return found


SRC = DOCS.parent / "src" / "banditloop"
ERROR_NAMES = {
    name
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, Exception)
}


def test_every_exception_is_in_the_one_error_tree() -> None:
    defined = _exception_classes()
    assert defined, "no exception classes found"
    elsewhere = {name: module for name, module in defined.items() if module != "errors.py"}
    assert elsewhere == {}, "define exceptions in errors.py"
    tree = errors.__doc__ or ""
    assert [name for name in defined if name not in tree] == []


def test_the_readme_names_every_module_in_its_source_layout() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    layout = readme[readme.index("Source layout") :]
    names = [p.name for p in SRC.glob("*.py") if p.name != "__main__.py"]
    names += [f"{p.name}/" for p in SRC.iterdir() if (p / "__init__.py").exists()]
    names += [p.name for p in (SRC / "store").glob("*.py") if p.name != "__init__.py"]
    assert [name for name in sorted(names) if f"`{name}`" not in layout] == []
