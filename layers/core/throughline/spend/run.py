"""A whole spend run as the function and the CLI start it: which dates, which platforms, manual files, rates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from throughline.adapters.spend_store import SpendStore
from throughline.config import ConfigError, Settings
from throughline.spend.importer import Deadline, Progress, RunResult, SpendImportFailed, SpendSource, import_spend
from throughline.spend.plan import nightly_window
from throughline.spend.rows import API_PLATFORMS, EARLIEST_DATE, PLATFORMS, now_utc

MAX_RANGE_DAYS = 3 * 366 + 31  # Direct keeps statistics for three years back from the current month


@dataclass(frozen=True)
class RunRequest:
    date_from: date
    date_to: date
    platforms: tuple[str, ...]
    explicit_platforms: bool

    @classmethod
    def parse(cls, event: dict[str, Any], settings: Settings, now: datetime | None = None) -> RunRequest:
        """``{"date_from", "date_to", "platforms"}`` on demand; the nightly default is the lookback window."""
        now = now or now_utc()
        given_from, given_to = event.get("date_from"), event.get("date_to")
        if bool(given_from) != bool(given_to):
            raise ValueError("give both date_from and date_to, or neither (the nightly window)")
        if given_from:
            try:
                date_from, date_to = date.fromisoformat(str(given_from)), date.fromisoformat(str(given_to))
            except ValueError:
                raise ValueError("date_from and date_to must be YYYY-MM-DD") from None
        else:
            date_from, date_to = nightly_window(now, settings.zone, settings.spend_lookback_days)
        today = now.astimezone(settings.zone).date()
        if date_to < date_from:
            raise ValueError("date_to is before date_from")
        if date_from < EARLIEST_DATE:
            raise ValueError(f"date_from {date_from} is before {EARLIEST_DATE}, the first date the Athena tables show")
        if date_to > today:
            raise ValueError(f"date_to {date_to} is in the future (today is {today} in {settings.timezone})")
        if (date_to - date_from).days + 1 > MAX_RANGE_DAYS:
            raise ValueError(f"at most {MAX_RANGE_DAYS} days per run")
        platforms = event.get("platforms") or ()
        if isinstance(platforms, str):
            platforms = [platforms]
        if not isinstance(platforms, list | tuple) or not all(isinstance(p, str) for p in platforms):
            raise ValueError(f"platforms must be a list of names; known: {list(PLATFORMS)}")
        # Once each: two importers of one platform in one run would race for its state and its token.
        platforms = list(dict.fromkeys(platforms))
        unknown = sorted(set(platforms) - set(PLATFORMS))
        if unknown:
            raise ValueError(f"unknown platforms {unknown}; known: {list(PLATFORMS)}")
        return cls(date_from, date_to, tuple(platforms) or PLATFORMS, bool(platforms))


def run_spend_import(
    settings: Settings,
    request: RunRequest,
    *,
    deadline: Deadline,
    progress: Progress | None = None,
    store: SpendStore | None = None,
    now: datetime | None = None,
    bitrix: Any = None,
) -> RunResult:
    """Import what ``request`` asks for; raise SpendImportFailed naming every failure after storing the rest."""
    from throughline.spend import sources as source_factory

    settings.require("data_bucket")
    store = store or SpendStore(settings.data_bucket or "")
    now = now or now_utc()
    failures: list[str] = []
    sources: list[SpendSource] = []
    for platform in request.platforms:
        if platform not in API_PLATFORMS:
            continue
        try:
            source = source_factory.build(platform, settings, store=store, now=now)
        except ConfigError as error:
            if request.explicit_platforms:  # the nightly run imports what is configured; a named one must be
                failures.append(f"{platform}: {error}")
            continue
        except Exception as error:  # a malformed setting (e.g. a customer id) fails this platform, not the run
            failures.append(f"{platform}: {error}")
            continue
        sources.append(source)
    result = import_spend(
        sources, store, request.date_from, request.date_to, deadline=deadline, progress=progress, ingested_at=now
    )
    if "manual" in request.platforms:
        from throughline.spend.manual import process_inbox

        manual = process_inbox(store, settings, now=now)
        result.platforms["manual"] = manual
    failures.extend(_store_rates(settings, store, now, bitrix))
    if failures:
        result.platforms.setdefault("_run", _empty("_run")).failures.extend(failures)
    return result


def raise_for_failures(result: RunResult) -> None:
    if result.failures:
        raise SpendImportFailed("spend import incomplete — " + "; ".join(result.failures))


def _store_rates(settings: Settings, store: SpendStore, now: datetime, bitrix: Any) -> Sequence[str]:
    from throughline.spend.rates import rates_from_portal, store_rates

    today = now.astimezone(settings.zone).date()
    if settings.currency_rates:
        rates = dict(settings.currency_rates)
        rates.setdefault(settings.report_currency, "1")
        store_rates(store, today, settings.report_currency, rates, "config")
        return []
    if not (bitrix or settings.bitrix24_webhook_url):
        return []  # nothing to convert with; the report shows foreign-currency spend as unconverted
    try:
        if bitrix is None:
            from throughline.bitrix24.portal import bitrix_client

            bitrix = bitrix_client(settings)
        rows = bitrix.call("crm.currency.list", {}).result or []  # a portal has a handful of currencies: one page
        store_rates(
            store, today, settings.report_currency, rates_from_portal(rows, settings.report_currency), "bitrix24"
        )
    except Exception as error:
        return [f"currency rates from Bitrix24: {error}"]
    return []


def _empty(name: str) -> Any:
    from throughline.spend.importer import PlatformResult

    return PlatformResult(name)
