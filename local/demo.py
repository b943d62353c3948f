"""`make demo`: the main job, offline, end to end.

1. A burst of web-form posts from a mix of channels goes through the real functions on the local stack into the
   Bitrix24 sandbox (leads with their UTM source and the first line of «Путь клиента»).
2. A month of CRM work (calls, e-mails, meetings, conversions, wins and losses) reaches the journeys through
   outbound webhooks; a reconciliation sweep follows.
3. Ad spend for the last 30 days is imported from the Yandex Direct, Google Ads and VK Ads sandboxes, and offline
   spend from a manual CSV dropped into the inbox.
4. The month's won deals are sent back to the ad platforms as offline conversions (the Yandex Metrica, Google Data
   Manager and VK tracker sandboxes), day by day as the hourly schedule would have.
5. Customer segments are computed (``bitrix-setup``'s fields and rules, then ``build_segments``), written back to
   the contacts, and printed.
5. The ROI report is built (the run exports the journeys for attribution first); its headline table is printed and
   its files are written under ``out/demo/report/`` (open ``index.html``).
6. What the team saw in Bitrix24: the alerts (real-time ones from the writer, schedule-based ones from check_alerts),
   the tasks, the three digests in the «Маркетинг» chat, and the REST calls all that cost.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import gzip
import json
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from local.ad_sandboxes import start_all as start_ad_sandboxes
from local.ad_sandboxes import start_conversion_sandboxes
from local.stack import LocalStack
from local.traffic import SITE, burst, send
from throughline.sources import CHANNEL_LABELS, SOURCE_LABELS, classify

OUT = Path(__file__).resolve().parent.parent / "out" / "demo"
# The ad accounts' first campaigns carry the names the demo traffic tags its links with, as an advertiser's would.
CAMPAIGN_NAMES = {
    "yandex_direct": ["zima_sale", "brand"],
    "google_ads": ["generic"],
    "vk_ads": ["lookalike", "retarget"],
}
# Offline and e-mail spend that no ad API knows: the marketer's manual CSV (the DESIGN.md header, Excel's `;`).
MANUAL_SPEND = """date;utm_source;utm_medium;utm_campaign;cost;currency;campaign_name
{d1};flyer;offline;metro_november;18000,00;RUB;Листовки у метро
{d2};newsletter;email;november_digest;4500,50;RUB;Рассылка «Ноябрь»
"""
REPORT_FILES = ("index.html", "roi.json", "roi.csv")


def main(argv: list[str] | None = None) -> int:
    say = functools.partial(print, file=sys.stdout, flush=True)  # the terminal: stdout goes to the log below
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=150, help="how many different people post a form")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=6, help="form posts in flight at once")
    parser.add_argument("--verbose", action="store_true", help="show the functions' logs and metrics")
    parser.add_argument("--no-month", dest="month", action="store_false", help="skip the month of CRM work")
    args = parser.parse_args(argv)

    traffic = burst(args.people, seed=args.seed)
    say(f"Throughline demo: {len(traffic.posts)} form posts from {args.people} people, offline.")
    started = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    quiet = {} if args.verbose else {"POWERTOOLS_LOG_LEVEL": "WARNING"}
    functions_output = contextlib.nullcontext() if args.verbose else (OUT / "functions.log").open("w", encoding="utf-8")
    ad_servers, ad_environment = start_ad_sandboxes(campaigns=3, names=CAMPAIGN_NAMES)
    # The sandboxes' second Google customer bills in USD at rouble-sized figures; the demo keeps the RUB one (the
    # KZT Yandex client still shows the currency conversion).
    ad_environment["GOOGLE_ADS_CUSTOMER_IDS"] = "123-456-7890"
    conversion_servers, conversion_environment = start_conversion_sandboxes(ad_servers[1])
    ad_servers += conversion_servers
    ad_environment |= conversion_environment
    month = conversions = None
    try:
        with (
            functions_output as log,
            contextlib.redirect_stdout(log) if log else contextlib.nullcontext(),
            LocalStack(parameters={"AllowedOrigins": SITE}, environment={**quiet, **ad_environment}) as stack,
        ):
            say(f"  local stack at {stack.url}; Bitrix24 sandbox at {stack.sandbox.base_url} (2 req/s, burst 50)")
            chat = _enable_alerts(stack)
            answers = send(stack.url, traffic.first_wave, concurrency=args.concurrency, progress=say)
            answers += send(stack.url, traffic.second_wave, concurrency=args.concurrency, progress=say)
            say("  waiting for the writer to drain the queue at the portal's pace…")
            if not stack.wait_until_idle(timeout=600):
                say("  the queue did not drain in 10 minutes")
                return 1
            leads = stack.sandbox.entities("lead")
            stats = stack.sandbox.stats()
            burst_alert_calls = _realtime_calls()
            comments = stack.sandbox.timeline_comments()
            burst_seconds = time.monotonic() - started
            if args.month:
                month = _play_month(stack, args.seed, say)
            say("  importing 30 days of ad spend (Yandex Direct, Google Ads, VK Ads sandboxes) and a manual CSV…")
            spend = _import_spend(stack)
            if args.month:
                say("  sending the won deals to Yandex Metrica, Google Ads and VK Ads as offline conversions…")
                conversions = _send_conversions(conversion_servers)
            say("  computing customer segments and writing them back to the contacts…")
            segments = _build_segments(stack)
            say("  exporting the journeys and building the ROI report…")
            report = _build_report(stack, say)
            say("  checking the alert rules and sending the digests…")
            seen = _alerts(stack, chat)
            seen["burst_hook_calls"] = burst_alert_calls
    finally:
        for server in ad_servers:
            server.stop()

    statuses = Counter((post.kind, status) for post, status, _ in answers)
    say(f"\nAll posted and written to Bitrix24 in {burst_seconds:.1f} s. Answers to the form posts:")
    for (kind, status), count in sorted(statuses.items()):
        say(f"  {kind:<8} → HTTP {status}: {count}")

    rows = _lead_rows(leads)
    table = Counter((row["channel"], row["source"]) for row in rows)
    say(f"\nLeads created in Bitrix24: {len(leads)} (people: {args.people}; repeat requests added to")
    say(f"their open lead as journey lines: {len(comments)})\n")
    say(f"  {'Канал':<22} {'Источник':<20} {'Лиды':>5}")
    for (channel, source), count in sorted(table.items(), key=lambda item: (-item[1], item[0])):
        say(f"  {channel:<22} {source:<20} {count:>5}")
    calls = stats["requests"]
    say(f"\nBitrix24 REST calls: {calls} HTTP requests ({dict(stats['batch_commands'])} inside batches)")
    say(f"  calls per new lead: {calls / max(1, len(leads)):.2f}   503 QUERY_LIMIT_EXCEEDED: {stats['rate_limited']}")
    example = next((row for row in rows if "\n" in row["journey"]), rows[0] if rows else None)
    if example:
        say(f"\nA journey («Путь клиента») of lead {example['id']}:\n  " + example["journey"].replace("\n", "\n  "))
    if month:
        _show_month(month, say)

    say("\nAd spend imported into S3 (spend/platform=…/date=…/<account>.json.gz):")
    for (platform, currency), (rows_count, cost) in sorted(spend.items()):
        say(f"  {platform:<14} {currency}  {cost:>14,.2f}  ({rows_count} rows)".replace(",", " "))

    if conversions:
        _show_conversions(conversions, say)
    _show_segments(segments, say)
    _show_report(report, say)
    _show_alerts(seen, say)

    with (OUT / "leads.csv").open("w", newline="", encoding="utf-8-sig") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)
    (OUT / "summary.json").write_text(
        json.dumps(
            {"leads": len(leads), "people": args.people, "rest_calls": calls, "rate_limited": stats["rate_limited"],
             "by_channel": {f"{c} / {s}": n for (c, s), n in table.items()}, "report": report["result"],
             "conversions": conversions},
            ensure_ascii=False,
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )  # fmt: skip
    say(f"\nWritten: {OUT / 'leads.csv'}, {OUT / 'summary.json'} (functions' logs: {OUT / 'functions.log'})")
    say(f"The report a marketer opens: {OUT / 'report' / 'index.html'}")
    return 0


def _enable_alerts(stack: LocalStack) -> str:
    """What an operator does once (bitrix-setup writes the default rules; the marketer edits them): big deals from
    150 000 ₽ to the head of sales (user 3), digests into a «Маркетинг» chat, and their link to the Bitrix24 app."""
    import boto3
    import yaml

    from throughline.adapters.report_store import S3Objects
    from throughline.alerts.rules import DEFAULT_YAML, parse_rules
    from throughline.alerts.store import publish_realtime

    chat = stack.sandbox.add_chat("Маркетинг", users=[1, 2, 3])
    config = yaml.safe_load(DEFAULT_YAML)
    config["rules"]["big_deal"] |= {"enabled": True, "threshold": 150000, "also_notify": [3]}
    config["settings"] |= {
        "chat_dialog_id": chat,
        "report_url": f"https://{stack.sandbox.portal_domain}/marketplace/app/7/",
    }
    for kind in ("daily", "weekly", "monthly"):
        config["rules"][f"digest_{kind}"]["channels"] = ["chat", "bitrix"]
    text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    bucket = stack.resources.physical["DataBucket"]
    boto3.session.Session().client("s3").put_object(Bucket=bucket, Key="config/alerts.yaml", Body=text.encode())
    publish_realtime(S3Objects(bucket), parse_rules(text))  # the writer's hot-lead, repeat-request and big-deal rules
    return chat


def _realtime_calls() -> int:
    from throughline.alerts import realtime

    return realtime.CALLS["batches"]


def _alerts(stack: LocalStack, chat: str) -> dict:
    """check_alerts for yesterday (twice: the hourly rerun sends nothing new), hot leads past their 5 minutes, and
    the three digests; returns what the sandbox holds and the REST calls spent."""
    from datetime import datetime

    from throughline.adapters.report_store import S3Objects
    from throughline.alerts import realtime
    from throughline.alerts.job import run_check_alerts
    from throughline.bitrix24.portal import side_client
    from throughline.config import get_settings

    today = date.today()
    runs = [stack.invoke("check_alerts", {"date": str(today - timedelta(days=1))}) for _ in range(2)]
    # The 5-minute schedule, as it runs once the hot leads' deadlines have passed (the demo does not wait).
    settings = get_settings()
    client = side_client(settings)
    later = datetime.now(settings.zone) + timedelta(minutes=6)
    runs.append(run_check_alerts(settings, S3Objects(settings.data_bucket or ""), client, now=later))
    monday = today + timedelta(days=7 - today.weekday())
    first = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    digests = [
        stack.invoke("send_digests", {"kind": kind, "date": str(day)})
        for kind, day in (("daily", today + timedelta(days=1)), ("weekly", monday + timedelta(days=14)),
                          ("monthly", first))
    ]  # fmt: skip
    sandbox = stack.sandbox
    return {
        "notifications": sandbox.notifications(),
        "tasks": sandbox.tasks(),
        "chat": [message for message in sandbox.chat_messages() if message["DIALOG_ID"] == chat],
        "runs": runs,
        "digests": digests,
        "hook_calls": realtime.CALLS["batches"],
    }


def _show_alerts(seen: dict, say) -> None:
    say("\nWhat the team saw in Bitrix24")
    notes, tasks = seen["notifications"], seen["tasks"]
    say(f"  notifications: {len(notes)}")
    kinds = Counter(note["MESSAGE"].split(":")[0] for note in notes)
    for kind, count in kinds.most_common():
        example = next(note for note in notes if note["MESSAGE"].split(":")[0] == kind)
        say(f"    {count:>3} × {example['MESSAGE'].splitlines()[0][:150]}  (→ user {example['USER_ID']})")
    hot = [task for task in tasks if task["title"].startswith("Обработать")]
    say(f"  tasks: {len(tasks)} ({len(hot)} «Обработать в течение 5 минут», {len(tasks) - len(hot)} repeat requests)")
    for task in tasks[:3]:
        say(f"    {task['title']} → user {task['responsibleId']}, due {task['deadline']}, linked {task['ufCrmTask']}")
    for message in seen["chat"]:
        say("\n  «Маркетинг» chat:\n    " + message["MESSAGE"].replace("\n", "\n    "))
    scheduled = sum(run["bitrix_calls"] for run in seen["runs"])
    digests = sum(result["bitrix_calls"] for result in seen["digests"])
    fired = sum(len(run["fired"]) for run in seen["runs"])
    burst, month = seen["burst_hook_calls"], seen["hook_calls"] - seen["burst_hook_calls"]
    say(f"\nREST calls the alerts cost: real-time (writer hook) {burst} in the burst (tasks for new leads and repeat "
        f"requests), {month} in the month (big-deal checks of deal events); check_alerts {scheduled} "
        f"({len(seen['runs'])} runs; {fired} alerts), digests {digests}")  # fmt: skip


def _import_spend(stack: LocalStack) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """Drop the manual CSV into the inbox, run import_ad_spend once for the last 30 days, and add up what it stored
    per platform and currency."""
    import boto3

    today = date.today()
    s3 = boto3.session.Session().client("s3")
    bucket = stack.resources.physical["DataBucket"]
    manual = MANUAL_SPEND.format(d1=today - timedelta(days=20), d2=today - timedelta(days=10))
    s3.put_object(Bucket=bucket, Key="spend/manual/inbox/offline-november.csv", Body=manual.encode("utf-8-sig"))
    stack.invoke(
        "import_ad_spend", {"date_from": str(today - timedelta(days=30)), "date_to": str(today - timedelta(days=1))}
    )
    totals: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="spend/platform="):
        for item in page.get("Contents", []):
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            for line in body.decode().splitlines():
                row = json.loads(line, parse_float=Decimal)
                count, cost = totals.get((row["platform"], row["currency"]), (0, Decimal(0)))
                totals[(row["platform"], row["currency"])] = (count + 1, cost + row["cost"])
    return totals


def _build_segments(stack: LocalStack) -> dict:
    """bitrix-setup's segments part (the fields, config/segments.yaml), then one build_segments run."""
    from throughline.adapters.report_store import S3Objects
    from throughline.bitrix24.client import Bitrix24Client
    from throughline.segments.fields import setup_report

    setup_report(Bitrix24Client(stack.sandbox.webhook_url), S3Objects(stack.resources.physical["DataBucket"]))
    return stack.invoke("build_segments", {})


