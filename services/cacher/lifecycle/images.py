"""Images: what retention judges and the budget evicts, whole.

An image of a repository is a root — a tag, or a manifest that no tag and no other manifest
of the repository points at — with everything below it: an index's child manifests, and
the config and layers of every manifest. Removing an image removes its tag and the
manifests only it holds; a manifest or blob another kept image holds stays (a shared base
layer, the child of two indexes).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...common.manifests import References
from .state import RepositoryState


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    tag: str | None
    digest: str  # the root manifest
    pushed_at: float
    pulled_at: float

    @property
    def recency(self) -> float:
        """When it was last used: pulled, or cached (a pull caches it)."""
        return max(self.pushed_at, self.pulled_at)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag is not None else f"{self.name}@{self.digest}"


class Graph:
    """The images of every repository and what each holds."""

    def __init__(
        self, states: dict[str, RepositoryState], references: dict[str, References | None]
    ):
        self.states = states
        self.references = references

    def children(self, digest: str) -> tuple[str, ...]:
        found = self.references.get(digest)
        return found.children if found is not None else ()

    def holdings(self, digest: str) -> tuple[str, ...]:
        """The blobs a manifest keeps while it is kept: its own bytes, its config and
        layers, its children's bytes (each child manifest holds its own layers)."""
        found = self.references.get(digest)
        return (digest, *found.all) if found is not None else (digest,)

    def closure(self, digest: str) -> list[str]:
        """The manifest and its descendants, parents first."""
        order: list[str] = []
        seen: set[str] = set()
        frontier = [digest]
        while frontier:
            current = frontier.pop(0)
            if current in seen:
                continue
            seen.add(current)
            order.append(current)
            frontier.extend(self.children(current))
        return order

    def images(self, name: str) -> list[Image]:
        state = self.states[name]
        images = [
            Image(name, tag.tag, tag.digest, tag.pushed_at, tag.pulled_at)
            for tag in state.tags.values()
        ]
        below = {tag.digest for tag in state.tags.values()}
        for manifest in state.manifests.values():
            below.update(self.children(manifest.digest))
        images += [
            Image(name, None, manifest.digest, manifest.pushed_at, manifest.pulled_at)
            for manifest in state.manifests.values()
            if manifest.digest not in below
        ]
        return sorted(images, key=lambda image: (image.tag is None, image.tag or image.digest))

    def all_images(self) -> list[Image]:
        return [image for name in sorted(self.states) for image in self.images(name)]
