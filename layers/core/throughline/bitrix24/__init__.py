"""Bitrix24 REST: the client, its errors, and portal-wide pacing."""

from throughline.bitrix24.client import BatchResult, Bitrix24Client, Deadline, Response, is_read_method
from throughline.bitrix24.errors import (
    BatchIncomplete,
    BitrixAccessDenied,
    BitrixAuthError,
    BitrixBadRequest,
    BitrixError,
    BitrixMethodNotFound,
    BitrixNotFound,
    BitrixTransientError,
    BitrixUnavailable,
    NotEnoughTime,
    OperationTimeLimit,
    QueryLimitExceeded,
)
from throughline.bitrix24.pacing import LeakyBucket, MethodTimes

__all__ = [
    "BatchIncomplete",
    "BatchResult",
    "Bitrix24Client",
    "BitrixAccessDenied",
    "BitrixAuthError",
    "BitrixBadRequest",
    "BitrixError",
    "BitrixMethodNotFound",
    "BitrixNotFound",
    "BitrixTransientError",
    "BitrixUnavailable",
    "Deadline",
    "LeakyBucket",
    "MethodTimes",
    "NotEnoughTime",
    "OperationTimeLimit",
    "QueryLimitExceeded",
    "Response",
    "is_read_method",
]
