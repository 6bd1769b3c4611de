"""Staged blobs: verified bytes a frontend hands to the cacher instead of a second fetch.

The one place where a staged name is built and parsed. A staged key comes back inside a
cache job, so the cacher accepts only what `staged_name` could have made.

    _staging/<algorithm>-<hex>.<32 hex of a random id>
"""

from __future__ import annotations

import re
import uuid

from ..errors import DigestInvalid
from ..oci import Digest

STAGING_PREFIX = "_staging"
_STAGED_NAME_RE = re.compile(r"^([a-z0-9]+)-([a-f0-9]{64,128})\.([a-f0-9]{32})$")


def staged_name(digest: Digest) -> str:
    """A new file name for a spool of `digest`, unique per download."""
    return f"{digest.algorithm}-{digest.hex}.{uuid.uuid4().hex}"


def staged_key(name: str) -> str:
    return f"{STAGING_PREFIX}/{name}"


def parse_staged_key(key: str) -> Digest | None:
    """The digest a staged key was made for, or None when it is not a staged key."""
    prefix, _, name = key.partition("/")
    if prefix != STAGING_PREFIX:
        return None
    match = _STAGED_NAME_RE.match(name)
    if match is None:
        return None
    algorithm, hex_digest, _ = match.groups()
    try:
        return Digest.parse(f"{algorithm}:{hex_digest}")
    except DigestInvalid:
        return None
