"""The web UI's templates and assets are installed with the package: setuptools' own
`build_py` (what a wheel or a non-editable install is made of) copies every one, and the UI
serves them from that installed tree, away from the source folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "services" / "frontend" / "ui"


def test_an_installed_package_holds_every_template_and_asset_and_serves_them(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "services", source / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = tmp_path / "installed"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(built),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    installed = built / "simple_registry" / "frontend" / "ui"
    for folder in ("static", "templates"):
        expected = sorted(p.name for p in (UI / folder).iterdir() if p.is_file())
        assert expected, folder
        assert sorted(p.name for p in (installed / folder).iterdir()) == expected
    check = (
        "from simple_registry.frontend.ui import assets, pages\n"
        "print(sorted(assets.Assets().names))\n"
        "for name in sorted(pages.TEMPLATES.iterdir()):\n"
        "    pages.ENVIRONMENT.get_template(name.name)\n"
        "print(pages.TEMPLATES)\n"
    )
    served = subprocess.run(
        [sys.executable, "-c", check],
        cwd=tmp_path,
        env={"PYTHONPATH": str(built), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 0, served.stderr
    names, templates = served.stdout.splitlines()
    assert names == str(sorted(p.name for p in (UI / "static").iterdir()))
    assert templates.startswith(str(built))
