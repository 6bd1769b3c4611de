"""The referrers fallback tag follows the OCI tag schema `<alg>-<ref>`."""

from __future__ import annotations

from simple_registry.common.oci import Digest, Tag
from simple_registry.frontend.pullthrough.referrers import fallback_tag


def test_a_sha256_subject_names_its_whole_digest() -> None:
    digest = Digest.parse("sha256:" + "ab" * 32)
    assert fallback_tag(digest) == "sha256-" + "ab" * 32


def test_a_sha512_subject_is_cut_to_64_characters_and_stays_a_valid_tag() -> None:
    digest = Digest.parse("sha512:" + "cd" * 64)
    tag = fallback_tag(digest)
    assert tag == "sha512-" + "cd" * 32
    assert Tag.parse(tag).value == tag
