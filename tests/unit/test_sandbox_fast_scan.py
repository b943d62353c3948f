"""The sandbox's fast path for the fast scan (``>ID``, ``order ID ASC``, ``start=-1``) answers the same page as the
full filter-and-sort path, with deletions, other filters and hidden records."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from local.bitrix24_sandbox.store import Portal


def test_the_fast_path_answers_what_the_full_path_does() -> None:
    portal = Portal(webhook_user_id=1, tz=ZoneInfo("Europe/Moscow"))
    for n in range(1, 301):
        portal.add("contact", {"NAME": f"К{n}", "TYPE_ID": "CLIENT" if n % 3 else "PARTNER"})
    for n in range(40, 90):
        portal.delete("contact", n)
    for bound in (0, 1, 39, 89, 120, 299, 300, 1000):
        for extra in ({}, {"TYPE_ID": "PARTNER"}, {"<ID": 150}):
            params = {"FILTER": {">ID": bound, **extra}, "ORDER": {"ID": "ASC"}, "SELECT": ["ID", "TYPE_ID"]}
            fast = portal.list_page("contact", {**params, "START": -1})
            full = portal.list_page("contact", {**params, "START": 0})
            assert fast.rows == full.rows, (bound, extra)
            assert (fast.total, fast.next) == (0, None)
    hidden = portal.list_page("contact", {"FILTER": {">ID": 0}, "ORDER": {"id": "asc"}, "START": -1, "SELECT": ["ID"]},
                              visible=lambda record: record["ID"] % 2 == 0)  # fmt: skip
    assert [row["ID"] for row in hidden.rows] == [str(n) for n in range(2, 40, 2)] + [str(n) for n in range(90, 152, 2)]
