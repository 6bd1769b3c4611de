"""Reading TOML: merging several files, and typed getters that name the dotted key.

`ConfigError` is the one error a bad configuration raises: the key, the value (hidden when
secret) and what was expected.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, overload


class ConfigError(Exception):
    """A configuration value that stops start-up."""

    def __init__(self, key: str, value: Any, expected: str):
        self.key = key
        self.value = value
        self.expected = expected
        shown = "<hidden>" if _is_secret_key(key) else repr(value)
        super().__init__(f"{key} = {shown}: expected {expected}")


def _is_secret_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in {"password", "secret_key", "access_key_id"}


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "KIB": 1024,
    "KI": 1024,
    "M": 1000**2,
    "MB": 1000**2,
    "MIB": 1024**2,
    "MI": 1024**2,
    "G": 1000**3,
    "GB": 1000**3,
    "GIB": 1024**3,
    "GI": 1024**3,
    "T": 1000**4,
    "TB": 1000**4,
    "TIB": 1024**4,
    "TI": 1024**4,
}


def parse_size(text: str | int) -> int:
    """`"5MiB"` -> 5242880, `"100MB"` -> 100000000, `1024` -> 1024."""
    if isinstance(text, bool):
        raise ValueError("a boolean is not a size")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("negative size")
        return text
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.upper())
    if multiplier is None:
        raise ValueError(f"unknown size unit: {unit!r}")
    return int(float(number) * multiplier)


class Table:
    """A TOML table being read: typed getters that name the dotted key on error and remember
    which keys were consumed, so that the rest can be reported as unknown."""

    def __init__(self, data: Mapping[str, Any], path: str, unknown: list[str]):
        self._data = data
        self._path = path
        self._unknown = unknown
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return name in self._data

    def raw(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name)

    def ignore(self, *names: str) -> None:
        self._seen.update(names)

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), None, "a string (this key is required)")
            return default
        if not isinstance(value, str):
            raise ConfigError(self.key(name), value, "a string")
        return value

    def boolean(self, name: str, default: bool | None) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), value, "true or false")
        return value

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), value, "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigError(self.key(name), value, f"an integer at least {minimum}{bound}")
        return value

    @overload
    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float: ...
    @overload
    def number(self, name: str, default: None, *, minimum: float = 0.0) -> float | None: ...
    def number(self, name: str, default: float | None, *, minimum: float = 0.0) -> float | None:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ConfigError(self.key(name), value, f"a number of seconds, at least {minimum}")
        return float(value)

    def size(self, name: str, default: int | None) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse_size(value)
        except ValueError:
            raise ConfigError(
                self.key(name), value, 'a size in bytes or with a unit, like "5MiB" or "100MB"'
            ) from None

    def patterns(self, name: str) -> tuple[re.Pattern[str], ...] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), value, "a list of regular expressions")
        compiled = []
        for index, text in enumerate(value):
            try:
                compiled.append(re.compile(text))
            except re.error as error:
                raise ConfigError(
                    f"{self.key(name)}[{index}]", text, f"a valid regular expression ({error})"
                ) from None
        return tuple(compiled)

    def path(self, name: str) -> Path | None:
        value = self.string(name)
        return Path(value) if value is not None else None

    def table(self, name: str, display: str | None = None) -> Table | None:
        """The sub-table `name`; `display` is its dotted path when the name needs quoting."""
        value = self.raw(name)
        path = display or self.key(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(path, value, "a table")
        return Table(value, path, self._unknown)

    def tables(self, name: str) -> list[Table]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(self.key(name), value, "an array of tables ([[...]])")
        return [Table(v, f"{self.key(name)}[{i}]", self._unknown) for i, v in enumerate(value)]

    def items(self) -> Iterable[tuple[str, Any]]:
        return self._data.items()

    def finish(self, *, strict: bool = False) -> None:
        """Record the keys nobody read as unknown. `strict` (tables that decide who gets
        in): an unknown key stops start-up, since a typo there must not pass unnoticed."""
        for name in self._data:
            if name not in self._seen:
                if strict:
                    known = ", ".join(sorted(self._seen)) or "none"
                    # The value may be a secret under a misspelt name: never shown.
                    raise ConfigError(self.key(name), "…", f"a known key here ({known})")
                self._unknown.append(self.key(name))


def merge_tables(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Later files win; tables merge recursively; arrays and scalars are replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_tables(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_files(paths: Iterable[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigError("--config", str(path), "an existing TOML file") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError("--config", str(path), f"valid TOML ({error})") from None
        except OSError as error:
            raise ConfigError("--config", str(path), f"a readable file ({error})") from None
        merged = merge_tables(merged, data)
    return merged