def _show_segments(segments: dict, say) -> None:
    from throughline.segments.rules import default_rules

    labels = {rule.code: rule.label for rule in default_rules().segments}
    say(f"\nCustomer segments ({segments.get('customers', 0)} customers; written back to Bitrix24:"
        f" {(segments.get('writeback') or {}).get('written', 0)}):")  # fmt: skip
    for code, count in sorted((segments.get("segments") or {}).items(), key=lambda item: -item[1]):
        say(f"  {labels.get(code, 'Без сегмента'):<16} {count:>5}")


def _send_conversions(servers: list) -> dict:
    """Run the conversions job at the end of every day of the played month (the month is played forward on the
    portal's clock, and the platforms refuse conversions from the future), through the three sandboxes, as the hourly
    schedule would have sent them; the figures, from the ledger."""
    from throughline.config import load_settings
    from throughline.conversions.collect import IDENTIFIER_KEYS, WON
    from throughline.conversions.ledger import Ledger
    from throughline.conversions.run import execute

    settings = load_settings()
    today = datetime.now(settings.zone).date()
    result = None
    for day in range(33):
        moment = datetime.combine(today + timedelta(days=day), datetime.max.time(), settings.zone)
        for sandbox in servers:
            sandbox.clock = lambda moment=moment: moment
        result = execute(settings, date_from=today - timedelta(days=30), date_to=moment.date(),
                         now=lambda moment=moment: moment, sleep=lambda seconds: None)  # fmt: skip
    assert result is not None
    won = [conversion for conversion in result.conversions if conversion.kind == WON]
    platforms: dict[str, dict] = {}
    for row in Ledger(settings.conversions_table or "").items():
        figures = platforms.setdefault(str(row["platform"]), {"states": Counter(), "reasons": Counter()})
        figures["states"][str(row["state"])] += 1
        if row.get("reason"):
            figures["reasons"][str(row["reason"])] += 1
    for name, outcome in result.platforms.items():
        if outcome.skipped:
            platforms[name] = {"skipped": outcome.skipped}
    return {
        "won_deals": len(won),
        "revenue": str(sum((conversion.amount for conversion in won), Decimal(0))),
        "with_identifier": {key: sum(1 for c in won if c.identifiers.get(key)) for key in IDENTIFIER_KEYS},
        "with_contacts": sum(1 for conversion in won if conversion.contacts),
        "platforms": {name: _plain_counts(figures) for name, figures in sorted(platforms.items())},
    }


