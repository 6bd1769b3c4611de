"""Retention and the budget without storage: Angos's rule examples, least recently used
first, whole images, shared layers and index children kept."""

from __future__ import annotations

import pytest
from simple_registry.cacher.lifecycle.images import Graph, Image
from simple_registry.cacher.lifecycle.plan import BUDGET, RETENTION, plan_prune
from simple_registry.cacher.lifecycle.retention import RetentionJudge, Verdict
from simple_registry.cacher.lifecycle.state import ManifestState, RepositoryState, TagState
from simple_registry.common.cel import compile_rule
from simple_registry.common.config.retention import RETENTION_FUNCTIONS, RETENTION_VARIABLES
from simple_registry.common.config.settings import RetentionPolicy
from simple_registry.common.manifests import References

NOW = 1_800_000_000.0
DAY = 86400.0


def digest(label: str) -> str:
    return "sha256:" + label.encode().hex().ljust(64, "0")[:64]


def policy(*rules: str) -> RetentionPolicy:
    return RetentionPolicy(
        tuple(
            compile_rule(text, f"rules[{i}]", RETENTION_VARIABLES, RETENTION_FUNCTIONS)
            for i, text in enumerate(rules)
        )
    )


class Store:
    """A repository graph built by hand: images with layers, indexes with children."""

    def __init__(self) -> None:
        self.states: dict[str, RepositoryState] = {}
        self.references: dict[str, References | None] = {}
        self.sizes: dict[str, int] = {}

    def manifest(self, name: str, label: str, layers: list[str], *, pushed: float) -> str:
        manifest = digest(f"{name}/{label}")
        blobs = tuple(digest(layer) for layer in layers)
        self.references[manifest] = References(blobs, ())
        self.sizes[manifest] = 100
        for layer in layers:
            self.sizes[digest(layer)] = 1000
        self._state(name).manifests[manifest] = ManifestState(
            manifest, pushed, 0.0, self.references[manifest], True
        )
        return manifest

    def index(self, name: str, label: str, children: list[str], *, pushed: float) -> str:
        index = digest(f"{name}/{label}")
        self.references[index] = References((), tuple(children))
        self.sizes[index] = 100
        self._state(name).manifests[index] = ManifestState(
            index, pushed, 0.0, self.references[index], True
        )
        return index

    def tag(
        self, name: str, tag: str, manifest: str, *, pushed: float, pulled: float = 0.0
    ) -> None:
        self._state(name).tags[tag] = TagState(tag, manifest, pushed, pulled)

    def _state(self, name: str) -> RepositoryState:
        return self.states.setdefault(name, RepositoryState(name))

    def image(
        self, name: str, tag: str, layers: list[str], *, pushed: float, pulled: float = 0.0
    ) -> str:
        manifest = self.manifest(name, tag, layers, pushed=pushed)
        self.tag(name, tag, manifest, pushed=pushed, pulled=pulled)
        return manifest

    @property
    def graph(self) -> Graph:
        return Graph(self.states, self.references)


def judge_with(store: Store, *policies: RetentionPolicy):  # type: ignore[no-untyped-def]
    graph = store.graph
    judges = {name: RetentionJudge(policies, graph.images(name), NOW) for name in store.states}
    return lambda image: judges[image.name].judge(image)


def kept_tags(store: Store, *policies: RetentionPolicy) -> set[str]:
    plan = plan_prune(store.graph, store.sizes, judge_with(store, *policies), None)
    dropped = {d.image.tag for d in plan.dropped}
    return {t for s in store.states.values() for t in s.tags} - dropped


def angos_store() -> Store:
    store = Store()
    store.image("app", "latest", ["l1"], pushed=NOW - 100 * DAY, pulled=NOW - 1 * DAY)
    store.image("app", "v1.2.3", ["l2"], pushed=NOW - 40 * DAY, pulled=NOW - 20 * DAY)
    store.image("app", "v1.2.4", ["l3"], pushed=NOW - 10 * DAY)
    store.image("app", "dev", ["l4"], pushed=NOW - 2 * DAY, pulled=NOW - 3 * DAY)
    store.image("app", "nightly-7", ["l5"], pushed=NOW - 60 * DAY, pulled=NOW - 50 * DAY)
    return store


@pytest.mark.parametrize(
    ("rules", "kept"),
    [
        (['image.tag == "latest"'], {"latest"}),
        (["image.tag != null"], {"latest", "v1.2.3", "v1.2.4", "dev", "nightly-7"}),
        (["image.pushed_at > now() - days(30)"], {"v1.2.4", "dev"}),
        (["image.last_pulled_at > now() - days(7)"], {"latest", "dev"}),
        (
            ['image.tag != null && image.tag.matches("^v?[0-9]+\\\\.[0-9]+\\\\.[0-9]+$")'],
            {"v1.2.3", "v1.2.4"},
        ),
        (["top_pushed(2)"], {"v1.2.4", "dev"}),
        (["top_pulled(2)"], {"latest", "dev"}),
        (["top_pulled(-1)"], set()),
        (
            ['image.tag == "latest"', "image.pushed_at > now() - hours(24 * 30)"],
            {"latest", "v1.2.4", "dev"},
        ),
    ],
)
def test_retention_keeps_the_tags_angos_examples_keep(rules: list[str], kept: set[str]) -> None:
    assert kept_tags(angos_store(), policy(*rules)) == kept


