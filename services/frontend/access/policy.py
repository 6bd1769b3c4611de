"""The access policy: Angos's semantics over CEL rules, compiled once at start-up.

Within one policy: no rules means its `default`; under `default = "deny"` the first rule
that is true allows, under `default = "allow"` the first rule that is true denies. A rule
that fails to evaluate (a missing field, `null.claims`) or answers something other than a
boolean is skipped with a warning — except under `default = "allow"`, where such a deny
rule denies: a broken deny rule must not open the door.

Between policies: the global policy always decides; a repository that declares its own
policy must allow too. The older `default_allow = true` grants reads only: an action that
changes the cache (`delete-manifest`, ...) needs a policy that allows it explicitly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ...common.cel import RuleFailed
from ...common.config import AccessPolicy

log = logging.getLogger(__name__)

# Actions that change what the cache holds: never granted by the legacy `default_allow`.
CHANGING_ACTIONS = frozenset({"delete-manifest", "warm-image", "retry-job", "delete-job"})
WARNING_INTERVAL_SECS = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str  # "default", "rule N", "legacy default_allow", "rule N failed"


class PolicyEvaluator:
    def __init__(self) -> None:
        self._warned: dict[str, float] = {}

    def evaluate(self, policy: AccessPolicy, variables: dict[str, Any]) -> Verdict:
        action = variables["request"]["action"]
        if policy.legacy_default_allow and policy.default_allow and action in CHANGING_ACTIONS:
            return Verdict(False, "default_allow grants reads only")
        for index, rule in enumerate(policy.rules):
            try:
                result = rule.evaluate(variables, {})
            except RuleFailed as error:
                result = error
            if isinstance(result, bool):
                if result:
                    return Verdict(not policy.default_allow, f"rule {index}")
                continue
            self._warn(rule.key, rule.text, result)
            if policy.default_allow:
                return Verdict(False, f"rule {index} failed")
        return Verdict(policy.default_allow, "default")

    def _warn(self, key: str, text: str, result: object) -> None:
        """One warning per rule a minute: a failing rule must not flood the log."""
        now = time.monotonic()
        if now - self._warned.get(key, 0.0) < WARNING_INTERVAL_SECS:
            return
        self._warned[key] = now
        what = str(result) if isinstance(result, RuleFailed) else f"non-boolean result {result!r}"
        log.warning("access rule %s skipped (%s): %s", key, what[:200], text[:200])
