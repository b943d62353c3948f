"""One segments run: continue an unfinished write-back, else (once a day) refresh the CRM snapshot, compute, store,
plan and write back.

Stored in the data bucket (gzip JSON Lines, Athena tables ``segments`` and ``segment_transitions``):
- ``segments/snapshot=<date>/customers.json.gz``: one line per customer (segment, since, RFM, features, size);
- ``segments/transitions/date=<date>/transitions.json.gz``: the night's moves (``from``, ``to``);
- ``segments/state.json``: the last snapshots, the monthly frozen thresholds and the write-back cursor;
- ``segments/writeback/plan=<date>.json.gz``: the records to update, in order;
- ``segments/audiences/state.json``: the ad audiences' platform list ids and the night's outcome (ids only).

After the write-back, the audiences configured in ``config/segments.yaml`` are exported once a night
(``throughline.segments.audiences.export``); a later run of the night only retries those that failed.

A run that finds the write-back unfinished only continues it (every run is short and cheap to repeat: the function
is scheduled every 15 minutes through the night). A run that finds today's snapshot done and written does nothing
and costs no REST call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from throughline.bitrix24.client import Bitrix24Client
from throughline.report import jsonlines
from throughline.report.build import last_wins, success_stages
from throughline.report.crm import HISTORY, SnapshotOptions, read_snapshot, refresh_snapshot
from throughline.report.crm import read_rows as read_columns
from throughline.report.funnel import StageBook
from throughline.report.rates import RateBook
from throughline.segments.engine import Frozen, assign, collect_customers
from throughline.segments.fields import FieldsMissing, enumerations
from throughline.segments.rules import load_rules
from throughline.segments.tasks import create_move_tasks, moves_for_tasks, never_retaken, within_limit
from throughline.segments.writeback import Progress, decode_plan, encode_plan, execute, plan_updates

PREFIX = "segments/"
STATE_KEY = PREFIX + "state.json"


def snapshot_key(day: str) -> str:
    return f"{PREFIX}snapshot={day}/customers.json.gz"


def transitions_key(day: str) -> str:
    return f"{PREFIX}transitions/date={day}/transitions.json.gz"


def plan_key(day: str) -> str:
    return f"{PREFIX}writeback/plan={day}.json.gz"


@dataclass(frozen=True)
class SegmentOptions:
    currency: str = "RUB"
    snapshot: SnapshotOptions = field(default_factory=SnapshotOptions)
    write_back: bool = True
    export_audiences: bool = True


def _load(objects: Any, key: str) -> list[dict[str, Any]]:
    body = objects.get(key)
    return jsonlines.decode(body) if body else []


def _rates(objects: Any, currency: str, currencies: list[dict[str, Any]], today: date) -> RateBook:
    """The spend import's rate files of the window (``rates/date=<d>/rates.json``), then the CRM's own rates."""
    first = (today - timedelta(days=400)).isoformat()
    files = []
    for key in objects.keys("rates/date="):
        day = key.removeprefix("rates/date=").split("/", 1)[0]
        if key.endswith("/rates.json") and first <= day <= today.isoformat():
            files.append(json.loads(objects.get(key) or b"{}", parse_float=Decimal))
    return RateBook(currency, files, currencies)


def build_segments(
    client: Bitrix24Client,
    objects: Any,
    *,
    options: SegmentOptions,
    now: Callable[[], datetime],
    progress: Callable[[str], None] = lambda message: None,
    adapters: Mapping[str, Callable[[], Any]] | None = None,
    ledger: Any = None,
    webhook_url: str | None = None,
) -> dict[str, Any]:
    """Run (or continue) today's segments; a summary for logs and the CLI. With ``ledger`` (the alerts ledger) the
    night's configured moves become Bitrix24 tasks (``segments/tasks.py``) before the write-back. ``adapters``: the
    ad-audience platforms (``audiences.export.bound_adapters``); None exports no audience."""
    started = now()
    today = started.date()
    state = json.loads(objects.get(STATE_KEY) or b"{}")
    calls_before = client.calls
    writeback = state.get("writeback") or {}
    summary: dict[str, Any] = {"date": today.isoformat()}
    tasks_pending = (state.get("tasks") or {}).get("done") is False
    if (writeback and not writeback.get("done")) or tasks_pending:
        progress(f"segments: continuing the night of {state.get('last')}")
    elif state.get("last") == today.isoformat():
        progress(f"segments: {today} already computed and written")
        audiences = _audiences(client, objects, options, today.isoformat(), adapters, progress)
        if audiences:
            summary["audiences"] = audiences
        return {**summary, "status": "done", "rest_calls": client.calls - calls_before}
    elif state.get("last") and today.isoformat() < str(state["last"]):
        # A clock behind the last night (a wrong zone, a skewed host): computing an older day would record moves
        # backwards and reset the monthly freeze. Nothing is done until the clock passes the last night.
        progress(f"segments: today {today} is before the last night computed ({state['last']}); nothing done")
        return {**summary, "status": "done", "rest_calls": 0}
    else:
        computed = _compute(client, objects, state, options, started, progress)
        summary.update(computed.pop("summary"))
        state = computed["state"]
        writeback = state.get("writeback") or {}
    if (state.get("tasks") or {}).get("done") is False:
        summary["tasks"] = _move_tasks(client, objects, state, options, ledger, webhook_url, started, progress)
    if options.write_back and writeback and not writeback.get("done"):
        plan = decode_plan(objects.get(plan_key(writeback["day"])) or b"")
        done_before = Progress(**{key: writeback.get(key, 0) for key in Progress.__dataclass_fields__})

        def save(current: Progress) -> None:
            state["writeback"] = {**writeback, **asdict(current), "done": current.position >= len(plan)}
            objects.put(STATE_KEY, json.dumps(state).encode())

        finished = execute(client, plan, done_before, save=save, report=progress)
        state["writeback"] = {**writeback, **asdict(done_before), "done": finished}
        objects.put(STATE_KEY, json.dumps(state).encode())
        summary["writeback"] = state["writeback"]
    finished = (state.get("writeback") or {}).get("done", True) and (state.get("tasks") or {}).get("done", True)
    summary["status"] = "done" if finished else "unfinished"
    if summary["status"] == "done" and state.get("last"):
        audiences = _audiences(client, objects, options, str(state["last"]), adapters, progress)
        if audiences:
            summary["audiences"] = audiences
    summary["rest_calls"] = client.calls - calls_before
    return summary


def _audiences(
    client: Bitrix24Client,
    objects: Any,
    options: SegmentOptions,
    day: str,
    adapters: Mapping[str, Callable[[], Any]] | None,
    progress: Callable[[str], None],
) -> dict[str, Any] | None:
    """The night's ad audiences, once the write-back is done (None: none configured, or not to be exported)."""
    if not options.export_audiences or adapters is None:
        return None
    rules = load_rules(objects)
    if not rules.audiences:
        return None
    from throughline.segments.audiences.export import export_audiences

    return export_audiences(client, objects, rules.audiences, _load(objects, snapshot_key(day)), day, adapters,
                            progress)  # fmt: skip


