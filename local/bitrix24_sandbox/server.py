"""The sandbox server: the public ``Sandbox`` class, the REST request pipeline and the admin endpoints.

A REST request goes through these steps, in this order:

1. outage check: during an outage the connection is closed without any HTTP response;
2. leaky bucket (``QUERY_LIMIT_EXCEEDED``, 503); it comes before the faults, so a throttled request is always a 503;
3. ``error_rate`` fault: 500 before anything is executed;
4. webhook authentication, parameter decoding, method dispatch, the per-method operating-time limit, execution:
   each executed call costs its method's simulated seconds (``method_seconds``), slept for real scaled by
   ``time_scale``; a request whose calls add up to more than 60 simulated seconds is cut off part-way with a 500
   (``request_time_limit``), the calls that finished before the cut-off stay done;
5. ``lost_response_rate`` fault: the call has run (writes happened) but the client gets a 500 anyway;
6. ``latency_ms`` delay, then the response.

Admin endpoints under ``/_sandbox/`` skip all of that: no faults, no limits, no statistics.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import re
import secrets
import socket
import ssl
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

from . import errors
from .errors import RestError
from .limits import DEFAULT_METHOD_SECONDS, REQUEST_TIME_LIMIT_SECONDS, LeakyBucket, OperatingTime
from .messaging import check_scope
from .methods import CRM_MODE_IDS, METHODS, MethodResult, normalize_method_name
from .outbound import EVENT_NAMES, OutboundEvent, OutboundSender, event_body
from .php import normalize_php_arrays, parse_query, php_assign, to_php_json
from .schema import ENTITIES
from .store import Portal

__all__ = ["Sandbox"]

LOWER_CASE_PARAMETERS = frozenset({"crm.timeline.comment.add"})  # methods that read only lower-case parameter names
BATCH_LIMIT = 50  # batch.md: "The number of requests in a batch is limited to 50."
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a new HTTPS connection may take to finish its handshake
FAULT_KEYS = ("error_rate", "lost_response_rate", "latency_ms", "outage_seconds")
SETTING_KEYS = ("crm_mode", "method_seconds", "operating_cost_seconds", "time_scale", "request_time_limit")

_BATCH_REFERENCE = re.compile(r"\$(result|result_total|result_next)((?:\[[^\]]*\])+)")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class Sandbox:
    """An emulated Bitrix24 portal reachable through an inbound webhook URL, served from a background thread."""

    def __init__(
        self,
        port: int = 0,
        app_token: str | None = None,
        outbound_url: str | None = None,
        rate: float = 2.0,
        burst: float = 50,
        user_id: int = 1,
        secret: str | None = None,
        seed: int | None = None,
        portal_domain: str = "sandbox.bitrix24.ru",
        member_id: str | None = None,
        timezone: str = "Europe/Moscow",
        *,
        host: str = "127.0.0.1",
        events: Iterable[str] | None = None,
        operating_limit_seconds: float = 480.0,
        operating_cost_seconds: float = 0.01,
        method_seconds: Mapping[str, float] | None = None,
        time_scale: float = 1.0,
        request_time_limit: float = REQUEST_TIME_LIMIT_SECONDS,
        crm_mode: str = "classic",
        error_rate: float = 0.0,
        lost_response_rate: float = 0.0,
        latency_ms: float = 0.0,
        outbound_timeout: float = 5.0,
        log_requests: bool = False,
        tls: bool = False,
    ) -> None:
        self._random = random.Random(seed)
        self._drop_random = random.Random(seed)
        self._host = host
        self._requested_port = port
        self.user_id = int(user_id)
        self.secret = secret or self._token(16)
        self.app_token = app_token or self._token(32)
        self.portal_domain = portal_domain
        self.member_id = member_id or hashlib.md5(portal_domain.encode()).hexdigest()
        self.outbound_url = outbound_url
        self.events = frozenset(EVENT_NAMES if events is None else (name.upper() for name in events))
        self.log_requests = log_requests
        self.tz = ZoneInfo(timezone)
        self.tls = bool(tls)
        # With TLS: the self-signed certificate that clients must trust (REQUESTS_CA_BUNDLE, SSL_CERT_FILE, verify=).
        self.ca_file: str | None = _tls().certificate_files().cert if self.tls else None

        self._portal = Portal(webhook_user_id=self.user_id, tz=self.tz)
        self._store_lock = threading.RLock()  # every REST call runs under it, so calls never interleave
        self.crm_mode = crm_mode
        # Simulated seconds of one executed call, per method; methods not listed cost ``operating_cost_seconds``.
        self.method_seconds: dict[str, float] = {
            **DEFAULT_METHOD_SECONDS,
            **{normalize_method_name(name): float(seconds) for name, seconds in (method_seconds or {}).items()},
        }
        self.operating_cost_seconds = float(operating_cost_seconds)
        if not 0 <= float(time_scale) <= 1:
            raise ValueError(f"time_scale must be between 0 and 1, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.request_time_limit = float(request_time_limit)
        self._bucket = LeakyBucket(rate, burst)
        self._operating = OperatingTime(operating_limit_seconds)
        self._sender = OutboundSender(timeout=outbound_timeout, on_result=self._count_delivery)
        self._state_lock = threading.Lock()  # guards faults, statistics and the fault RNG
        self._faults = _Faults()
        self._stats = _empty_stats()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Addresses the portal answered at before a rename (see ``rename``): each now answers 302 to the current one.
        self._retired: list[tuple[_HTTPServer, threading.Thread]] = []
        self._hidden: dict[str, frozenset[int]] = {}  # records the webhook's user may not see (``set_access``)
        # The local application (messaging.py): its client id and the access tokens issued to its placements.
        self.app_client_id = "local." + self._token(14) + "." + self._token(8)
        self._app_tokens: dict[str, AppAuth] = {}
        self._request_auth = threading.local()  # the application token of the request being served, if any
        self.set_faults(error_rate=error_rate, lost_response_rate=lost_response_rate, latency_ms=latency_ms)

    # ---- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind the port and serve in a daemon thread; returns ``self`` so it can be chained."""
        if self._server is not None:
            return self
        self._server, self._thread = self._serve(self._requested_port)
        self._sender.start()
        return self

    def _serve(self, port: int) -> tuple[_HTTPServer, threading.Thread]:
        tls_context = _tls().server_context() if self.tls else None
        server = _HTTPServer((self._host, port), _RequestHandler, self, tls_context)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bitrix24-sandbox", daemon=True
        )
        thread.start()
        return server, thread

    def stop(self) -> None:
        if self._server is None:
            return
        for server, thread in [*self._retired, (self._server, self._thread)]:
            server.shutdown()
            server.close_open_connections()
            server.server_close()
            if thread is not None:
                thread.join(timeout=5)
        self._sender.stop()
        self._server = None
        self._thread = None
        self._retired = []

    # ---- the portal's address and its user's rights -----------------------------------------------------------------

    def rename(self, portal_domain: str) -> str:
        """What an administrator's address change does (settings/how-to-call-rest-api/change-domen.md): the portal
        answers at a new address (here: a new port), every request to the old one gets ``302`` with a ``Location``
        naming the same path (and query) at the new address, and events carry the new ``auth[domain]`` — with the
        same ``member_id``, which never changes. Returns the new inbound-webhook URL (``webhook_url`` says it too).
        A client that follows the 302 as curl and requests do turns the POST into a GET and loses its parameters."""
        if self._server is None:
            raise RuntimeError("start the sandbox before renaming it")
        server, thread = self._serve(0)
        self._retired.append((self._server, self._thread))  # type: ignore[arg-type]
        self._server, self._thread = server, thread
        for old, _ in self._retired:
            old.redirect_to = self.base_url
        self.portal_domain = portal_domain
        return self.webhook_url

    def set_access(
        self,
        *,
        admin: bool | None = None,
        hidden: Mapping[str, Iterable[int]] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> None:
        """The rights of the webhook's user: a webhook works with the rights of the employee who created it. ``admin``
        is what ``user.admin`` answers; ``hidden`` (entity → ids: ``lead``, ``deal``, ``contact``, ``activity``) are
        records that user may not read: ``crm.*.get``/``update``/``delete`` answer ``{"error": "", "error_description":
        "Access denied"}`` (403; per command inside a batch), lists leave them out, and an activity is hidden with its
        owner. ``hidden={}`` shows everything again. Managers (``call``, ``convert_lead``) see everything."""
        with self._store_lock:
            if scopes is not None:
                self._portal.scopes = tuple(scopes)  # what ``scope`` answers; other scopes' methods: 401
            if admin is not None:
                self._portal.webhook_user_admin = bool(admin)
            if hidden is not None:
                self._hidden = {_entity_name(name): frozenset(int(i) for i in ids) for name, ids in hidden.items()}

    # ---- the local application, notifications, chats and tasks (messaging.py) ------------------------------------

    def issue_app_token(
        self, user_id: int | None = None, scopes: Iterable[str] | None = None, expires_in: float = 3600
    ) -> str:
        """An access token of the portal's local application for ``user_id`` (default: the webhook's user), as a
        placement's ``AUTH_ID`` carries it; valid for ``expires_in`` seconds (a real one lives an hour)."""
        token = self._token(32)
        auth = AppAuth(
            token=token,
            user_id=int(user_id or self.user_id),
            scopes=tuple(scopes if scopes is not None else self._portal.scopes),
            client_id=self.app_client_id,
            expires_at=time.time() + expires_in,
        )
        with self._state_lock:
            self._app_tokens[token] = auth
        return token

    def placement_request(
        self, user_id: int | None = None, placement: str = "DEFAULT", options: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """What Bitrix24 posts to a local application's handler when a user opens it (app-embedding/placement
        pages): ``DOMAIN``, ``PROTOCOL``, ``LANG``, ``APP_SID`` in the query, ``AUTH_ID``, ``AUTH_EXPIRES``,
        ``REFRESH_ID``, ``member_id``, ``status``, ``PLACEMENT``, ``PLACEMENT_OPTIONS`` in the form body."""
        query = {"DOMAIN": self.portal_domain, "PROTOCOL": "1", "LANG": "ru", "APP_SID": self._token(32)}
        form = {
            "AUTH_ID": self.issue_app_token(user_id),
            "AUTH_EXPIRES": "3600",
            "REFRESH_ID": self._token(32),
            "member_id": self.member_id,
            "status": "L",
            "PLACEMENT": placement,
            "PLACEMENT_OPTIONS": json.dumps(dict(options or {})),
        }
        return query, form

    def open_application(self, handler_url: str, user_id: int | None = None, **options: Any) -> Any:
        """Post a placement request to the application's handler, as the portal's frame does; returns the answer."""
        import requests

        query, form = self.placement_request(user_id, **options)
        return requests.post(handler_url, params=query, data=form, timeout=30)

    def add_chat(self, title: str, users: Iterable[int] | None = None) -> str:
        """A group chat (im.chat.add) with these members (default: the webhook's user); returns its ``chatNNN``."""
        with self._store_lock:
            chat_id = len(self._portal.chats) + 1
            members = {int(user) for user in (users or [self.user_id])}
            self._portal.chats[chat_id] = {"ID": chat_id, "TITLE": title, "USERS": members}
        return f"chat{chat_id}"

    def notifications(self) -> list[dict[str, Any]]:
        with self._store_lock:
            return copy.deepcopy(self._portal.notifications)

    def chat_messages(self) -> list[dict[str, Any]]:
        with self._store_lock:
            return copy.deepcopy(self._portal.chat_messages)

    def tasks(self) -> list[dict[str, Any]]:
        with self._store_lock:
            return copy.deepcopy(self._portal.tasks)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self._requested_port

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/{self.user_id}/{self.secret}/"

    @property
    def crm_mode(self) -> str:
        """``classic`` (leads stay leads) or ``simple`` (a lead added through REST is converted at once)."""
        return self._portal.crm_mode

    @crm_mode.setter
    def crm_mode(self, mode: str) -> None:
        name = str(mode).strip().lower()
        if name not in CRM_MODE_IDS:
            raise ValueError(f"crm_mode must be one of {sorted(CRM_MODE_IDS)}, got {mode!r}")
        with self._store_lock:
            self._portal.crm_mode = name

    def settings(self) -> dict[str, Any]:
        """The portal's speed and mode, as ``GET /_sandbox/settings`` shows them."""
        return {
            "crm_mode": self.crm_mode,
            "method_seconds": dict(sorted(self.method_seconds.items())),
            "operating_cost_seconds": self.operating_cost_seconds,
            "time_scale": self.time_scale,
            "request_time_limit": self.request_time_limit,
        }

    def configure(
        self,
        crm_mode: str | None = None,
        method_seconds: Mapping[str, float] | None = None,
        operating_cost_seconds: float | None = None,
        time_scale: float | None = None,
        request_time_limit: float | None = None,
    ) -> None:
        """Change the portal's speed or mode while it runs; ``method_seconds`` adds to (or overrides) the costs."""
        if time_scale is not None and not 0 <= float(time_scale) <= 1:
            raise ValueError(f"time_scale must be between 0 and 1, got {time_scale!r}")
        if crm_mode is not None:
            self.crm_mode = crm_mode
        if method_seconds is not None:
            if not isinstance(method_seconds, Mapping):
                raise ValueError("method_seconds must map method names to seconds")
            self.method_seconds.update(
                {normalize_method_name(name): float(seconds) for name, seconds in method_seconds.items()}
            )
        if operating_cost_seconds is not None:
            self.operating_cost_seconds = float(operating_cost_seconds)
        if time_scale is not None:
            self.time_scale = float(time_scale)
        if request_time_limit is not None:
            self.request_time_limit = float(request_time_limit)

    def cost_of(self, method: str) -> float:
        """Simulated seconds one executed call of ``method`` takes (and adds to its operating time)."""
        return self.method_seconds.get(normalize_method_name(method), self.operating_cost_seconds)

    # ---- faults ----------------------------------------------------------------------------------------------------

    def set_faults(
        self,
        error_rate: float | None = None,
        lost_response_rate: float | None = None,
        latency_ms: float | None = None,
        outage_seconds: float | None = None,
    ) -> None:
        """Change any subset of the faults; ``outage_seconds`` > 0 starts an outage now, 0 ends it."""
        with self._state_lock:
            if error_rate is not None:
                self._faults.error_rate = _probability(error_rate, "error_rate")
            if lost_response_rate is not None:
                self._faults.lost_response_rate = _probability(lost_response_rate, "lost_response_rate")
            if latency_ms is not None:
                self._faults.latency_ms = max(float(latency_ms), 0.0)
        if outage_seconds is not None:
            if float(outage_seconds) > 0:
                self.start_outage(float(outage_seconds))
            else:
                self.end_outage()

    def start_outage(self, seconds: float | None = None) -> None:
        """Refuse REST connections for ``seconds`` (until ``end_outage()`` when ``None``)."""
        with self._state_lock:
            self._faults.outage_until = math.inf if seconds is None else time.monotonic() + float(seconds)

    def end_outage(self) -> None:
        with self._state_lock:
            self._faults.outage_until = None

    def faults(self) -> dict[str, Any]:
        with self._state_lock:
            left = self._outage_seconds_left()
            return {
                "error_rate": self._faults.error_rate,
                "lost_response_rate": self._faults.lost_response_rate,
                "latency_ms": self._faults.latency_ms,
                "outage": left is not None,
                "outage_seconds_left": None if left is None or math.isinf(left) else round(left, 3),
            }

    # ---- data and statistics ---------------------------------------------------------------------------------------

    def entities(self, entity: str) -> list[dict[str, Any]]:
        """Full records of ``lead``, ``deal`` or ``contact`` as ``crm.*.get`` returns them, ordered by ID."""
        name = _entity_name(entity)
        with self._store_lock:
            records = sorted(self._portal.records[name].values(), key=lambda record: record["ID"])
            return [self._portal.render(name, record) for record in records]

    def timeline_comments(self) -> list[dict[str, Any]]:
        """Comments added with crm.timeline.comment.add, oldest first."""
        with self._store_lock:
            return self._portal.timeline_comment_list({})

    def stats(self) -> dict[str, Any]:
        with self._state_lock:
            stats = copy.deepcopy(self._stats)
        stats["bucket_peak"] = round(self._bucket.peak, 2)
        return stats

    def reset_stats(self) -> None:
        with self._state_lock:
            self._stats = _empty_stats()
        self._bucket.reset_peak()

    def reset(self) -> None:
        """Clear all data back to the seeded defaults and forget rate-limit and operating-time history."""
        with self._store_lock:
            self._portal.reset()
        self._bucket.reset()
        self._operating.reset()

    def wait_for_outbound(self, timeout: float = 5.0) -> bool:
        """Wait until every queued outbound event has been attempted; ``False`` on timeout."""
        return self._sender.wait_idle(timeout)

    # ---- journeys: outbound losses, a manager's lead conversion, a movable clock -------------------------------------

    outbound_drop_rate = 0.0  # share of outbound events lost before delivery
    _clock_offset = 0.0  # seconds the portal's clock is ahead of ours

    def set_outbound_drop_rate(self, rate: float, seed: int | None = None) -> None:
        self.outbound_drop_rate = _probability(rate, "outbound_drop_rate")
        self._drop_random = random.Random(seed)

    def set_clock_offset(self, seconds: float) -> None:
        """Shift the portal's clock (creation, modification and stage-move times): a demo can play a month."""
        offset = timedelta(seconds=seconds)
        self._clock_offset = seconds  # the answers' time.date_start/date_finish are on the portal's clock too
        self._portal._now = lambda: datetime.now(self.tz) + offset

    def set_clock(self, at: datetime) -> None:
        """Set the portal's clock to ``at`` (aware), running on from there at the real pace: a test that dates its
        records and activities from a fixed instant reads the same whatever day it runs."""
        if at.tzinfo is None:
            raise ValueError("set_clock needs an aware datetime")
        self.set_clock_offset((at - datetime.now(self.tz)).total_seconds())

    def convert_lead(self, lead_id: int, deal_fields: Mapping[str, Any] | None = None) -> int:
        """What a manager's «Создать на основании → Сделка + Контакт» does: a contact with the lead's phones and
        e-mails (unless the lead has one), a deal with ``LEAD_ID`` and the lead's source and UTM fields, the lead
        moved to CONVERTED; each change sends its outbound event. Returns the deal id."""
        with self._store_lock:
            lead = self._portal.render("lead", self._portal.get_record("lead", int(lead_id)))
            contact_id = int(lead.get("CONTACT_ID") or 0)
            if not contact_id:
                contact = {name: lead.get(name) for name in ("NAME", "LAST_NAME", "SOURCE_ID", "ASSIGNED_BY_ID")}
                contact.update({kind: lead.get(kind) or [] for kind in ("PHONE", "EMAIL")})
                contact_id = self._checked_call("crm.contact.add", {"fields": contact})
            copied = ("SOURCE_ID", "SOURCE_DESCRIPTION", "ASSIGNED_BY_ID", "OPPORTUNITY", "CURRENCY_ID", "UTM_SOURCE",
                      "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")  # fmt: skip
            deal = {name: lead.get(name) for name in copied}
            deal.update(TITLE=lead.get("TITLE") or f"Сделка по лиду №{lead_id}", CONTACT_ID=contact_id)
            deal.update(deal_fields or {})
            deal_id = self._checked_call("crm.deal.add", {"fields": deal})
            self._portal.records["deal"][deal_id]["LEAD_ID"] = int(lead_id)  # read-only: set by the conversion
            self._checked_call("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "CONVERTED",
                                                                             "CONTACT_ID": contact_id}})  # fmt: skip
            return deal_id

    def call(self, method: str, params: Mapping[str, Any]) -> Any:
        """Run one REST method as a manager with full rights would (no ``set_access`` restrictions), without the HTTP
        pipeline (faults, limits, statistics)."""
        with self._store_lock:
            return self._checked_call(normalize_method_name(method), params)  # names are case-insensitive

    def _checked_call(self, method: str, params: Mapping[str, Any]) -> Any:
        # What a manager does in the UI: the method's cost is spent, but no HTTP request's 60 s limit applies.
        outcome = self._call(method, params, _RequestClock(limit=float("inf")), restricted=False)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result.result

    # ---- REST pipeline (called by the request handler) -------------------------------------------------------------

    def _outage_active(self) -> bool:
        with self._state_lock:
            return self._outage_seconds_left() is not None

    def _process_rest(self, request: _RestRequest) -> tuple[int, Any]:
        """Steps 2-5 of the pipeline; returns the HTTP status and the JSON payload."""
        if not self._bucket.try_acquire(request.client_ip):
            self._count("rate_limited")
            return _error_response(errors.query_limit_exceeded())
        if self._roll("error_rate"):
            self._count_fault("error")
            return _error_response(errors.internal_server_error())
        try:
            params = request.params()
            self._request_auth.value = self._authenticate(request.path, params)
            status, payload = self._execute(request.path.method, params, request.received_at)
        except RestError as error:
            status, payload = _error_response(error)
        except _RequestCutOff:
            # limits.md: a request that runs longer than 60 s "is interrupted by timeout"; the userfield pages name
            # the error the client then gets, INTERNAL_SERVER_ERROR. Calls that finished before stay done.
            self._count("cut_off")
            status, payload = _error_response(errors.internal_server_error())
        if self._roll("lost_response_rate"):
            self._count_fault("lost_response")
            return _error_response(errors.internal_server_error())
        return status, payload

    def _authenticate(self, path: _RestPath, params: Mapping[str, Any]) -> AppAuth | None:
        """The webhook (``None``) or an application's token (``/rest/<method>?auth=…``, oauth/index.md)."""
        if path.kind == "invalid":
            raise errors.method_not_found()
        if path.kind == "anonymous":
            token = str(params.get("auth") or "")
            if not token:
                raise errors.no_auth_found()
            with self._state_lock:
                auth = next((a for t, a in self._app_tokens.items() if secrets.compare_digest(t, token)), None)
            if auth is None:
                raise RestError("invalid_token", "The access token provided is invalid.", 401)
            if time.time() >= auth.expires_at:
                raise RestError("expired_token", "The access token provided has expired.", 401)
            return auth
        if path.user_id != str(self.user_id) or not secrets.compare_digest(path.secret, self.secret):
            raise errors.invalid_credentials()
        return None

    def _execute(self, method: str, params: dict[str, Any], received_at: float) -> tuple[int, Any]:
        clock = _RequestClock(self.request_time_limit)
        if method == "batch":
            return 200, self._execute_batch(params, received_at, clock)
        outcome = self._call(method, params, clock)
        if outcome.error is not None:
            return _error_response(outcome.error)
        assert outcome.result is not None
        payload: dict[str, Any] = {"result": to_php_json(outcome.result.result)}
        if outcome.result.next is not None:
            payload["next"] = outcome.result.next
        if outcome.result.total is not None:
            payload["total"] = outcome.result.total
        payload["time"] = self._time_block(method, received_at, time.time(), outcome.cost, clock.elapsed)
        return 200, payload

    def _call(
        self, method: str, params: Mapping[str, Any], clock: _RequestClock, *, restricted: bool = True
    ) -> _CallOutcome:
        """Run one method (top-level or inside a batch) with its simulated cost and operating-time accounting.

        The cost is slept (scaled by ``time_scale``) before the call takes effect, as a real write commits at the end
        of its transaction. A call that would end past the request's time limit is cut off: it sleeps until the
        limit, is charged the time it ran, has no effect, and the whole request ends in ``_RequestCutOff``.
        """
        handler = METHODS.get(method)
        if handler is None:
            return _CallOutcome(error=errors.method_not_found())
        if self._operating.is_blocked(method):
            self._count("operation_time_limited")
            return _CallOutcome(error=errors.operation_time_limit())
        auth = getattr(self._request_auth, "value", None) if restricted else None
        try:
            check_scope(self._portal, method, auth)
        except RestError as error:
            return _CallOutcome(error=error)
        if method in LOWER_CASE_PARAMETERS:
            # crm-timeline-comment-add.md: since crm 23.100.0 only lower-case ``fields`` is accepted; ``FIELDS``,
            # ``Fields`` and the like are not seen at all, so the controller reports the parameter as missing.
            params = {key: value for key, value in params.items() if str(key) == str(key).lower()}
        # The CRM REST layer reads top-level parameters case-insensitively (id/ID, fields/FIELDS).
        upper_params = {str(key).upper(): value for key, value in params.items()}
        cost = self.cost_of(method)
        started = time.time()
        if clock.elapsed + cost > clock.limit:
            ran = clock.limit - clock.elapsed
            self._sleep_simulated(ran)
            self._operating.record(method, ran, started)
            clock.elapsed = clock.limit
            raise _RequestCutOff
        self._sleep_simulated(cost)
        with self._store_lock:
            try:
                outcome = _CallOutcome(result=handler(self._context(restricted, auth), upper_params))
            except RestError as error:
                outcome = _CallOutcome(error=error)
        self._operating.record(method, cost, started)
        clock.elapsed += cost
        outcome.started, outcome.finished, outcome.cost = started, time.time(), cost
        return outcome

    def _sleep_simulated(self, seconds: float) -> None:
        if seconds > 0 and self.time_scale > 0:
            time.sleep(seconds * self.time_scale)

    def _execute_batch(self, params: Mapping[str, Any], received_at: float, clock: _RequestClock) -> dict[str, Any]:
        commands = _batch_commands(params.get("cmd", params.get("CMD")))
        if len(commands) > BATCH_LIMIT:
            raise errors.batch_length_exceeded()
        halt = _is_true(params.get("halt", params.get("HALT")))
        results: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        sources = {"result": results, "result_total": totals, "result_next": nexts}
        for key, command in commands:
            raw_method, _, query = command.partition("?")
            method = normalize_method_name(unquote(raw_method))
            self._count_batch_command(method)
            if method == "batch":
                outcome = _CallOutcome(error=errors.batch_method_not_allowed())
            else:
                outcome = self._call(method, _substitute_references(parse_query(query), sources), clock)
            if outcome.error is not None:
                failures[key] = outcome.error.body()
                if halt:
                    break  # halt=1 stops at the first failed command
                continue
            assert outcome.result is not None
            results[key] = outcome.result.result
            times[key] = self._time_block(method, outcome.started, outcome.finished, outcome.cost, outcome.cost)
            if outcome.result.total is not None:
                totals[key] = outcome.result.total
            if outcome.result.next is not None:
                nexts[key] = outcome.result.next
        return {
            "result": {
                "result": _php_keyed(results),
                "result_error": _php_keyed(failures),
                "result_total": _php_keyed(totals),
                "result_next": _php_keyed(nexts),
                "result_time": _php_keyed(times),
            },
            # The outer batch call is not charged to any method's operating time (limits.md).
            "time": self._time_block("batch", received_at, time.time(), clock.elapsed, clock.elapsed),
        }

    def _time_block(
        self, method: str, started: float, finished: float, processing: float, simulated: float
    ) -> dict[str, Any]:
        """The ``time`` block. ``processing`` is the simulated cost of the call(s); ``duration`` is the wall time with
        the slept share of the simulated time counted in full, so it shows the portal's duration at any
        ``time_scale`` (and equals ``finish - start`` at ``time_scale`` 1)."""
        return {
            "start": started,
            "finish": finished,
            "duration": finished - started + simulated * (1 - self.time_scale),
            "processing": processing,
            # The portal's own clock (shifted by set_clock_offset), as a real portal's server time is.
            "date_start": datetime.fromtimestamp(started + self._clock_offset, self.tz).isoformat(timespec="seconds"),
            "date_finish": datetime.fromtimestamp(finished + self._clock_offset, self.tz).isoformat(timespec="seconds"),
            "operating_reset_at": self._operating.reset_at(method),
            "operating": self._operating.used(method),
        }

    def _context(self, restricted: bool = True, auth: AppAuth | None = None) -> _CallContext:
        return _CallContext(self._portal, self._emit, self._hidden if restricted else {}, auth)

    def _emit(self, event: str, record_id: int) -> None:
        url = self.outbound_url
        if not url or event not in self.events:
            return
        if self.outbound_drop_rate and self._drop_random.random() < self.outbound_drop_rate:
            # The queue server lost it (or the handler failed): never retried, as documented.
            self._count_delivery(False)
            return
        body = event_body(
            event=event,
            record_id=record_id,
            domain=self.portal_domain,
            member_id=self.member_id,
            application_token=self.app_token,
            timestamp=int(time.time()),
        )
        self._sender.enqueue(OutboundEvent(url, body))

    def _latency_seconds(self) -> float:
        with self._state_lock:
            return self._faults.latency_ms / 1000

    # ---- internals: randomness, statistics ---------------------------------------------------------------------------

    def _token(self, length: int) -> str:
        alphabet = string.ascii_lowercase + string.digits
        return "".join(self._random.choice(alphabet) for _ in range(length))

    def _roll(self, fault: str) -> bool:
        # Draw for every request that reaches this point, so that one seed always yields one fault sequence.
        with self._state_lock:
            return self._random.random() < getattr(self._faults, fault)

    def _outage_seconds_left(self) -> float | None:
        until = self._faults.outage_until
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            self._faults.outage_until = None
            return None
        return left

    def _count(self, key: str) -> None:
        with self._state_lock:
            self._stats[key] += 1

    def _count_fault(self, kind: str) -> None:
        with self._state_lock:
            self._stats["faults"][kind] += 1

    def _count_request(self, method: str) -> None:
        with self._state_lock:
            self._stats["requests"] += 1
            self._stats["by_method"][method] = self._stats["by_method"].get(method, 0) + 1

    def _count_batch_command(self, method: str) -> None:
        with self._state_lock:
            self._stats["batch_commands"][method] = self._stats["batch_commands"].get(method, 0) + 1

    def _count_status(self, status: int) -> None:
        with self._state_lock:
            codes = self._stats["status_codes"]
            codes[str(status)] = codes.get(str(status), 0) + 1

    def _count_delivery(self, delivered: bool) -> None:
        with self._state_lock:
            self._stats["outbound"]["sent" if delivered else "failed"] += 1


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sandbox: Sandbox,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.redirect_to = ""  # after a rename: the portal's current base URL, where REST requests are sent with 302
        self._tls_context = tls_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self._tls_context is not None:
            # The handshake is deferred to the connection's own thread (finish_request): done here, in the accept
            # loop, one client that stalls or fails it would hold up or break every other connection.
            connection = self._tls_context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(TLS_HANDSHAKE_TIMEOUT)
                request.do_handshake()
                request.settimeout(None)
            except OSError:
                # A client that does not trust our certificate aborts the handshake (SSLError), one that speaks
                # plain HTTP to the HTTPS port fails it, one that never speaks times out. None of them gets a
                # response; process_request_thread closes the socket and the server carries on.
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanishes mid-request (reset, or a TLS connection closed without close_notify) is routine
        # and says nothing about the sandbox; anything else is still reported with its traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            return
        super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """End kept-alive client connections, which would otherwise outlive ``shutdown()`` in their threads."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown, also for TLS: SSLSocket.shutdown also drops the TLS state, and a
                # connection thread about to start its handshake would then fail with an AttributeError instead of
                # the OSError that finish_request expects.
                socket.socket.shutdown(connection, socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real portal offers
    # Send status line, headers and body as one segment: split small writes on a kept-alive connection run into
    # Nagle's algorithm and delayed ACKs, which would add ~40 ms to every call.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.log_requests:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/_sandbox/"):
            self._serve_admin(url)
        else:
            self._serve_rest(url)

    def _serve_rest(self, url: SplitResult) -> None:
        sandbox = self.server.sandbox
        if self.server.redirect_to:
            self._redirect(self.server.redirect_to + self.path)
            return
        received_at = time.time()
        path = _RestPath.parse(unquote(url.path))
        sandbox._count_request(path.method)
        if sandbox._outage_active():
            sandbox._count_fault("outage")
            self._drop_connection()
            return
        request = _RestRequest(
            path=path,
            query=url.query,
            body=self._read_body(),
            content_type=self.headers.get("Content-Type", ""),
            client_ip=self.client_address[0],
            received_at=received_at,
        )
        status, payload = sandbox._process_rest(request)
        time.sleep(sandbox._latency_seconds())
        # Counted before the response goes out: a client that reads the statistics as soon as it has its answer
        # must find that answer counted.
        sandbox._count_status(status)
        self._send_json(status, payload)

    def _serve_admin(self, url: SplitResult) -> None:
        sandbox = self.server.sandbox
        body = self._read_body()
        route = (self.command, url.path.rstrip("/"))
        try:
            if route == ("GET", "/_sandbox/state"):
                entity = parse_qs(url.query).get("entity", [""])[0]
                self._send_json(200, sandbox.entities(entity))
            elif route == ("GET", "/_sandbox/stats"):
                self._send_json(200, sandbox.stats())
            elif route == ("POST", "/_sandbox/stats/reset"):
                sandbox.reset_stats()
                self._send_json(200, {"ok": True})
            elif route == ("GET", "/_sandbox/faults"):
                self._send_json(200, sandbox.faults())
            elif route == ("POST", "/_sandbox/faults"):
                sandbox.set_faults(**_json_settings(body, FAULT_KEYS))
                self._send_json(200, sandbox.faults())
            elif route == ("GET", "/_sandbox/settings"):
                self._send_json(200, sandbox.settings())
            elif route == ("POST", "/_sandbox/settings"):
                sandbox.configure(**_json_settings(body, SETTING_KEYS))
                self._send_json(200, sandbox.settings())
            elif route == ("POST", "/_sandbox/reset"):
                sandbox.reset()
                self._send_json(200, {"ok": True})
            else:
                self._send_json(404, {"error": "not_found", "error_description": f"No admin endpoint {route}"})
        except ValueError as error:
            self._send_json(400, {"error": "bad_request", "error_description": str(error)})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _send_json(self, status: int, payload: Any) -> None:
        # A lone surrogate (a title cut in the middle of an emoji) goes as its JSON escape, "\\ud83d", as a portal's
        # JSON carries it; it has no UTF-8 form to go as.
        text = json.dumps(payload, ensure_ascii=False)
        body = _LONE_SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        # change-domen.md: the old address answers 301 or 302 with the new address in Location, the called path kept.
        # The request's body is read (and dropped) so the kept-alive connection stays usable.
        self._read_body()
        self.server.sandbox._count("redirected")
        body = b"<html><body>Moved</body></html>"
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop_connection(self) -> None:
        # An outage looks like a dead server: the request was read, but no status line ever comes back.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------------------------------
# Small value types and helpers
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Faults:
    error_rate: float = 0.0
    lost_response_rate: float = 0.0
    latency_ms: float = 0.0
    outage_until: float | None = None  # time.monotonic() deadline; math.inf while open-ended


@dataclass(frozen=True)
class _RestPath:
    """``/rest/<user_id>/<secret>/<method>``: ``webhook``; ``/rest/<method>``: ``anonymous``; else ``invalid``."""

    kind: str
    method: str
    user_id: str = ""
    secret: str = ""

    @classmethod
    def parse(cls, path: str) -> _RestPath:
        if not path.startswith("/rest/"):
            return cls("invalid", "")
        parts = path[len("/rest/") :].strip("/").split("/")
        if len(parts) == 1:
            return cls("anonymous", normalize_method_name(parts[0]))
        if len(parts) in (2, 3):
            method = normalize_method_name(parts[2]) if len(parts) == 3 else ""
            return cls("webhook", method, parts[0], parts[1])
        return cls("invalid", "")


@dataclass
class _RestRequest:
    path: _RestPath
    query: str
    body: bytes
    content_type: str
    client_ip: str
    received_at: float

    def params(self) -> dict[str, Any]:
        """Query-string parameters merged with body parameters (JSON, form-encoded or multipart); the body wins."""
        params = parse_query(self.query)
        media_type = self.content_type.split(";")[0].strip().lower()
        if not self.body.strip():
            return params
        if media_type == "application/json" or (not media_type and self.body.lstrip()[:1] == b"{"):
            try:
                decoded = json.loads(self.body)
            except ValueError:
                decoded = None  # like PHP, an unreadable JSON body simply carries no parameters
            if isinstance(decoded, dict):
                params.update(decoded)
        elif media_type == "multipart/form-data":
            params.update(_parse_multipart(self.content_type, self.body))
        else:
            params.update(parse_query(self.body.decode("utf-8", errors="replace")))
        return params


@dataclass
class _CallOutcome:
    result: MethodResult | None = None
    error: RestError | None = None
    started: float = 0.0
    finished: float = 0.0
    cost: float = 0.0  # simulated seconds


@dataclass
class _RequestClock:
    """Simulated seconds spent so far by one HTTP request (a batch's commands add up) and the limit it may use."""

    limit: float
    elapsed: float = 0.0


class _RequestCutOff(Exception):
    """The request ran past the portal's execution time limit and was interrupted."""


@dataclass(frozen=True)
class AppAuth:
    """An application's access token (a local application's placement ``AUTH_ID``): its user, scopes and expiry."""

    token: str
    user_id: int
    scopes: tuple[str, ...]
    client_id: str
    expires_at: float
    kind: str = "app"


@dataclass
class _CallContext:
    portal: Portal
    emit_callback: Callable[[str, int], None]
    hidden: Mapping[str, frozenset[int]] = field(default_factory=dict)
    auth: AppAuth | None = None  # None: the inbound webhook (or a manager in the UI)

    def emit(self, event: str, record_id: int) -> None:
        self.emit_callback(event, record_id)


def _tls() -> ModuleType:
    """The TLS helpers, imported on demand: they need the third-party ``cryptography`` package."""
    from . import tls

    return tls


def _empty_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "by_method": {},
        "batch_commands": {},
        "rate_limited": 0,
        "operation_time_limited": 0,
        "cut_off": 0,
        "redirected": 0,
        "faults": {"error": 0, "lost_response": 0, "outage": 0},
        "outbound": {"sent": 0, "failed": 0},
        "status_codes": {},
    }