def _plain_counts(figures: dict) -> dict:
    return {key: dict(value) if isinstance(value, Counter) else value for key, value in figures.items()}


def _show_conversions(conversions: dict, say) -> None:
    ids = ", ".join(f"{key} {count}" for key, count in conversions["with_identifier"].items())
    say(f"\nOffline conversions: {conversions['won_deals']} won deals ({_money(conversions['revenue'])} RUB); "
        f"carrying {ids}; a contact {conversions['with_contacts']}.")  # fmt: skip
    for platform, figures in conversions["platforms"].items():
        if "skipped" in figures:
            say(f"  {platform:<15} skipped: {figures['skipped']}")
            continue
        states = ", ".join(f"{state} {count}" for state, count in sorted(figures["states"].items()))
        say(f"  {platform:<15} {states}")
        for reason, count in (figures.get("reasons") or {}).items():
            say(f"  {'':<15} {count} × {reason}")


def _build_report(stack: LocalStack, say) -> dict:
    """Run build_roi_report (it exports the journeys for attribution first) over the spend month and the CRM month,
    and copy its files under out/demo/report/."""
    import boto3

    today = date.today()
    # The spend month is behind us and the CRM month (played forward on the sandbox's clock) ahead: report both.
    event = {"date_from": str(today - timedelta(days=30)), "date_to": str(today + timedelta(days=31))}
    result = stack.invoke("build_roi_report", event)
    s3 = boto3.session.Session().client("s3")
    bucket = stack.resources.physical["DataBucket"]
    folder = OUT / "report"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = result["locations"]["latest"].split(f"{bucket}/", 1)[-1]
    for name in REPORT_FILES:
        body = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        (folder / name).write_bytes(body)
    return {"result": result, "roi": json.loads((folder / "roi.json").read_text(encoding="utf-8"))}


