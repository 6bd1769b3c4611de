"""Registry errors: one type per failure, each carrying its OCI error code and HTTP status.

The frontend turns these into OCI error bodies in exactly one place (frontend.middlewares).
A real miss (404) is a `RegistryError` subclass; a backend fault is `BackendUnavailable`
(5xx) and never looks like a missing image.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RegistryError(Exception):
    """An error a client can be told about, with its OCI code and HTTP status."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500

    def __init__(self, message: str, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}


class NameInvalid(RegistryError):
    code = "NAME_INVALID"
    status = 400


class NameUnknown(RegistryError):
    code = "NAME_UNKNOWN"
    status = 404


class ManifestUnknown(RegistryError):
    code = "MANIFEST_UNKNOWN"
    status = 404


class BlobUnknown(RegistryError):
    code = "BLOB_UNKNOWN"
    status = 404


class DigestInvalid(RegistryError):
    code = "DIGEST_INVALID"
    status = 400


class TagInvalid(RegistryError):
    code = "TAG_INVALID"
    status = 400


class RangeNotSatisfiable(RegistryError):
    code = "RANGE_INVALID"
    status = 416


class PaginationInvalid(RegistryError):
    code = "PAGINATION_NUMBER_INVALID"
    status = 400


class Unsupported(RegistryError):
    code = "UNSUPPORTED"
    status = 405


class Unauthorized(RegistryError):
    """No credentials, or credentials that do not verify; a challenge says how to log in."""

    code = "UNAUTHORIZED"
    status = 401


class Denied(RegistryError):
    code = "DENIED"
    status = 403


class NotFound(RegistryError):
    """A route that does not exist."""

    code = "NOT_FOUND"
    status = 404


class SizeInvalid(RegistryError):
    code = "SIZE_INVALID"
    status = 400


class TooManyRequests(RegistryError):
    code = "TOOMANYREQUESTS"
    status = 429


class BackendUnavailable(RegistryError):
    """The upstream or the storage could not answer; nothing is known to be missing."""

    code = "UNAVAILABLE"
    status = 503