def _error_response(error: RestError) -> tuple[int, dict[str, str]]:
    return error.status, error.body()


def _probability(value: float, name: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def _json_settings(body: bytes, known: tuple[str, ...]) -> dict[str, Any]:
    try:
        settings = json.loads(body or b"{}")
    except ValueError as error:
        raise ValueError(f"body is not JSON: {error}") from error
    if not isinstance(settings, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(settings) - set(known)
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}; known: {list(known)}")
    return settings


def _entity_name(entity: str) -> str:
    name = str(entity).strip().lower()
    name = name[:-1] if name.endswith("s") and name[:-1] in ENTITIES else name
    if name not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {sorted(ENTITIES)}")
    return name


def _is_true(value: Any) -> bool:
    return value not in (None, "", 0, "0", False, "false", "N", "n")


def _batch_commands(raw: Any) -> list[tuple[str, str]]:
    if isinstance(raw, Mapping):
        return [(str(key), str(command)) for key, command in raw.items()]
    if isinstance(raw, list):
        return [(str(index), str(command)) for index, command in enumerate(raw)]
    return []


def _php_keyed(mapping: dict[str, Any]) -> Any:
    """A batch result map as PHP prints it: ``[]`` when empty, a list when the keys are ``0..n-1``."""
    converted = to_php_json(mapping)
    if isinstance(converted, dict) and list(converted) == [str(index) for index in range(len(converted))]:
        return list(converted.values())
    return converted


def _substitute_references(value: Any, sources: Mapping[str, Mapping[str, Any]]) -> Any:
    """Replace ``$result[key][path…]`` in batch parameters with values from earlier commands.

    A parameter that is exactly one reference takes the referenced value as is, so a list can feed an ``@ID``
    filter; references inside longer text are interpolated as strings. A reference that cannot be resolved becomes
    an empty string.
    """
    if isinstance(value, dict):
        return {key: _substitute_references(item, sources) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute_references(item, sources) for item in value]
    if not isinstance(value, str) or "$result" not in value:
        return value
    whole = _BATCH_REFERENCE.fullmatch(value)
    if whole:
        resolved = _resolve_reference(whole, sources)
        return "" if resolved is None else resolved
    return _BATCH_REFERENCE.sub(lambda match: _php_string(_resolve_reference(match, sources)), value)


def _resolve_reference(match: re.Match[str], sources: Mapping[str, Mapping[str, Any]]) -> Any:
    source_name, path = match.group(1), re.findall(r"\[([^\]]*)\]", match.group(2))
    current: Any = sources[source_name]
    for segment in path:
        if isinstance(current, Mapping):
            current = current.get(segment)
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return None
    return current


def _php_string(value: Any) -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, Mapping | list):
        return "Array"  # what PHP prints when an array is used as a string
    return str(value)


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    params: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        value = part.get_filename() or payload.decode("utf-8", errors="replace")
        php_assign(params, str(name), value)
    return {name: normalize_php_arrays(value) for name, value in params.items()}


