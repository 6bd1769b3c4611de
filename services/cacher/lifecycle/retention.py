"""Retention: which images the rules keep, with Angos's variables and semantics.

Subjects are a repository's images: each tag (`image.tag` set), and each manifest no tag
and no other manifest of the repository points at (`image.tag = null`). For each:

- `image.pushed_at`: when it was cached (a mirror's push), unix seconds;
- `image.last_pulled_at`: when it was last pulled, 0 if never (needs update_pull_time);
- `now()`, `days(n)`, `hours(n)`, `minutes(n)`: seconds;
- `top_pushed(n)` / `top_pulled(n)`: the tag is among the n most recently cached / pulled
  tags of its repository (tags without a time are not ranked; untagged: always false).

A policy keeps a subject when any of its rules is true; a rule that fails or answers
something other than a boolean keeps it, with a warning ("fail-open"). With a global and a
repository policy, either keeping it keeps it; with neither, everything is kept. The
children of a kept index are kept with it (images.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...common.cel import RuleFailed, time_functions
from ...common.config.settings import RetentionPolicy
from .images import Image

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    keep: bool
    why: str  # "rule <key>", "no rule kept it", "no retention policy", "rule <key> failed"
    warning: str | None = None


def _ranked(images: Sequence[Image], when: Callable[[Image], float]) -> list[str]:
    """Tags by `when`, most recent first; tags without a time are left out."""
    timed = [image for image in images if image.tag is not None and when(image) > 0]
    return [image.tag for image in sorted(timed, key=when, reverse=True) if image.tag]


def _top(ranking: list[str], tag: str | None) -> Callable[[Any], bool]:
    def top(n: Any) -> bool:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError("top_pushed/top_pulled take an integer")
        return tag is not None and tag in ranking[: max(n, 0)]

    return top


class RetentionJudge:
    """Judges the images of one repository against its policies (global, repository)."""

    def __init__(self, policies: Sequence[RetentionPolicy], images: Sequence[Image], now: float):
        self.policies = [policy for policy in policies if policy.rules]
        self.now = now
        self._pushed = _ranked(images, lambda image: image.pushed_at)
        self._pulled = _ranked(images, lambda image: image.pulled_at)

    def judge(self, image: Image) -> Verdict:
        if not self.policies:
            return Verdict(True, "no retention policy")
        variables = {
            "image": {
                "tag": image.tag,
                "pushed_at": int(image.pushed_at),
                "last_pulled_at": int(image.pulled_at),
            }
        }
        functions = {
            **time_functions(self.now),
            "top_pushed": _top(self._pushed, image.tag),
            "top_pulled": _top(self._pulled, image.tag),
        }
        for policy in self.policies:
            for rule in policy.rules:
                try:
                    result = rule.evaluate(variables, functions)
                except RuleFailed as error:
                    return self._failed(image, rule.key, str(error))
                if not isinstance(result, bool):
                    return self._failed(image, rule.key, f"a {type(result).__name__}, not a bool")
                if result:
                    return Verdict(True, f"rule {rule.key}")
        return Verdict(False, "no rule kept it")

    def _failed(self, image: Image, key: str, what: str) -> Verdict:
        warning = (
            f"retention rule {key} failed for {image.label} ({what[:200]}): "
            "treating as 'retain' (fail-open)"
        )
        log.warning("%s", warning)
        return Verdict(True, f"rule {key} failed", warning)
