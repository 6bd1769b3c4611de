"""Logging set-up: one line per event, `key=value` pairs, never a credential.

`json` format: one JSON object per line with `time`, `level`, `logger`, `message`, and the
same fields the text line carries as `key=value` (the access log's fields by name), so that
Loki or Elasticsearch need no parser.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
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


_FIELD = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)=(\"[^\"]*\"|\S+)")
# Fields a record may carry as attributes (`extra=`): the access log's.
RECORD_FIELDS = (
    "remote",
    "method",
    "path",
    "protocol",
    "status",
    "bytes",
    "duration_s",
    "user_agent",
    "identity",
    "access",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in _FIELD.findall(message):
            event.setdefault(key, value.strip('"'))
        for key in RECORD_FIELDS:
            if hasattr(record, key):
                event[key] = getattr(record, key)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False, default=str)


TEXT_FORMAT = logging.Formatter(
    "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
)


def use_format(name: str) -> None:
    """Switch every handler to `text` or `json` lines (from the configuration)."""
    formatter = JsonFormatter() if name == "json" else TEXT_FORMAT
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TEXT_FORMAT)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.getLogger("aiohttp.server").addFilter(_ParserErrorFilter())
    root.setLevel(level.upper())
    # aiohttp's own client/server chatter is rarely what an operator needs at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(level.upper())
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("aiobotocore").setLevel(logging.WARNING)
