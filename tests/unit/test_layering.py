"""The architecture's import rules, read from the source: `frontend` and `cacher` never
import each other, and `common` imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"


def imported_services(path: Path) -> set[str]:
    """The top-level service folders (common, frontend, cacher) a module imports."""
    return imported_services_of(path.read_text(), path)


def imported_services_of(source: str, path: Path) -> set[str]:
    """The same for `source`, read as the module at `path` (for relative imports)."""
    package = path.relative_to(SERVICES).parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
            else:
                base = (node.module or "").split(".")[:1]
                if base != ["simple_registry"]:
                    continue
                base = []
            module = (node.module or "").split(".") if node.module else []
            if node.level == 0:
                module = module[1:]
            parts = base + module
            if parts:
                found.add(parts[0])
            else:  # `from .. import cacher` or `from simple_registry import cacher`
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "simple_registry" and len(parts) > 1:
                    found.add(parts[1])
    return found


def modules_of(folder: str) -> list[Path]:
    return sorted((SERVICES / folder).rglob("*.py"))


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("frontend", {"cacher"}), ("cacher", {"frontend"}), ("common", {"frontend", "cacher"})],
)
def test_a_service_folder_never_imports_the_ones_it_must_not(
    folder: str, forbidden: set[str]
) -> None:
    offenders = {
        str(path.relative_to(SERVICES)): imported_services(path) & forbidden
        for path in modules_of(folder)
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_reader_of_imports_sees_an_import_across_folders() -> None:
    # The rule above could pass by reading nothing: the CLI imports all three.
    assert imported_services(SERVICES / "cli.py") >= {"common", "frontend", "cacher"}


@pytest.mark.parametrize(
    "statement",
    [
        "from ..cacher import service",
        "from .. import cacher",
        "from ..cacher.service import CACHER",
        "from simple_registry import cacher",
        "from simple_registry.cacher import service",
        "import simple_registry.cacher.service",
    ],
)
def test_the_reader_of_imports_sees_every_form_of_import(statement: str) -> None:
    # Read as if it were a module of services/frontend/.
    assert imported_services_of(statement, SERVICES / "frontend" / "probe.py") == {"cacher"}


def test_the_pull_through_logic_does_not_import_aiohttp() -> None:
    users = [
        str(path.relative_to(SERVICES))
        for path in modules_of("frontend/pullthrough")
        if "aiohttp"
        in {
            name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in (
                [alias.name.split(".")[0] for alias in node.names]
                if isinstance(node, ast.Import)
                else [(node.module or "").split(".")[0]]
            )
        }
    ]
    assert users == []