def _show_report(report: dict, say) -> None:
    roi = report["roi"]
    period = roi["period"]
    say(f"\nROI report, {period['date_from']} … {period['date_to']} ({roi.get('currency', 'RUB')}):")
    say(f"  {'Канал':<22} {'Расход':>12} {'Лиды':>6} {'CPL':>9} {'Сделки':>7} {'Выручка':>12} {'ROMI':>9}")
    channels = [row for row in roi["rows"] if row["level"] == "channel"]
    for label, values in [*((row["channel_label"], row["metrics"]) for row in channels), ("Итого", roi["headline"])]:
        say(
            f"  {label:<22} {_money(values['spend']):>12} {values['leads']:>6} {_money(values['cpl']):>9} "
            f"{values['won_deals']:>7} {_money(values['revenue']):>12} {_percent(values['romi']):>9}"
        )


def _money(value: object) -> str:
    """roi.json's decimal string in whole roubles, rounded half-up as the report rounds (format() alone: half-even)."""
    return "—" if value is None else f"{_whole(value):,.0f}".replace(",", " ")


def _percent(value: object) -> str:
    return "—" if value is None else f"{_whole(value):.0f} %"


def _whole(value: object) -> Decimal:
    return Decimal(str(value)).quantize(Decimal(1), ROUND_HALF_UP)


