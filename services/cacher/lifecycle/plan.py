"""Prune's plan: retention first, then the budget, as a list of what goes and why.

Pure: it reads the graph and the blob sizes, and decides; nothing is deleted here.

Accounting: every kept image holds the manifests of its closure (per repository), and every
held manifest holds its blobs (across repositories: blobs are shared). An image that goes
releases what no kept image holds any more; a blob no manifest holds is "released" and its
bytes count as freed — GC deletes it once `blob_grace_secs` have passed since.

The budget: while the usage that would remain is over `max_size`, the kept image least
recently used (pulled, else cached) goes next, whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .images import Graph, Image
from .retention import Verdict

RETENTION = "retention"
BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class Dropped:
    image: Image
    reason: str  # retention | budget
    why: str


@dataclass(slots=True)
class PrunePlan:
    dropped: list[Dropped] = field(default_factory=list)
    manifests: list[tuple[str, str]] = field(default_factory=list)  # (name, digest), parents first
    released: dict[str, str] = field(default_factory=dict)  # blob digest -> reason
    released_bytes: int = 0
    usage_before: int = 0
    usage_after: int = 0  # once every released blob is deleted
    held: set[str] = field(default_factory=set)  # blobs kept images hold
    warnings: list[str] = field(default_factory=list)


class Holdings:
    """Reference counts: images -> manifests (per repository) -> blobs."""

    def __init__(self, graph: Graph, sizes: dict[str, int]):
        self.graph = graph
        self.sizes = sizes
        self.manifests: Counter[tuple[str, str]] = Counter()
        self.blobs: Counter[str] = Counter()
        self.held_bytes = 0  # of the stored blobs some manifest holds

    def hold(self, image: Image) -> None:
        for digest in self.graph.closure(image.digest):
            key = (image.name, digest)
            self.manifests[key] += 1
            if self.manifests[key] > 1:
                continue
            for blob in self.graph.holdings(digest):
                self.blobs[blob] += 1
                if self.blobs[blob] == 1:
                    self.held_bytes += self.sizes.get(blob, 0)

    def release(self, image: Image) -> tuple[list[str], list[str]]:
        """Let the image go: (manifests no image holds now, blobs no manifest holds now)."""
        manifests: list[str] = []
        blobs: list[str] = []
        for digest in self.graph.closure(image.digest):
            key = (image.name, digest)
            self.manifests[key] -= 1
            if self.manifests[key] > 0:
                continue
            del self.manifests[key]
            manifests.append(digest)
            for blob in self.graph.holdings(digest):
                self.blobs[blob] -= 1
                if self.blobs[blob] <= 0:
                    del self.blobs[blob]
                    self.held_bytes -= self.sizes.get(blob, 0)
                    blobs.append(blob)
        return manifests, blobs


def plan_prune(
    graph: Graph,
    sizes: dict[str, int],
    judge: Callable[[Image], Verdict],
    max_size: int | None,
) -> PrunePlan:
    """`sizes`: every stored blob's size; `judge`: retention's verdict on an image."""
    plan = PrunePlan(usage_before=sum(sizes.values()))
    images = graph.all_images()
    holdings = Holdings(graph, sizes)
    for image in images:
        holdings.hold(image)
    kept: list[Image] = []
    for image in images:
        verdict = judge(image)
        if verdict.warning:
            plan.warnings.append(verdict.warning)
        if verdict.keep:
            kept.append(image)
        else:
            _drop(plan, holdings, Dropped(image, RETENTION, verdict.why))
    if max_size is not None:
        # Least recently used first; ties: the older cache entry, then the name.
        for image in sorted(kept, key=lambda i: (i.recency, i.pushed_at, i.label)):
            if holdings.held_bytes <= max_size:
                break
            _drop(plan, holdings, Dropped(image, BUDGET, "least recently used"))
    plan.usage_after = holdings.held_bytes
    plan.held = set(holdings.blobs)
    return plan


def _drop(plan: PrunePlan, holdings: Holdings, dropped: Dropped) -> None:
    image = dropped.image
    plan.dropped.append(dropped)
    manifests, blobs = holdings.release(image)
    plan.manifests.extend((image.name, digest) for digest in manifests)
    for blob in _stored(blobs, holdings.sizes):
        plan.released[blob] = dropped.reason
        plan.released_bytes += holdings.sizes[blob]


def _stored(blobs: Iterable[str], sizes: dict[str, int]) -> list[str]:
    return [blob for blob in blobs if blob in sizes]
