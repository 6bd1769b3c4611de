"""deploy/smoke.sh takes debootstrap's Debian package source from the machine's apt
configuration (deploy/apt-source.sh), never from a mirror host written in the script.

The smoke test itself needs a Docker engine; what is checked here runs anywhere: the
scripts' syntax, and `debian_mirror` against fake apt folders, under the same
`set -euo pipefail` as the smoke script.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "deploy" / "smoke.sh"
APT_SOURCE = ROOT / "deploy" / "apt-source.sh"

SIGNED_BY_INLINE = """Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 Suites: not-a-field
 URIs: http://inside-the-key.example/debian
 -----END PGP PUBLIC KEY BLOCK-----
"""


def debian_mirror(apt_dir: Path, suite: str = "bookworm") -> subprocess.CompletedProcess[str]:
    """`debian_mirror APT_DIR SUITE` as deploy/smoke.sh calls it."""
    script = 'set -euo pipefail; . "$0"; debian_mirror "$1" "$2"'
    return subprocess.run(
        ["bash", "-c", script, str(APT_SOURCE), str(apt_dir), suite],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_the_smoke_script_and_its_apt_source_pass_bash_syntax_check() -> None:
    for script in (SMOKE, APT_SOURCE):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, (script.name, result.stderr)


def test_the_smoke_script_names_no_mirror_host_and_asks_apt_for_its_source() -> None:
    text = SMOKE.read_text()
    assert "debian.org" not in text
    assert "debian.org" not in APT_SOURCE.read_text()
    assert '. "$ROOT/deploy/apt-source.sh"' in text
    assert 'debian_mirror /etc/apt "$SUITE"' in text
    assert '"$SUITE" "$WORK/rootfs" "$MIRROR"' in text  # what debootstrap is given


def test_a_deb822_source_of_the_suite_wins_over_disabled_security_and_source_only_ones(
    tmp_path: Path,
) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list.d/debian.sources": (
                "# a comment\n"
                "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n"
                "Components: main\nEnabled: no\n\n"
                "Types: deb-src\nURIs: http://sources-only.example/debian\nSuites: bookworm\n\n"
                "Types: deb\nURIs: http://security.example/debian-security\n"
                "Suites: bookworm-security\nComponents: main\n\n"
                "types: deb deb-src\n"
                "uris: https://mirror.example/debian http://second.example/debian\n"
                "suites: bookworm bookworm-updates\ncomponents: main contrib\n" + SIGNED_BY_INLINE
            )
        },
    )
    result = debian_mirror(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "https://mirror.example/debian\n"


def test_a_one_line_sources_list_with_options_is_read_before_sources_list_d(
    tmp_path: Path,
) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list": (
                "# deb http://commented.example/debian bookworm main\n"
                "deb-src http://sources-only.example/debian bookworm main\n"
                "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] "
                "http://ftp.example.org/debian bookworm main  # the mirror\n"
            ),
            "sources.list.d/other.sources": (
                "Types: deb\nURIs: http://later.example/debian\nSuites: bookworm\n"
            ),
        },
    )
    result = debian_mirror(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "http://ftp.example.org/debian\n"


def test_without_the_suite_the_first_release_source_is_used_never_a_security_one(
    tmp_path: Path,
) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list.d/a.list": "deb http://security.example/debian-security trixie-security main\n",
            "sources.list.d/b.list": (
                "deb cdrom:[Debian 13]/ trixie main\n"
                "deb http://updates.example/debian trixie-updates main\n"
                "deb http://release.example/debian trixie main\n"
            ),
        },
    )
    result = debian_mirror(root, "bookworm")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "http://release.example/debian\n"


def test_no_usable_source_fails_with_a_message_naming_the_apt_files(tmp_path: Path) -> None:
    empty = apt_dir(tmp_path, {})
    unusable = apt_dir(
        tmp_path / "unusable",
        {
            "sources.list": "deb cdrom:[Debian 12]/ bookworm main\n",
            "sources.list.d/debian.sources": (
                "Types: deb-src\nURIs: http://sources-only.example/debian\nSuites: bookworm\n\n"
                "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n"
            ),
            "sources.list.d/disabled.list.disabled": "deb http://x.example/debian bookworm main\n",
        },
    )
    for root in (empty, unusable, tmp_path / "missing"):
        result = debian_mirror(root)
        assert result.returncode == 1, (root, result.stdout)
        assert result.stdout == ""
        assert "no Debian package source in the apt configuration" in result.stderr
        assert f"{root}/sources.list" in result.stderr