# --------------------------------------------------------------------------------------------------------------------
# History for demos and tests (appended for the ROI report)
# --------------------------------------------------------------------------------------------------------------------

_HISTORY_FIELDS = ("DATE_CREATE", "DATE_MODIFY", "LEAD_ID")


def seed_history(sandbox: Sandbox, entity: str, records: Iterable[Mapping[str, Any]]) -> list[int]:
    """Add records as if the portal already had them.

    ``DATE_CREATE``, ``DATE_MODIFY`` (default: the creation time) and ``LEAD_ID`` — read-only through REST — are
    taken as given, so a demo or test can hold months of history. ``STAGE_MOVES`` (deals and leads), a list of
    ``(stage, ISO time)``, moves the record through stages at those times, as ``crm.stagehistory.list`` then shows
    them. No events are sent and nothing is counted in the statistics: a seeding tool beside the emulated API.
    """
    from .store import parse_datetime

    ids = []
    stage_field = "STATUS_ID" if entity == "lead" else "STAGE_ID"
    with sandbox._store_lock:
        portal = sandbox._portal
        real_now = portal._now
        for fields in records:
            created = parse_datetime(fields.get("DATE_CREATE"), portal.tz)
            skip = (*_HISTORY_FIELDS, "STAGE_MOVES")
            try:
                if created is not None:
                    portal._now = lambda at=created: at
                record_id = portal.add(entity, {key: value for key, value in fields.items() if key not in skip})
                for stage, at in fields.get("STAGE_MOVES") or ():
                    moved = parse_datetime(at, portal.tz)
                    portal._now = lambda at=moved: at
                    portal.update(entity, record_id, {stage_field: stage})
            finally:
                portal._now = real_now
            record = portal.records[entity][record_id]
            modified = parse_datetime(fields.get("DATE_MODIFY"), portal.tz)
            if modified is not None:
                record["DATE_MODIFY"] = modified
            if fields.get("LEAD_ID") and "LEAD_ID" in record:
                record["LEAD_ID"] = int(fields["LEAD_ID"])
            ids.append(record_id)
    return ids
