"""Erase one person (``{"phone": …}`` and/or ``{"email": …}``, or lists under ``phones`` / ``emails``) from the journey
store, its indexes, the raw copies and the journey snapshots; never from Bitrix24 (``throughline.privacy.forget``).

Invoked by an operator (``aws lambda invoke``); it has no route. The answer lists what was removed, with contacts
masked; the log says only how much.
"""

from __future__ import annotations

from throughline.adapters import aws
from throughline.adapters.journey_store import JourneyStore
from throughline.config import get_settings
from throughline.observability import logger
from throughline.privacy.forget import forget_person


@logger.inject_lambda_context
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    settings.require("journey_table", "data_bucket", "person_key_secret")
    phones = [*_listed(event, "phones"), *_listed(event, "phone")]
    emails = [*_listed(event, "emails"), *_listed(event, "email")]
    result = forget_person(
        JourneyStore(settings.journey_table or ""),
        aws.client("s3"),
        settings.data_bucket or "",
        settings.person_key_secret or "",
        phones=phones,
        emails=emails,
        region=settings.default_phone_region,
    )
    logger.info(
        "person forgotten",
        extra={
            "records": len(result.entities),
            "touches": result.touches,
            "raw_copies": len(result.raw_copies),
            "snapshot_rows": result.snapshot_rows,
        },
    )
    return result.as_dict()


def _listed(event: dict, name: str) -> list[str]:
    value = event.get(name)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in values):
        raise ValueError(f"{name} must be a string or a list of strings")
    return values
