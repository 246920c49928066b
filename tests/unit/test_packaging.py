"""pyproject.toml: the harness installs as a package with the venv's dependencies and a working command."""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib

import pytest

from harness import cli
from harness.settings import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def requirement_pins(text: str) -> dict[str, str]:
    """name -> version of each `name==version` line (comments and blank lines skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            pins[name.lower()] = version
    return pins


def test_declared_dependencies_are_the_venvs_pins():
    """pip install -e . must get what make setup gets: each runtime and test dependency pinned alike."""
    requirements = requirement_pins((REPO_ROOT / "requirements.txt").read_text())
    declared = requirement_pins("\n".join(PYPROJECT["project"]["dependencies"]
                                          + PYPROJECT["project"]["optional-dependencies"]["test"]))
    assert declared == requirements


def third_party_imports() -> set[str]:
    """Top-level modules the harness imports that are neither its own nor the standard library's."""
    names = set()
    for path in (REPO_ROOT / "harness").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"harness", "__future__"}


def test_every_runtime_import_is_declared():
    imported = third_party_imports()
    assert {"drgn", "pexpect"} <= imported  # the scan sees the harness's imports at all
    assert imported <= set(requirement_pins("\n".join(PYPROJECT["project"]["dependencies"])))


def test_console_script_is_the_clis_main(capsys):
    target = PYPROJECT["project"]["scripts"]["livedump-harness"]
    module, _, attr = target.partition(":")
    main = getattr(importlib.import_module(module), attr)
    assert main is cli.main
    # The script's wrapper calls main() with no arguments: it must parse sys.argv itself.
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "check-consistency" in capsys.readouterr().out


@pytest.mark.parametrize("argv0, expected", [
    ("/work/main/harness/__main__.py", "python -m harness"),
    ("/tmp/venv/bin/livedump-harness", "livedump-harness"),
])
def test_usage_names_the_command_the_user_typed(argv0, expected):
    assert cli.program_name(argv0) == expected