def _compute(
    client: Bitrix24Client,
    objects: Any,
    state: dict[str, Any],
    options: SegmentOptions,
    started: datetime,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    today = started.date()
    day = today.isoformat()
    rules = load_rules(objects)
    crm = refresh_snapshot(client, objects, options=options.snapshot, now=lambda: started, progress=progress)
    zone = started.tzinfo
    rates = _rates(objects, options.currency, crm.currencies, today)
    customers, skipped = collect_customers(
        read_snapshot(objects, "deal"),
        read_snapshot(objects, "contact"),
        read_snapshot(objects, "company"),
        convert=rates.convert,
        zone=zone,  # type: ignore[arg-type]
        today=today,
        # Wins dated as the report dates them: CLOSEDATE, else the last move into a success stage (never DATE_MODIFY).
        # The stage history from its columnar copy (report.columns), as the report reads it.
        wins=last_wins(read_columns(objects, HISTORY), success_stages(StageBook(crm.statuses)), zone),  # type: ignore[arg-type]
    )
    # Last night's rows: the latest snapshot before today (a second run on one day compares with the same night).
    previous_day = state.get("previous") if state.get("last") == day else state.get("last")
    previous = {row["customer"]: row for row in _load(objects, snapshot_key(previous_day))} if previous_day else {}
    frozen = Frozen.from_json(state.get("frozen_before") if state.get("last") == day else state.get("frozen"))
    result = assign(customers, rules, today, previous=previous, frozen=frozen, skipped_deals=skipped)
    objects.put(snapshot_key(day), jsonlines.encode(result.rows))
    objects.put(transitions_key(day), jsonlines.encode(result.transitions))
    counts: dict[str, int] = {}
    for row in result.rows:
        counts[str(row["segment"] or "")] = counts.get(str(row["segment"] or ""), 0) + 1
    progress(f"segments: {len(result.rows)} customers, {len(result.transitions)} moves; " +
             ", ".join(f"{code or 'none'} {count}" for code, count in sorted(counts.items())))  # fmt: skip
    new_state = {
        "last": day,
        "previous": previous_day,
        "frozen": result.frozen.to_json() if result.frozen else None,
        "frozen_before": frozen.to_json() if frozen else None,
        "writeback": None,
    }
    if moves_for_tasks(result.transitions, rules):
        new_state["tasks"] = {"day": day, "done": False}
    if options.write_back:
        current = {f"contact:{row['ID']}": row for row in read_snapshot(objects, "contact")}
        current.update({f"company:{row['ID']}": row for row in read_snapshot(objects, "company")})
        try:
            ids = enumerations(client)
        except FieldsMissing as missing:  # the segments are stored; only the write-back waits for bitrix-setup
            progress(f"segments: nothing written back: {missing}")
        else:
            plan = plan_updates(result.rows, current, ids)
            objects.put(plan_key(day), encode_plan(plan))
            new_state["writeback"] = {"day": day, "total": len(plan), "done": not plan, **asdict(Progress(0))}
            progress(f"segments: {len(plan)} records to write back")
    objects.put(STATE_KEY, json.dumps(new_state).encode())
    summary = {
        "customers": len(result.rows),
        "segments": counts,
        "transitions": len(result.transitions),
        "skipped_deals": skipped,
        "crm": crm.info,
    }
    return {"state": new_state, "summary": summary}


def _move_tasks(
    client: Bitrix24Client,
    objects: Any,
    state: dict[str, Any],
    options: SegmentOptions,
    ledger: Any,
    webhook_url: str | None,
    started: datetime,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """The tasks phase of the night in ``state["tasks"]``: done once every move was tried (or there is no ledger)."""
    day = state["tasks"]["day"]
    if ledger is None:
        progress("segments: moves to tasks found, but no alerts ledger (ALERTS_TABLE) is set: no task created")
        state["tasks"] = {"day": day, "done": True, "skipped": "no ledger"}
        objects.put(STATE_KEY, json.dumps(state).encode())
        return state["tasks"]
    rules = load_rules(objects)
    moves = moves_for_tasks(_load(objects, transitions_key(day)), rules)
    kept, over = within_limit(moves, rules)
    if over:
        progress(f"segments: {len(moves)} moves to tasks, over the nightly limit of {rules.task_limit} (task_limit): "
                 f"{over} get no task")  # fmt: skip
    rows = {row["customer"]: row for row in _load(objects, snapshot_key(day))}
    counts, finished = create_move_tasks(
        client, ledger, kept, rows, rules, today=date.fromisoformat(day), zone=started.tzinfo,  # type: ignore[arg-type]
        currency=options.currency, webhook_url=webhook_url, report=progress,
    )  # fmt: skip
    state["tasks"] = {"day": day, "done": finished, "moves": len(moves), "over_limit": over, **asdict(counts)}
    objects.put(STATE_KEY, json.dumps(state).encode())
    progress(f"segments: tasks for {len(moves)} moves: {counts.created} created, {counts.already} already created")
    return state["tasks"]


def read_rows(objects: Any, day: str) -> Iterator[dict[str, Any]]:
    yield from _load(objects, snapshot_key(day))


def segment_options(settings: Any, write_back: bool = True, export_audiences: bool = True) -> SegmentOptions:
    return SegmentOptions(
        currency=settings.report_currency,
        snapshot=SnapshotOptions.from_settings(settings),
        write_back=write_back,
        export_audiences=export_audiences,
    )


def compute_for_report(
    client: Bitrix24Client,
    objects: Any,
    *,
    options: SegmentOptions,
    started: datetime,
    progress: Callable[[str], None] = lambda message: None,
) -> str:
    """The report's hook, under its run lock right after its CRM refresh: compute tonight's segments (and plan their
    write-back) when nothing of an earlier night is left to do, so the report's segments section reads the same
    night's snapshot. The tasks and the write-back stay for build_segments' runs (05:10 on). Returns what was done:
    ``computed``, ``already`` (tonight's are there), ``waiting`` (an earlier night's write-back or tasks are
    unfinished: computing now would replace their plan; build_segments finishes them, then computes).
    """
    state = json.loads(objects.get(STATE_KEY) or b"{}")
    day = started.date().isoformat()
    if state.get("last") and str(state["last"]) >= day:
        return "already"
    if not (state.get("writeback") or {}).get("done", True) or not (state.get("tasks") or {}).get("done", True):
        progress(f"segments: the night of {state.get('last')} is not finished; tonight's are computed after it")
        return "waiting"
    _compute(client, objects, state, options, started, progress)
    return "computed"


def run_segments(
    settings: Any,
    client: Bitrix24Client,
    objects: Any,
    *,
    now: Callable[[], datetime] | None = None,
    progress: Callable[[str], None] = lambda message: None,
    write_back: bool = True,
    export_audiences: bool = True,
) -> dict[str, Any]:
    """The function's and the CLI's run: settings → options, under the report's run lock (both write the CRM
    snapshot). A run that finds the lock held returns ``{"status": "busy"}``: the next scheduled run continues."""
    import uuid

    from throughline.adapters.report_store import ReportBusy, run_lock
    from throughline.report.job import lock_lease

    clock = now or (lambda: datetime.now(settings.zone))
    started = clock()
    options = segment_options(settings, write_back, export_audiences)
    lease = lock_lease(client.deadline.seconds_left() + client.deadline.reserve)
    try:
        with run_lock(objects, f"segments {uuid.uuid4().hex[:12]} at {started.isoformat()}", started, lease):
            from throughline.segments.audiences.export import bound_adapters

            return build_segments(client, objects, options=options, now=clock, progress=progress,
                                  adapters=bound_adapters(settings, objects),
                                  ledger=never_retaken(settings.alerts_table) if settings.alerts_table else None,
                                  webhook_url=settings.bitrix24_webhook_url)  # fmt: skip
    except ReportBusy as busy:
        progress(f"segments: {busy}; the next run continues")
        return {"date": started.date().isoformat(), "status": "busy", "rest_calls": 0}
