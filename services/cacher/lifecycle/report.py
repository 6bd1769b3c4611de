"""What a prune or scrub did (or, with --dry-run, would do), for the command line, the log
and the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(slots=True)
class Report:
    task: str  # prune | scrub
    dry_run: bool
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tags: int = 0
    manifests: int = 0
    records: int = 0  # orphaned links and records, marks, staged leftovers, temp files
    blobs: int = 0
    freed_bytes: int = 0  # blob bytes deleted (or, dry run, that would be)
    released_bytes: int = 0  # blob bytes released now, deleted once the grace has passed
    usage_before: int = 0
    usage_after: int = 0
    held_bytes: int | None = None  # prune: what the kept images hold
    max_size: int | None = None
    evicted: dict[str, int] = field(default_factory=dict)  # reason -> bytes deleted

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        budget = f" (budget {human(self.max_size)})" if self.max_size is not None else ""
        text = (
            f"{self.task}: {verb} {self.tags} tags, {self.manifests} manifests, "
            f"{self.blobs} blobs ({human(self.freed_bytes)} freed), {self.records} other records"
        )
        if self.released_bytes:
            text += f"; {human(self.released_bytes)} released, deleted after blob_grace_secs"
        text += f"; usage {human(self.usage_before)} -> {human(self.usage_after)}"
        if self.held_bytes is not None:
            text += f", {human(self.held_bytes)} held by kept images{budget}"
        return text
