"""Logging set-up: one line per event, `key=value` pairs, never a credential."""

from __future__ import annotations

import logging
import sys

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own client/server chatter is rarely what an operator needs at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("simple_registry.access").setLevel(level.upper())
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("aiobotocore").setLevel(logging.WARNING)
