"""Logging set-up: one line per event, `key=value` pairs, never a credential."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import HttpProcessingError

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'
# The package's own name ("simple_registry"), whatever folder it was installed from.
ACCESS_LOGGER = f"{__name__.split('.')[0]}.access"


class _ParserErrorFilter(logging.Filter):
    """aiohttp logs every request its HTTP parser refuses (oversized or malformed) at
    ERROR with a traceback: any client could flood the log. One INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            error = record.exc_info[1]
            record.msg = "refused a malformed request: %s"
            record.args = (f"{getattr(error, 'code', 400)} {getattr(error, 'message', '')}"[:200],)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = "INFO"
        return True


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.getLogger("aiohttp.server").addFilter(_ParserErrorFilter())
    root.setLevel(level.upper())
    # aiohttp's own client/server chatter is rarely what an operator needs at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(level.upper())
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("aiobotocore").setLevel(logging.WARNING)