def test_a_failing_rule_keeps_the_tag_and_says_so() -> None:
    store = angos_store()
    # `image.tag.startsWith` fails on the untagged... here: a non-bool, then a runtime error.
    plan = plan_prune(
        store.graph,
        store.sizes,
        judge_with(store, policy("image.tag.size()", 'image.tag == "x"')),
        None,
    )
    assert plan.dropped == []
    assert plan.warnings and all("treating as 'retain' (fail-open)" in w for w in plan.warnings)


def test_a_rule_that_errors_keeps_only_the_subjects_it_errors_on() -> None:
    store = angos_store()
    untagged = store.manifest("app", "old-untagged", ["l9"], pushed=NOW - 99 * DAY)
    # On an untagged image `image.tag.startsWith` raises: kept; on tags the rule decides.
    plan = plan_prune(
        store.graph, store.sizes, judge_with(store, policy('image.tag.startsWith("v")')), None
    )
    dropped = {d.image.label for d in plan.dropped}
    assert dropped == {"app:latest", "app:dev", "app:nightly-7"}
    assert any(untagged in w for w in plan.warnings)


def test_no_policy_keeps_everything_and_either_policy_keeping_a_tag_keeps_it() -> None:
    assert kept_tags(angos_store()) == {"latest", "v1.2.3", "v1.2.4", "dev", "nightly-7"}
    both = kept_tags(angos_store(), policy('image.tag == "latest"'), policy('image.tag == "dev"'))
    assert both == {"latest", "dev"}


def test_an_untagged_manifest_is_judged_with_a_null_tag() -> None:
    store = angos_store()
    untagged = store.manifest("app", "orphan", ["l8"], pushed=NOW - 1 * DAY)
    plan = plan_prune(
        store.graph, store.sizes, judge_with(store, policy("image.tag != null")), None
    )
    assert [d.image.label for d in plan.dropped] == [f"app@{untagged}"]
    assert plan.manifests == [("app", untagged)]
    assert plan.released == {digest("l8"): RETENTION, untagged: RETENTION}


def test_the_children_of_a_kept_index_are_kept_and_go_with_a_dropped_one() -> None:
    store = Store()
    amd = store.manifest("multi", "amd64", ["base", "amd"], pushed=NOW - DAY)
    arm = store.manifest("multi", "arm64", ["base", "arm"], pushed=NOW - DAY)
    index = store.index("multi", "index", [amd, arm], pushed=NOW - DAY)
    store.tag("multi", "keep", index, pushed=NOW - DAY)
    store.image("multi", "other", ["x"], pushed=NOW - DAY)
    plan = plan_prune(
        store.graph, store.sizes, judge_with(store, policy('image.tag == "keep"')), None
    )
    assert [d.image.tag for d in plan.dropped] == ["other"]
    assert {d for _, d in plan.manifests} == {digest("multi/other")}

    plan = plan_prune(
        store.graph, store.sizes, judge_with(store, policy('image.tag == "other"')), None
    )
    assert [d.image.tag for d in plan.dropped] == ["keep"]
    assert [d for _, d in plan.manifests] == [index, amd, arm]  # the index before its children
    assert set(plan.released) == {index, amd, arm, digest("base"), digest("amd"), digest("arm")}


def test_the_budget_evicts_least_recently_pulled_images_until_usage_is_under_it() -> None:
    store = Store()
    # Four images of 1100 bytes each (a manifest and a layer), pulled in a known order.
    for rank, tag in enumerate(["first", "second", "third", "fourth"]):
        store.image(
            "four", tag, [f"layer-{tag}"], pushed=NOW - 10 * DAY, pulled=NOW - (4 - rank) * 60
        )
    store.tag(
        "four", "first", digest("four/first"), pushed=NOW - 10 * DAY, pulled=NOW
    )  # pulled again
    plan = plan_prune(store.graph, store.sizes, lambda image: Verdict(True, "keep"), 2300)
    assert [(d.image.tag, d.reason) for d in plan.dropped] == [
        ("second", BUDGET),
        ("third", BUDGET),
    ]
    assert plan.usage_before == 4400 and plan.usage_after == 2200
    assert plan.released_bytes == 2200


def test_the_budget_never_frees_a_shared_base_layer_while_a_kept_image_holds_it() -> None:
    store = Store()
    store.image("a", "old", ["base", "a-top"], pushed=NOW - 9 * DAY)
    store.image("b", "new", ["base", "b-top"], pushed=NOW - 1 * DAY)
    plan = plan_prune(store.graph, store.sizes, lambda image: Verdict(True, "keep"), 2500)
    assert [d.image.label for d in plan.dropped] == ["a:old"]
    assert digest("base") not in plan.released
    assert set(plan.released) == {digest("a/old"), digest("a-top")}
    assert digest("base") in plan.held


def test_two_tags_of_one_manifest_are_two_images_and_the_manifest_stays_with_either() -> None:
    store = Store()
    shared = store.image("r", "1.0", ["l"], pushed=NOW - 5 * DAY)
    store.tag("r", "stable", shared, pushed=NOW - 1 * DAY)
    plan = plan_prune(
        store.graph, store.sizes, judge_with(store, policy('image.tag == "stable"')), None
    )
    assert [d.image.tag for d in plan.dropped] == ["1.0"]
    assert plan.manifests == [] and plan.released == {}


def test_image_recency_is_the_later_of_cached_and_pulled() -> None:
    image = Image("n", "t", digest("m"), pushed_at=10.0, pulled_at=0.0)
    assert image.recency == 10.0
    assert Image("n", "t", digest("m"), pushed_at=10.0, pulled_at=20.0).recency == 20.0
