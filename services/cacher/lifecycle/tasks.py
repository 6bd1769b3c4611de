"""`prune` and `scrub`: the two lifecycle tasks, for the commands and the cacher's loop.

- prune: retention rules, then the storage budget; the images that go are removed (tags,
  then manifests), the blobs they alone held are released, and released blobs idle for
  `blob_grace_secs` are deleted (with grace 0: at once).
- scrub: garbage collection — blobs no manifest references (idle for the grace), records
  whose content is gone, stale release marks, staged and temp leftovers; with `verify`,
  every blob is hashed again and one that does not match its digest goes with its links.

Both plan from one survey of storage, print what goes, and delete only inside
`invalidation.deleting()` (frontends forget first) in the order of `deletions.execute`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ...common.batches import in_batches
from ...common.config import Settings
from ...common.metrics import Metrics
from ...common.oci import Digest
from ...common.routing import Router
from ...common.storage import RegistryStorage
from ...common.storage.records import StorageUsage
from .deletions import Outcome, execute
from .gc import LEFTOVER_MIN_AGE_SECS, Collection, add_orphans, idle_blobs
from .images import Graph, Image
from .inventory import Inventory, take_inventory
from .plan import plan_prune
from .report import Report, human
from .retention import RetentionJudge, Verdict
from .state import REQUESTS_AT_ONCE, ReferenceReader, Survey, survey
from .verify import corrupt_blobs

log = logging.getLogger(__name__)

GC = "gc"
CORRUPT = "corrupt"


class Lifecycle:
    def __init__(self, storage: RegistryStorage, settings: Settings, metrics: Metrics):
        self.storage = storage
        self.settings = settings
        self.metrics = metrics
        self.router = Router(settings.repositories, settings.global_.default_repository)
        self.reader = ReferenceReader(storage)  # kept across runs: manifests never change
        self.grace = settings.eviction.blob_grace_secs

    async def _look(self, *, pull_times: bool) -> tuple[Survey, Graph, dict[str, int]]:
        """Storage now: the survey, its images, every blob's size."""
        inventory = await take_inventory(self.storage.objects)
        seen = await survey(inventory, self.reader, pull_times=pull_times)
        sizes = {digest: info.size for digest, info in inventory.blobs.items()}
        return seen, Graph(seen.states, seen.references), sizes

    # -- prune --------------------------------------------------------------------------

    def _judges(self, graph: Graph, now: float, orphans: bool) -> Callable[[Image], Verdict]:
        judges: dict[str, RetentionJudge | Verdict] = {}
        global_policy = self.settings.global_.retention_policy

        def judge(image: Image) -> Verdict:
            found = judges.get(image.name)
            if found is None:
                repository = self.router.owner(image.name)
                if repository is None and orphans and self.settings.repositories:
                    found = Verdict(False, "no configured repository covers it")
                else:
                    policies = [global_policy, repository.retention_policy if repository else None]
                    found = RetentionJudge(
                        [p for p in policies if p is not None], graph.images(image.name), now
                    )
                judges[image.name] = found
            return found if isinstance(found, Verdict) else found.judge(image)

        return judge

    async def prune(
        self,
        *,
        dry_run: bool = False,
        orphans: bool = False,
        check: Callable[[], None] = lambda: None,
    ) -> Report:
        """`orphans`: also remove names no configured repository covers (Angos's prune
        does; the `prune` command does, a cacher's cycle does not: a repository missing from
        one process's configuration must not empty the cache)."""
        now = time.time()
        seen, graph, sizes = await self._look(pull_times=self._needs_pull_times())
        inventory = seen.inventory
        judge = self._judges(graph, now, orphans)
        plan = plan_prune(graph, sizes, judge, self.settings.eviction.max_size)
        report = Report("prune", dry_run, max_size=self.settings.eviction.max_size)
        report.warnings = list(plan.warnings)
        report.held_bytes = plan.usage_after
        collection = Collection()
        for dropped in plan.dropped:
            report.lines.append(f"{dropped.image.label} ({dropped.reason}: {dropped.why})")
            if dropped.image.tag is not None:
                collection.add_tag(inventory.repositories[dropped.image.name], dropped.image.tag)
        for name, digest in plan.manifests:
            contents = inventory.repositories[name]
            collection.add_manifest(contents, digest, index=bool(graph.children(digest)))
        blobs = await self._idle(seen, plan.held, now, plan.released)
        collection.add_blobs(inventory, blobs)
        report.tags, report.manifests = (
            len(collection.tags),
            len(collection.indexes) + len(collection.manifests),
        )
        later = {d: r for d, r in plan.released.items() if d not in collection.blobs}
        report.released_bytes = sum(sizes[d] for d in later)
        if dry_run:
            return self._planned(report, inventory, collection)
        # Marks before the records go: a crash in between leaves a blob that no manifest
        # holds but that still waits out its grace. (Written in batches, as reads are.)
        await in_batches(
            later,
            lambda d: self.storage.mark_released(Digest.parse(d), later[d], now),
            REQUESTS_AT_ONCE,
        )
        outcome = await execute(self.storage, inventory, collection, self.reader, check)
        return await self._done(report, seen, outcome)

    def _needs_pull_times(self) -> bool:
        """Pull times are read only where something uses them: the budget's order, or a
        rule naming them (and only when they are recorded at all)."""
        if not self.settings.global_.update_pull_time:
            return False
        policies = [self.settings.global_.retention_policy]
        policies += [r.retention_policy for r in self.settings.repositories.values()]
        in_rules = any(p is not None and p.uses_pull_times for p in policies)
        return in_rules or self.settings.eviction.max_size is not None

    async def _idle(
        self, seen: Survey, held: set[str], now: float, released: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Blobs GC may delete now, with why they go."""
        released = released or {}
        if seen.unreadable:
            log.error(
                "%d manifests cannot be read (e.g. %s): no blob is deleted this run; "
                "`scrub --verify` removes corrupt ones",
                len(seen.unreadable),
                seen.unreadable[0],
            )
            self.metrics.lifecycle_errors.labels("gc").inc()
            return {}
        idle = idle_blobs(
            seen.inventory, held, grace_secs=self.grace, now=now, released_now=released
        )
        marked = [d for d in idle if d not in released and d in seen.inventory.released]
        marks = await in_batches(
            marked, lambda d: self.storage.get_released(Digest.parse(d)), REQUESTS_AT_ONCE
        )
        reasons: dict[str, str] = {}
        for digest in idle:
            mark = marks.get(digest)
            reasons[digest] = released.get(digest) or (mark.reason if mark else None) or GC
        return reasons

    # -- scrub --------------------------------------------------------------------------

    async def scrub(
        self,
        *,
        verify: bool = False,
        dry_run: bool = False,
        check: Callable[[], None] = lambda: None,
    ) -> Report:
        now = time.time()
        seen, graph, sizes = await self._look(pull_times=False)
        inventory = seen.inventory
        keep_all = plan_prune(graph, sizes, lambda image: Verdict(True, "scrub"), None)
        report = Report("scrub", dry_run)
        collection = Collection()
        if verify:
            corrupt = await corrupt_blobs(self.storage, inventory)
            for digest in corrupt:
                report.lines.append(f"blob {digest} does not match its digest ({CORRUPT})")
                self._remove_everywhere(seen, collection, digest)
            collection.add_blobs(inventory, dict.fromkeys(corrupt, CORRUPT))
        blobs = await self._idle(seen, keep_all.held - set(collection.blobs), now)
        collection.add_blobs(inventory, blobs)
        add_orphans(
            inventory, seen.tag_digests, keep_all.held, collection, grace_secs=self.grace, now=now
        )
        report.tags = len(collection.tags)
        report.manifests = len(collection.indexes) + len(collection.manifests)
        report.records = len(collection.pulls) + len(collection.marks) + len(collection.staged)
        report.records += len(collection.links)
        for key in inventory.unknown[:20]:
            report.warnings.append(f"unknown key left alone: {key}")
        if dry_run:
            return self._planned(report, inventory, collection)
        outcome = await execute(self.storage, inventory, collection, self.reader, check)
        temp_age = max(self.grace, LEFTOVER_MIN_AGE_SECS)
        report.records += await self.storage.objects.sweep_temp_files(temp_age)
        return await self._done(report, seen, outcome)

    @staticmethod
    def _remove_everywhere(seen: Survey, collection: Collection, digest: str) -> None:
        """A corrupt manifest's records (and tags naming it) in every repository."""
        for name, contents in seen.inventory.repositories.items():
            if digest in contents.revisions:
                collection.add_manifest(contents, digest, index=True)
            for tag, state in seen.states[name].tags.items():
                if state.digest == digest:
                    collection.add_tag(contents, tag)

    # -- results ------------------------------------------------------------------------

    def _planned(self, report: Report, inventory: Inventory, collection: Collection) -> Report:
        for digest, reason in collection.blobs.items():
            report.lines.append(f"blob {digest} {human(inventory.blobs[digest].size)} ({reason})")
        report.blobs = len(collection.blobs)
        report.freed_bytes = sum(inventory.blobs[d].size for d in collection.blobs)
        report.usage_before = inventory.blob_bytes
        report.usage_after = report.usage_before - report.freed_bytes
        return report

    async def _done(self, report: Report, seen: Survey, outcome: Outcome) -> Report:
        inventory = seen.inventory
        for digest, (size, reason) in outcome.deleted.items():
            report.lines.append(f"blob {digest} {human(size)} ({reason})")
            report.evicted[reason] = report.evicted.get(reason, 0) + size
            self.metrics.lifecycle_deleted_bytes.labels(reason).inc(size)
            self.metrics.lifecycle_deleted_blobs.labels(reason).inc()
        report.blobs = len(outcome.deleted)
        report.freed_bytes = outcome.bytes
        report.usage_before = inventory.blob_bytes
        report.usage_after = report.usage_before - report.freed_bytes
        manifests = sum(len(c.revisions) for c in inventory.repositories.values())
        tags = sum(len(c.tags) for c in inventory.repositories.values())
        await self.record_usage(
            StorageUsage(
                total_bytes=report.usage_after,
                blobs=len(inventory.blobs) - report.blobs,
                manifests=manifests - report.manifests,
                tags=tags - report.tags,
                measured_at=time.time(),
            )
        )
        return report

    async def measure_usage(self) -> StorageUsage:
        """A listing of blobs and records (no prune): what the usage record says."""
        inventory = await take_inventory(self.storage.objects)
        usage = StorageUsage(
            total_bytes=inventory.blob_bytes,
            blobs=len(inventory.blobs),
            manifests=sum(len(c.revisions) for c in inventory.repositories.values()),
            tags=sum(len(c.tags) for c in inventory.repositories.values()),
            measured_at=time.time(),
        )
        await self.record_usage(usage)
        return usage

    async def record_usage(self, usage: StorageUsage) -> None:
        await self.storage.put_usage(usage)
        self.metrics.storage_bytes.set(usage.total_bytes)
        self.metrics.storage_objects.labels("blob").set(usage.blobs)
        self.metrics.storage_objects.labels("manifest").set(usage.manifests)
        self.metrics.storage_objects.labels("tag").set(usage.tags)