def _play_month(stack: LocalStack, seed: int, say) -> dict:
    """After the burst: a month of calls, e-mails, meetings, conversions and stage moves, all through outbound
    webhooks; then one reconciliation sweep; returns the figures and a few journeys."""
    from local.crm_month import play_month

    sandbox = stack.sandbox

    def settle() -> None:
        for _ in range(2):  # our field writes come back as update events
            sandbox.wait_for_outbound(30)
            stack.wait_until_idle(timeout=300, settle=0.2)

    say("\nA month in the CRM: managers call, write, meet, convert, win and lose (outbound webhooks → journeys)…")
    sandbox.reset_stats()
    summary = play_month(sandbox, seed=seed, settle=settle, progress=say)
    settle()
    stats = sandbox.stats()
    events = stats["outbound"]["sent"]
    calls = stats["requests"] - sum(stats["by_method"].get(m, 0) for m in ("crm.activity.add",))
    sweep = stack.invoke("journey_sweep", {})
    settle()
    deals = {int(deal["ID"]): deal for deal in sandbox.entities("deal")}
    leads = {int(lead["ID"]): lead for lead in sandbox.entities("lead")}
    typed = [lead for lead in leads.values() if lead.get("ORIGINATOR_ID") != "throughline"]
    examples = []
    for title, record in (
        ("a won deal", deals.get(summary.won[0]) if summary.won else None),
        ("a lost deal", deals.get(summary.lost[0]) if summary.lost else None),
        ("a lead a manager typed in", typed[0] if typed else None),
    ):
        if record:
            examples.append((title, record["ID"], record.get("UF_CRM_CUSTOMER_JOURNEY") or ""))
    return {"summary": summary, "events": events, "calls": calls, "sweep": sweep, "examples": examples}


