"""Reading the exported customers' phones and e-mails from Bitrix24 at export time (the snapshot keeps none).

``crm.contact.list`` with ``filter[@ID]`` (the ``@`` operator: "in the list", apidocs crm/contacts/crm-contact-list)
and ``select: [ID, PHONE, EMAIL]`` (multi-fields are returned only when selected), 50 ids per command (a list page
holds 50 rows), up to 50 commands in one ``batch`` — 2 500 contacts per request, paced by the client. The values
stay in memory for the upload; nothing is written anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from throughline.bitrix24.client import Bitrix24Client
from throughline.segments.audiences.members import Member

PAGE = 50


def _values(field: object) -> tuple[str, ...]:
    if not isinstance(field, list):
        return ()
    return tuple(str(item.get("VALUE") or "") for item in field if isinstance(item, dict) and item.get("VALUE"))


def read_members(
    client: Bitrix24Client, contact_ids: Iterable[int], progress: Callable[[str], None] = lambda message: None
) -> Iterator[Member]:
    """The contacts' members in the order of ``contact_ids``; a deleted contact is left out."""
    ids = sorted({int(contact_id) for contact_id in contact_ids})
    pages = [ids[start : start + PAGE] for start in range(0, len(ids), PAGE)]
    per_batch = client.batch_capacity(["crm.contact.list"])
    read = 0
    for first in range(0, len(pages), per_batch):
        chunk = pages[first : first + per_batch]
        commands = {f"c{index}": ("crm.contact.list", {"filter": {"@ID": page}, "select": ["ID", "PHONE", "EMAIL"],
                                                       "start": -1}) for index, page in enumerate(chunk)}  # fmt: skip
        result = client.batch(commands, halt=True)
        for key in commands:
            for row in result.get(key) or []:
                read += 1
                yield Member(int(row["ID"]), _values(row.get("PHONE")), _values(row.get("EMAIL")))
        progress(f"audiences: read the contacts of {read} of {len(ids)} customers")
