"""The project installs as `simple_registry`; its source folder is never `services`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("folder", [ROOT, Path("/")])
def test_simple_registry_imports_and_services_does_not_from_any_folder(folder: Path) -> None:
    assert python("import simple_registry.cli", folder).returncode == 0
    refused = python("import services", folder)
    assert refused.returncode != 0
    assert "simple_registry" in refused.stderr or "No module named" in refused.stderr


def test_every_source_package_is_listed_for_installation() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(("simple_registry", *init.parent.relative_to(ROOT / "services").parts))
        for init in (ROOT / "services").rglob("__init__.py")
    }
    assert found == listed


def test_loggers_are_named_after_their_modules() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "services").rglob("*.py")
        if 'getLogger("simple_registry' in path.read_text()
    ]
    assert offenders == []
