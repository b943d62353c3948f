"""Comments: the manager's timeline notice of a repeat request, sent only once its line is in the record's field,
and at most once."""

from __future__ import annotations

from collections.abc import Callable

from throughline.bitrix24 import Bitrix24Client, BitrixError
from throughline.observability import logger
from throughline.writer.leads.model import Plan


def add_comments(
    bitrix: Bitrix24Client, comments: list[tuple[Plan, str]], entity: str, mark_sent: Callable[[Plan, str], None]
) -> dict[str, BaseException]:
    """One batch of ``crm.timeline.comment.add``, a notice per ``(plan, key prefix)``. A notice that may have run (a
    lost answer) or that the portal refused is marked sent (``mark_sent``: a missing notice, never a double one). A
    notice that surely never ran and may run later (no connection, the leaky bucket, the operating-time block, the
    deadline) is not: its submission id and error are returned, so its message comes back and the retry sends it."""
    if not comments:
        return {}
    commands = {
        f"comment{index}": (
            "crm.timeline.comment.add",
            {"fields": {"ENTITY_ID": plan.entity_id, "ENTITY_TYPE": entity, "COMMENT": plan.item.comment}},
        )
        for index, (plan, _) in enumerate(comments)
    }
    errors: dict[str, BaseException] = {}
    try:
        errors = dict(bitrix.batch(commands).errors)
    except BitrixError as error:
        errors = dict.fromkeys(commands, error)
    unsent: dict[str, BaseException] = {}
    for index, (plan, prefix) in enumerate(comments):
        error = errors.get(f"comment{index}")
        if error is not None:
            logger.warning("timeline comment not added", extra={"entity_id": plan.entity_id, "error": str(error)})
            if getattr(error, "retryable", False) and not getattr(error, "maybe_executed", True):
                unsent[plan.item.submission_id] = error
                continue
        try:
            mark_sent(plan, prefix)
        except Exception:
            logger.warning("comment state not stored", extra={"entity_id": plan.entity_id}, exc_info=True)
    return unsent
