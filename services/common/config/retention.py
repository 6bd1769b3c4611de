"""Loading what the cache keeps: `retention_policy` (Angos's CEL rules) and `[eviction]`.

A retention rule is compiled at start-up with the variables and functions Angos offers it;
one that does not compile, or names what retention does not offer, stops start-up naming
its key. So does a rule that needs pull times (`image.last_pulled_at`, `top_pulled()`)
while `[global] update_pull_time` is off: it could never see a pull.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..cel import RuleInvalid, compile_rule
from .reader import ConfigError, Table
from .settings import (
    EvictionSettings,
    GlobalSettings,
    RepositorySettings,
    RetentionPolicy,
    default_of,
)

RETENTION_VARIABLES = ("image",)
RETENTION_FUNCTIONS = ("now", "days", "hours", "minutes", "top_pushed", "top_pulled")
IMAGE_FIELDS = frozenset({"tag", "pushed_at", "last_pulled_at"})
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_IMAGE_FIELD = re.compile(r"\bimage\.([A-Za-z_]\w*)")


def parse_retention_policy(table: Table | None) -> RetentionPolicy | None:
    """None when absent or without rules (then it keeps nothing from going)."""
    if table is None:
        return None
    texts = table.raw("rules")
    table.finish()
    if texts is None:
        return None
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise ConfigError(table.key("rules"), texts, "a list of CEL rules (strings)")
    rules = []
    pulls = []  # the rules that read pull times
    for index, text in enumerate(texts):
        key = f"{table.key('rules')}[{index}]"
        try:
            rule = compile_rule(text, key, RETENTION_VARIABLES, RETENTION_FUNCTIONS)
        except RuleInvalid as error:
            raise ConfigError(key, text, f"a CEL retention rule ({error})") from None
        fields = set(_IMAGE_FIELD.findall(_STRING_LITERAL.sub("''", text)))
        unknown = sorted(fields - IMAGE_FIELDS)
        if unknown:
            raise ConfigError(
                key,
                text,
                f"a rule naming only image.{', image.'.join(sorted(IMAGE_FIELDS))} "
                f"(unknown: image.{', image.'.join(unknown)})",
            )
        rules.append(rule)
        if "last_pulled_at" in fields or "top_pulled" in rule.program.references()["functions"]:
            pulls.append(rule)
    if not rules:
        return None
    return RetentionPolicy(tuple(rules), uses_pull_times=bool(pulls))


def parse_eviction(table: Table | None, gc_grace_secs: float | None = None) -> EvictionSettings:
    """`[eviction]`; Angos's `[global] gc_grace_secs` is the default of its blob grace."""
    d = EvictionSettings
    grace = gc_grace_secs if gc_grace_secs is not None else default_of(d, "blob_grace_secs")
    if table is None:
        return EvictionSettings(blob_grace_secs=grace)
    settings = EvictionSettings(
        max_size=table.size("max_size", default_of(d, "max_size")),
        interval_secs=table.number("interval_secs", default_of(d, "interval_secs")),
        blob_grace_secs=table.number("blob_grace_secs", grace),
        pull_time_resolution_secs=table.number(
            "pull_time_resolution_secs", default_of(d, "pull_time_resolution_secs")
        ),
    )
    table.finish()
    return settings


def check_pull_times(
    global_: GlobalSettings, repositories: Mapping[str, RepositorySettings]
) -> None:
    """A rule about pulls needs `update_pull_time = true` (Angos's prune refuses too)."""
    if global_.update_pull_time:
        return
    policies = [global_.retention_policy, *(r.retention_policy for r in repositories.values())]
    for policy in policies:
        if policy is None or not policy.uses_pull_times:
            continue
        rule = next(r for r in policy.rules if "pulled" in r.text)  # the first naming them
        raise ConfigError(
            rule.key,
            rule.text,
            "[global] update_pull_time = true for a rule using image.last_pulled_at or "
            "top_pulled() (pull times are recorded only then)",
        )