def _show_month(month: dict, say) -> None:
    summary = month["summary"]
    say(f"\nThe month: {summary.activities} calls, e-mails and meetings; {summary.typed_leads} leads typed by")
    say(f"managers; {summary.conversions} leads converted to deals; {len(summary.won)} won, {len(summary.lost)} lost.")
    say(f"Outbound webhooks delivered: {month['events']}; Bitrix24 REST calls by the journey (our writer): "
        f"{month['calls']} ({month['calls'] / max(1, month['events']):.2f} per event).")  # fmt: skip
    say(f"The sweep afterwards: {month['sweep']['touches_added']} touches missing (0 = no event was lost), "
        f"{month['sweep']['rest_calls']} REST calls.")  # fmt: skip
    for title, record_id, journey in month["examples"]:
        say(f"\nJourney of {title} (№{record_id}):\n  " + journey.replace("\n", "\n  "))


def _lead_rows(leads: list[dict]) -> list[dict[str, str]]:
    rows = []
    for lead in leads:
        source = classify(utm_source=lead.get("UTM_SOURCE"), utm_medium=lead.get("UTM_MEDIUM"))
        rows.append(
            {
                "id": lead["ID"],
                "name": lead.get("NAME") or "",
                "channel": CHANNEL_LABELS[source.channel],
                "source": SOURCE_LABELS.get(source.source, source.source),
                "utm_source": lead.get("UTM_SOURCE") or "",
                "utm_medium": lead.get("UTM_MEDIUM") or "",
                "utm_campaign": lead.get("UTM_CAMPAIGN") or "",
                "source_id": lead.get("SOURCE_ID") or "",
                "journey": lead.get("UF_CRM_CUSTOMER_JOURNEY") or "",
            }
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
