"""CEL rules (access and retention policies), compiled once at start-up.

The engine is `common-expression-language` (the Rust `cel` crate, the family Angos itself
uses), chosen by measurement against cel-python and cel-expr-python: it gives Angos's answers
on its documented rules, and a compiled rule evaluates in microseconds.

A rule that does not parse, or names a variable or function the policy does not offer, is a
`RuleInvalid` at start-up. Evaluation errors (a missing key, `null.claims`, a bad argument)
are `RuleFailed`; each policy decides what a failure means.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

# The engine logs exceptions raised inside our functions; we report failures ourselves.
logging.getLogger("cel").setLevel(logging.ERROR)

# Names bound inside macros (`exists(x, ...)`, `all`, `map`, `filter`) show up as variable
# references; these are CEL's own operators and macros, never ours to offer.
_BUILTIN_FUNCTIONS = frozenset(
    {
        "size",
        "has",
        "matches",
        "startsWith",
        "endsWith",
        "contains",
        "exists",
        "exists_one",
        "all",
        "map",
        "filter",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "type",
        "dyn",
        "duration",
        "timestamp",
        "max",
        "min",
    }
)


class RuleInvalid(ValueError):
    """A rule that cannot be used: it does not parse or names what the policy lacks."""


class RuleFailed(Exception):
    """A rule raised an error while being evaluated."""


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def contains(container: Any, item: Any) -> bool:
    """`list.contains(x)` and `string.contains(s)`: Angos's documented rules use both."""
    if isinstance(container, str):
        if not isinstance(item, str):
            raise TypeError("string.contains takes a string")
        return item in container
    if isinstance(container, list | tuple | dict):
        return item in container
    raise TypeError(f"contains() does not apply to {type(container).__name__}")


def time_functions(now: float | None = None) -> dict[str, Callable[..., Any]]:
    """`now()` and the durations of retention rules, all in whole seconds as Angos has them."""
    current = int(now if now is not None else time.time())
    return {
        "now": lambda: current,
        "days": lambda n: _whole(n) * 86400,
        "hours": lambda n: _whole(n) * 3600,
        "minutes": lambda n: _whole(n) * 60,
    }


@dataclass(frozen=True, slots=True)
class Rule:
    text: str
    key: str  # the configuration key it came from, e.g. global.access_policy.rules[0]
    program: Any = field(repr=False, compare=False)

    def evaluate(
        self, variables: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]
    ) -> Any:
        context = cel.Context(
            variables=dict(variables), functions={"contains": contains, **functions}
        )
        try:
            return self.program.execute(context)
        except Exception as error:  # the engine raises KeyError, TypeError, RuntimeError, ...
            raise RuleFailed(f"{type(error).__name__}: {error}") from error


def compile_rule(text: str, key: str, variables: Iterable[str], functions: Iterable[str]) -> Rule:
    if not isinstance(text, str) or not text.strip():
        raise RuleInvalid("an empty rule")
    try:
        program = cel.compile(text)
    except ValueError as error:
        raise RuleInvalid(str(error).replace("\n", " ")) from None
    offered_variables = set(variables)
    offered_functions = set(functions) | {"contains"}
    references = program.references()
    unknown_functions = {
        name
        for name in references.get("functions", ())
        # Operators are named like `_==_`, `!_`, `@in`: only plain identifiers are functions.
        if name.isidentifier()
        and not name.startswith("_")
        and name not in _BUILTIN_FUNCTIONS
        and name not in offered_functions
    }
    if unknown_functions:
        raise RuleInvalid(f"unknown function {', '.join(sorted(unknown_functions))}()")
    macro_bound = _macro_variables(text)
    unknown_variables = {
        name
        for name in references.get("variables", ())
        if name not in offered_variables and name not in macro_bound
    }
    if unknown_variables:
        raise RuleInvalid(
            f"unknown variable {', '.join(sorted(unknown_variables))} "
            f"(offered: {', '.join(sorted(offered_variables))})"
        )
    return Rule(text, key, program)


_MACRO_BINDING = re.compile(r"\.(?:exists|exists_one|all|map|filter)\(\s*([A-Za-z_]\w*)\s*,")


def _macro_variables(text: str) -> set[str]:
    """Names a macro binds, as in `list.exists(x, x == 1)`: they are not free variables."""
    return set(_MACRO_BINDING.findall(text))
