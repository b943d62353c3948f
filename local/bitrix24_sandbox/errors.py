"""REST errors as the real API reports them: an ``error`` code, an ``error_description`` and an HTTP status.

Codes, wording and statuses follow the official docs (``_includes/system-errors.md`` and the method pages). Entity
methods of the old ``crm.*`` API report most failures with an empty ``error`` code and only a description.
"""

from __future__ import annotations

__all__ = [
    "RestError",
    "access_denied",
    "batch_length_exceeded",
    "batch_method_not_allowed",
    "internal_server_error",
    "invalid_credentials",
    "invalid_id",
    "method_not_found",
    "no_auth_found",
    "not_found",
    "operation_time_limit",
    "query_limit_exceeded",
]


class RestError(Exception):
    """A failure that the API reports as ``{"error": code, "error_description": description}``."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(f"{code or '<empty>'}: {description}")
        self.code = code
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


def no_auth_found() -> RestError:
    # The docs use this code when the request carries no credentials at all.
    return RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)


def invalid_credentials() -> RestError:
    # The docs use this code when no active webhook matches the user id and secret in the URL.
    return RestError("INVALID_CREDENTIALS", "Invalid request credentials", 401)


def method_not_found() -> RestError:
    return RestError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


def query_limit_exceeded() -> RestError:
    return RestError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)


def operation_time_limit() -> RestError:
    return RestError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit", 429)


def internal_server_error() -> RestError:
    return RestError("INTERNAL_SERVER_ERROR", "Internal server error", 500)


def batch_length_exceeded() -> RestError:
    return RestError("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)


def batch_method_not_allowed() -> RestError:
    return RestError("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405)


def not_found() -> RestError:
    return RestError("", "Not found", 400)


def invalid_id() -> RestError:
    return RestError("", "ID is not defined or invalid.", 400)


def access_denied(write: bool = False) -> RestError:
    # crm-lead-get.md (and the other crm.*.get pages): "Access denied" when the user may not read the record; the
    # old crm.* methods leave the code empty. The webhook runs with the rights of the user who created it. A write
    # (crm-lead-add.md's example) says "Access denied." with a period.
    return RestError("", "Access denied." if write else "Access denied", 403)
