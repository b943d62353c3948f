"""The Docker-free local stack: embedded AWS (moto server), the Bitrix24 sandbox, the HTTP API, the queue consumers.

Functions run in this process, imported from ``functions/<name>/app.py`` exactly as Lambda imports them, with the
environment template.yaml gives them. The HTTP server turns requests into API Gateway HTTP API (payload v2) events;
pollers play the SQS event source (batch size, maximum concurrency, partial batch responses).

Local differences, on purpose: queue messages are received with a short visibility timeout and failed writes come
back after seconds instead of minutes, so a demo or a test does not wait for production back-off.
"""

from __future__ import annotations

import base64
import importlib
import ipaddress
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.template import (
    HttpRoute,
    LocalStackResources,
    QueueSource,
    load_template,
    parameters_from_environment,
    provision,
)

LOCAL_REGION = "eu-central-1"
LOCAL_APP_TOKEN = "local-app-token"
# The template secret (logical id) that holds each secret the local stack fills in (template.yaml, one per consumer).
SECRET_HOMES = {"BITRIX24_WEBHOOK_URL": "CrmSecret", "BITRIX24_APP_TOKENS": "EventsSecret"}
# Local pacing of retries and visibility (production values are in template.yaml and config.py).
LOCAL_ENVIRONMENT = {
    # One process shares one pacer between all local writer threads: give it the whole portal rate.
    "BITRIX24_WRITER_CONCURRENCY": "1",
    "WRITER_RETRY_BASE_SECONDS": "1",
    "WRITER_RETRY_MAX_SECONDS": "8",
    "WRITER_SETTLE_SECONDS": "2",  # a write in doubt is looked at again after seconds, not the production minute
    "POWERTOOLS_METRICS_NAMESPACE": "Throughline",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "throughline-local",
}
_JSON = {"Content-Type": "application/json"}
API_PAYLOAD_LIMIT = 10 * 1024 * 1024  # API Gateway's request payload quota
_TEXT_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/")
# The HTTP routes described (OpenAPI 3.1), served at OPENAPI_PATH.
OPENAPI_DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
OPENAPI_PATH = "/_local/openapi.yaml"


class LocalContext:
    """Enough of the Lambda context for Powertools and for deadline-aware code."""

    def __init__(self, function_name: str, timeout: int, memory: int):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{LOCAL_REGION}:123456789012:function:{function_name}"
        self.memory_limit_in_mb = memory
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalStack:
    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        aws_endpoint_url: str | None = None,
        bitrix_webhook_url: str | None = None,
        sandbox_options: Mapping[str, Any] | None = None,
        parameters: Mapping[str, str] | None = None,
        poll_queues: bool = True,
        queue_visibility_seconds: int = 20,
        stack_name: str = "throughline-local",
        environment: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        captcha: str | None = None,
    ):
        self.host = host
        self.port = port
        self.aws_endpoint_url = aws_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        self.bitrix_webhook_url = bitrix_webhook_url or os.environ.get("BITRIX24_WEBHOOK_URL")
        self.sandbox_options = dict(sandbox_options or {})
        self.parameters = dict(parameters or {})
        self.poll_queues = poll_queues
        self.queue_visibility_seconds = queue_visibility_seconds
        self.stack_name = stack_name
        self.extra_environment = dict(environment or {})
        self.log = log or (lambda message: None)
        self.sandbox: Any = None
        # "smartcaptcha" or "turnstile": that provider's verification sandbox, its key in the stack's secret
        self.captcha = captcha
        self.captcha_sandbox: Any = None
        self.resources: LocalStackResources | None = None
        self._moto: Any = None
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._saved_environ: dict[str, str | None] = {}
        self.invocations: dict[str, int] = {}
        self._receive_locks: dict[str, threading.Lock] = {}

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> LocalStack:
        self._start_aws()
        import boto3

        session = boto3.session.Session(region_name=os.environ["AWS_DEFAULT_REGION"])
        self._http = ThreadingHTTPServer((self.host, self.port), _make_handler(self))
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        # The environment wins over a parameter's default (GOOGLE_ADS_CUSTOMER_IDS=… make serve); parameters given
        # to LocalStack win over both.
        self.parameters = {**parameters_from_environment(load_template(), os.environ), **self.parameters}
        self.parameters.setdefault("AllowedOrigins", self.url)
        self.resources = provision(session, stack_name=self.stack_name, parameters=self.parameters)
        self._start_bitrix(session)
        captcha_environment = self._start_captcha(session)
        self._set_environment(
            {**self.resources.environment(), **LOCAL_ENVIRONMENT, **captcha_environment, **self.extra_environment}
        )
        _reset_process_caches()
        _guard_metrics()
        if self.sandbox:
            self._prepare_sandbox()
        self._spawn(lambda: self._http.serve_forever(poll_interval=0.05), "local-http")  # a quick stop()
        if self.poll_queues:
            for source in self.resources.queue_sources:
                for index in range(source.maximum_concurrency):
                    self._spawn(lambda source=source: self._poll(source), f"poller-{source.function}-{index}")
        self.log(f"local stack up at {self.url} (AWS at {self.aws_endpoint_url})")
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        # One deadline for them all (they stop together): ten seconds each added up past the e2e fixture's 30-s wait
        # for `make serve` to end when several pollers were mid-invocation. They are daemons: one still busy then is
        # left to the process's end.
        deadline = time.monotonic() + 10
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.sandbox:
            self.sandbox.stop()
        if self.captcha_sandbox:
            self.captcha_sandbox.stop()
        if self._moto:
            self._moto.stop()
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reset_process_caches()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- running functions ----------------------------------------------------------------------------------------

    def invoke(self, function: str, event: Mapping[str, Any]) -> Any:
        """Run one function once, as Lambda would: a fresh context with the template's timeout."""
        assert self.resources is not None, "start() the stack first"
        if function not in self.resources.functions:
            raise KeyError(f"no function {function!r}; known: {sorted(self.resources.functions)}")
        spec = self.resources.functions[function]
        module_name, _, attribute = spec.handler.rpartition(".")
        handler = getattr(importlib.import_module(f"functions.{spec.name}.{module_name}"), attribute)
        with self._busy_lock:
            self._busy += 1
            self.invocations[function] = self.invocations.get(function, 0) + 1
        try:
            return handler(dict(event), LocalContext(f"{self.stack_name}-{spec.name}", spec.timeout, spec.memory))
        finally:
            with self._busy_lock:
                self._busy -= 1

    def wait_until_idle(self, timeout: float = 300.0, settle: float = 0.5) -> bool:
        """Wait until every consumed queue is empty and no function is running; False on timeout."""
        assert self.resources is not None
        import boto3

        sqs = boto3.session.Session(region_name=os.environ["AWS_DEFAULT_REGION"]).client("sqs")
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            waiting = sum(self._depth(sqs, source.queue_url) for source in self.resources.queue_sources)
            with self._busy_lock:
                busy = self._busy
            if waiting == 0 and busy == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return True
            else:
                quiet_since = None
            time.sleep(0.2)
        return False

    def _depth(self, sqs: Any, queue_url: str) -> int:
        """A consumed queue's messages, visible, in flight or delayed. With moto in this process, counted in its
        backend: its GetQueueAttributes computes every attribute and walks every message several times with a clock
        read each (under a backlog of 500 posts, a third of the 500-person test's CPU went to this idle poll)."""
        queue = self._backend_queue(queue_url)
        if queue is not None:
            return len(queue._messages)  # every message until deleted: zero exactly when the three counts are
        return self.queue_depth(sqs, queue_url)

    def _backend_queue(self, queue_url: str) -> Any:
        """The queue in moto's backend when moto runs in this process (else None: the API is the only way in)."""
        if self._moto is None:
            return None
        from moto.sqs.models import sqs_backends

        account, name = queue_url.rstrip("/").rsplit("/", 2)[-2:]
        return sqs_backends[account][os.environ["AWS_DEFAULT_REGION"]].queues.get(name)

    def _receivable(self, queue_url: str, *, pause: bool) -> bool:
        """Whether ReceiveMessage is worth asking: a message visible and not delayed, waited for up to 0.2 s (after
        a ``pause`` of 0.2 s first, when the last receive came back empty although one looked receivable: its FIFO
        group in flight, or bound for the DLQ). With moto in this process, looked at in its backend (one clock read
        for the queue) and woken at once by a new message; an empty ReceiveMessage costs a request on each side and
        walks every message with two clock reads each (under a backlog of 500 posts, the pollers' receives were an
        eighth of the 500-person test's CPU). Against another endpoint, always: its receive decides."""
        if pause:
            self._stopping.wait(0.2)
        queue = self._backend_queue(queue_url)
        if queue is None:
            return True
        from moto.core.utils import unix_time_millis

        with queue._messages_lock:  # add_message notifies it
            for attempt in range(2):
                now = unix_time_millis()  # moto's clock, as Message.visible and Message.delayed read it
                if any(_receivable_at(message, now) for message in queue._messages):
                    return True
                if attempt == 0 and not self._stopping.is_set():
                    queue._messages_lock.wait(0.2)
        return False

    @staticmethod
    def queue_depth(sqs: Any, queue_url: str) -> int:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
        return sum(int(attributes.get(name, 0)) for name in names)

    # -- internals ------------------------------------------------------------------------------------------------

    def _start_aws(self) -> None:
        defaults = {
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", LOCAL_REGION),
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        }
        if not self.aws_endpoint_url:
            import logging

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
            _count_sqs_messages_at_one_instant()
            self._moto = _guarded_moto_server(ip_address="127.0.0.1", port=0, verbose=False)
            self._moto.start()
            host, port = self._moto.get_host_and_port()
            self.aws_endpoint_url = f"http://{host}:{port}"
            # moto keeps its state per process, not per server: start from nothing, like a new account.
            import requests

            requests.post(f"{self.aws_endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
            defaults = {**defaults, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
        self._set_environment(
            {**defaults, "AWS_REGION": defaults["AWS_DEFAULT_REGION"], "AWS_ENDPOINT_URL": self.aws_endpoint_url}
        )

    def _start_bitrix(self, session: Any) -> None:
        """Start the sandbox unless a real portal is configured; put its webhook in the stack's secret."""
        assert self.resources is not None
        secret = {}
        if not self.bitrix_webhook_url:
            from local.bitrix24_sandbox import Sandbox

            options = {"app_token": LOCAL_APP_TOKEN, **self.sandbox_options}
            self.sandbox = Sandbox(**options).start()
            secret = {"BITRIX24_WEBHOOK_URL": self.sandbox.webhook_url, "BITRIX24_APP_TOKENS": self.sandbox.app_token}
            # POST /v1/app/report checks tokens at https://BITRIX24_DOMAIN; the sandbox answers at its own address.
            parts = urlsplit(self.sandbox.webhook_url)
            self.extra_environment["BITRIX24_PORTAL_URL"] = f"{parts.scheme}://{parts.netloc}/"
            events_route = next((r for r in self.resources.routes if r.path == "/v1/bitrix/events"), None)
            if events_route:
                self.sandbox.outbound_url = self.url + events_route.path
        client = session.client("secretsmanager")
        for key, value in secret.items():
            # Functions read the webhook and the tokens from their secrets, as in production (an environment
            # variable would win); each into the secret the template keeps it in, merged into what is there.
            arn = self.resources.physical.get(SECRET_HOMES[key])
            if arn is None:
                continue
            current = json.loads(client.get_secret_value(SecretId=arn).get("SecretString") or "{}")
            client.put_secret_value(SecretId=arn, SecretString=json.dumps({**current, key: value}))

    def _start_captcha(self, session: Any) -> dict[str, str]:
        """Start the captcha sandbox asked for; its server key goes into the stack's secret, as an operator puts the
        real one there. Returns the environment that points the capture at the sandbox."""
        if not self.captcha:
            return {}
        from local.captcha_sandboxes import start_captcha

        self.captcha_sandbox, environment, secret = start_captcha(self.captcha)
        assert self.resources is not None
        # The captcha keys live beside PERSON_KEY_SECRET (the capture function's only secret); SECRETS_ARN locally
        # lists every secret, comma-separated, which is no SecretId.
        secrets_arn = self.resources.physical["Secrets"]
        client = session.client("secretsmanager")
        current = json.loads(client.get_secret_value(SecretId=secrets_arn).get("SecretString") or "{}")
        client.put_secret_value(SecretId=secrets_arn, SecretString=json.dumps({**current, **secret}))
        return environment

    def _prepare_sandbox(self) -> None:
        """What an operator does once per portal (`make bitrix-setup`): create the journey and client id fields."""
        from throughline.bitrix24.portal import bitrix_client
        from throughline.config import get_settings
        from throughline.setup import ensure_client_id_fields, ensure_journey_fields

        settings = get_settings()
        ensure_journey_fields(bitrix_client(settings), settings.bitrix24_journey_field)
        ensure_client_id_fields(bitrix_client(settings))
        self.sandbox.reset_stats()

    def _set_environment(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._saved_environ.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll(self, source: QueueSource) -> None:
        """One concurrent slot of an SQS event source: receive a batch, invoke, delete what succeeded."""
        import boto3

        sqs = boto3.session.Session(region_name=os.environ["AWS_DEFAULT_REGION"]).client("sqs")
        receive_lock = self._receive_locks.setdefault(source.queue_url, threading.Lock())
        came_back_empty = False
        while not self._stopping.is_set():
            if not self._receivable(source.queue_url, pause=came_back_empty):
                came_back_empty = False
                continue
            try:
                # SQS never hands one FIFO group to two consumers at once; moto's server can when two receives race,
                # so the local pollers of a queue take turns receiving.
                with receive_lock:
                    messages = sqs.receive_message(
                        QueueUrl=source.queue_url,
                        MaxNumberOfMessages=source.batch_size,
                        WaitTimeSeconds=0,
                        VisibilityTimeout=self.queue_visibility_seconds,
                        MessageSystemAttributeNames=["All"],
                        MessageAttributeNames=["All"],
                    ).get("Messages", [])
            except Exception as error:  # the stack is stopping, or moto hiccuped: try again
                if not self._stopping.is_set():
                    self.log(f"poll failed: {error}")
                    time.sleep(0.5)
                continue
            came_back_empty = not messages
            if came_back_empty:
                continue
            event = {"Records": [sqs_record(message, source) for message in messages]}
            try:
                result = self.invoke(source.function, event) or {}
            except Exception as error:
                self.log(f"{source.function} failed: {error!r}; the batch returns after its visibility timeout")
                continue
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ]
                sqs.delete_message_batch(QueueUrl=source.queue_url, Entries=entries)
            self.log(f"{source.function}: {len(messages)} messages, {len(failed)} to retry")

    def is_own_request(self, headers: Mapping[str, str]) -> bool:
        """Not a browser's request from another site (see ``is_browser_request_from_elsewhere``)."""
        return not is_browser_request_from_elsewhere(headers, self._own_origins())

    def _own_origins(self) -> set[str]:
        origins = {self.url}
        if self.host in ("127.0.0.1", "localhost", "::1"):
            origins |= {f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}", f"http://[::1]:{self.port}"}
        return origins

    def route(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        assert self.resources is not None
        for candidate in self.resources.routes:
            parameters = candidate.match(method, path)
            if parameters is not None:
                return candidate, parameters
        return None


def is_browser_request_from_elsewhere(headers: Mapping[str, str], own_origins: Collection[str] = ()) -> bool:
    """A request a web page made, not the developer: refused by everything the local stack serves beside the API.

    That is an ``Origin`` other than ``own_origins``, a ``Sec-Fetch-Site`` other than same-origin or none (typed in,
    a bookmark), or a ``Host`` that is a DNS name other than localhost: a DNS-rebinding page (``evil.example`` made
    to resolve to 127.0.0.1) is same-origin to the browser, and its GETs carry no ``Origin``. curl, scripts, tests and
    the AWS SDK send no ``Origin`` and reach us by IP or localhost, so they pass.
    """
    origin = headers.get("Origin")
    if origin is not None and origin.rstrip("/") not in own_origins:
        return True
    if headers.get("Sec-Fetch-Site", "none") not in ("same-origin", "none"):
        return True
    host = headers.get("Host")
    return host is not None and not _is_loopback_or_ip(host)


def _is_loopback_or_ip(host: str) -> bool:
    try:
        name = urlsplit(f"//{host.strip()}").hostname or ""
    except ValueError:
        return False
    if name == "localhost" or name.endswith(".localhost"):  # .localhost: boto3's virtual-hosted S3 buckets
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _GuardedMoto:
    """WSGI middleware in front of the moto server. moto answers CORS for any origin and needs no signature, so
    without this any web page the developer opens could read the stack's secret (PERSON_KEY_SECRET, the webhook) and
    the raw submissions in S3, or send messages into the writes queue: no browser has business with our AWS."""

    # DynamoDB applies each write to an item atomically (a conditional update's check and write are one step); the
    # moto server runs requests in threads and does not: two concurrent conditional updates can both pass their
    # condition (the flood limits let 37 posts through against 35), and a Query iterating a table's items while
    # another thread writes one fails with "dictionary changed size during iteration" (a 500 AWS never gives).
    # DynamoDB requests run one at a time here, as consistent as AWS's per-item atomicity.
    _DYNAMODB = "DynamoDB_20120810."
    _dynamodb_writes = threading.Lock()

    def __init__(self, app: Callable[..., Any]):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(self._DYNAMODB):
            with self._dynamodb_writes:
                return list(self._call(environ, start_response))  # the whole answer, inside the lock
        return self._call(environ, start_response)

    def _call(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        headers = {
            key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        if is_browser_request_from_elsewhere(headers):
            start_response("403 Forbidden", [("Content-Type", "application/json")])
            return [b'{"error": "browsers may not call the local AWS endpoint"}']
        content_type = environ.get("CONTENT_TYPE", "").lower()
        if environ.get("REQUEST_METHOD") == "PUT" and content_type.startswith(_FORM_TYPES):
            # moto reads an object's body as a form when its content type says form (real S3 keeps the bytes): the
            # raw copy of a urlencoded post would be stored empty. Stored as bytes, the content type left out.
            environ["CONTENT_TYPE"] = "application/octet-stream"
        return self.app(environ, start_response)


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _guarded_moto_server(**options: Any) -> Any:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class Dispatcher(DomainDispatcherApplication):
        """moto's dispatcher, remembering which backend serves a host: moto looks it up for every request (under a
        lock every request takes) by listing its package's folders, a stat each, then matching the services' URL
        patterns, 0.3 to 0.7 ms of CPU a request. The answer depends on the host only."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._backend_of_host: dict[str | None, Any] = {}

        def get_backend_for_host(self, host: str | None) -> Any:
            if host not in self._backend_of_host:
                self._backend_of_host[host] = super().get_backend_for_host(host)
            return self._backend_of_host[host]

    class GuardedMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:  # moto's own, with the guard around its application
            app = _GuardedMoto(Dispatcher(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever(poll_interval=0.05)  # stop() returns within 50 ms, not moto's 0.5 s

    return GuardedMotoServer(**options)


def _visible_at(message: Any, now: float) -> bool:
    """moto's ``Message.visible`` at ``now`` (its clock, ``unix_time_millis``)."""
    return now > message.visible_at


def _delayed_at(message: Any, now: float) -> bool:
    """moto's ``Message.delayed`` at ``now``."""
    return now < message.delayed_until


def _receivable_at(message: Any, now: float) -> bool:
    """What moto's ReceiveMessage would hand out at ``now``: visible and not delayed."""
    return _visible_at(message, now) and not _delayed_at(message, now)


def _count_sqs_messages_at_one_instant() -> None:
    """moto's SQS queue counts its visible, in-flight and delayed messages by asking each message whether it is
    visible or delayed, and each answer reads the clock (a datetime built and subtracted from the epoch). Its queue
    attributes hold all three counts, and a FIFO SendMessage builds them four times (to read
    ContentBasedDeduplication), a ReceiveMessage walks the visible ones: under a backlog of 500 messages, sending
    them cost 7 s of CPU and receiving them 4 s. Here each count reads the clock once and compares every message
    with that instant (the same comparisons as Message.visible and Message.delayed): 2.3 s and 0.7 s."""
    from moto.sqs import models

    queue = models.Queue
    if getattr(queue, "_local_one_instant", False):
        return

    def receivable(self: Any) -> list[Any]:
        now = models.unix_time_millis()
        return [m for m in self._messages if _receivable_at(m, now)]

    def not_visible(self: Any) -> int:
        now = models.unix_time_millis()
        return sum(1 for m in self._messages if not _visible_at(m, now))

    def delayed_count(self: Any) -> int:
        now = models.unix_time_millis()
        return sum(1 for m in self._messages if _delayed_at(m, now))

    queue.messages = property(receivable)
    queue.approximate_number_of_messages_not_visible = property(not_visible)
    queue.approximate_number_of_messages_delayed = property(delayed_count)
    queue._local_one_instant = True


_metrics_lock = threading.RLock()


def _guard_metrics() -> None:
    """Powertools keeps one metric set per process, and a Lambda process runs one invocation at a time. Here every
    function shares this process and invocations run in threads: without a lock, two flushes could print the same
    metrics twice, or a metric added during another's flush be cleared unprinted. Each addition and each flush
    (serialize, print, clear) runs alone, so the EMF lines printed add up to what the functions counted."""
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    if getattr(AmazonCloudWatchEMFProvider, "_local_guarded", False):
        return
    for name in ("add_metric", "flush_metrics"):
        method = getattr(AmazonCloudWatchEMFProvider, name)

        def guarded(self: Any, *args: Any, _method: Callable[..., Any] = method, **kwargs: Any) -> Any:
            with _metrics_lock:
                return _method(self, *args, **kwargs)

        setattr(AmazonCloudWatchEMFProvider, name, guarded)
    AmazonCloudWatchEMFProvider._local_guarded = True


def sqs_record(message: Mapping[str, Any], source: QueueSource) -> dict[str, Any]:
    attributes = dict(message.get("Attributes", {}))
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": source.queue_arn,
        "awsRegion": os.environ.get("AWS_DEFAULT_REGION", LOCAL_REGION),
    }


def _reset_process_caches() -> None:
    """Settings and AWS clients are cached per process; the stack has just changed what they point at."""
    from throughline import config
    from throughline.adapters import aws
    from throughline.alerts import realtime
    from throughline.bitrix24 import portal
    from throughline.writer import queued

    config.reset_settings_cache()
    aws.reset_clients()
    realtime.reset_cache()  # the writer's rules, cached per bucket name: a new stack's bucket has the same name
    portal.reset_portal_state()
    queued.reset_portal_states()


def http_event(
    method: str, path: str, query: str, headers: Mapping[str, str], body: bytes, route: HttpRoute, parameters: dict
) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2 event, as the service builds it."""
    lower = {key.lower(): value for key, value in headers.items()}
    content_type = lower.get("content-type", "")
    is_text = any(content_type.startswith(kind) for kind in _TEXT_TYPES)
    try:
        text_body = body.decode("utf-8") if is_text else None
    except UnicodeDecodeError:
        text_body = None
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{route.method} {route.path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lower,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": lower.get("host", "127.0.0.1"),
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": lower.get("x-forwarded-for", "127.0.0.1"),
                "userAgent": lower.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{route.method} {route.path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "pathParameters": parameters,
        "isBase64Encoded": text_body is None and bool(body),
        "body": text_body if text_body is not None else (base64.b64encode(body).decode() if body else None),
    }
    if query:
        event["queryStringParameters"] = dict(parse_qsl(query, keep_blank_values=True))
    return event


def _make_handler(stack: LocalStack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_OPTIONS(self) -> None:
            self._dispatch()

        def do_PUT(self) -> None:
            self._dispatch()

        def do_DELETE(self) -> None:
            self._dispatch()

        def do_PATCH(self) -> None:  # no route has it: API Gateway's 404, not http.server's HTML 501
            self._dispatch()

        def _dispatch(self) -> None:
            started = time.perf_counter()
            url = urlsplit(self.path)
            length = (self.headers.get("Content-Length") or "0").strip()
            if not (length.isascii() and length.isdigit()) or int(length) > API_PAYLOAD_LIMIT:
                # What API Gateway answers; reading "-1" bytes waited for the client to hang up, holding a thread.
                self.close_connection = True
                too_large = length.isascii() and length.isdigit()
                message = b'{"message":"Request Entity Too Large"}' if too_large else b'{"message":"Bad Request"}'
                self._send(413 if too_large else 400, _JSON, message)
                return
            body = self.rfile.read(int(length))
            try:
                if url.path.startswith("/_local/invoke/") and self.command == "POST":
                    if not stack.is_own_request(self.headers):
                        # A page the developer happens to open must not run functions (and, with a real
                        # BITRIX24_WEBHOOK_URL, write leads): a cross-site text/plain post needs no preflight.
                        self._send(403, _JSON, b'{"error": "cross-site requests may not invoke functions"}')
                        return
                    self._invoke(url.path.removeprefix("/_local/invoke/").strip("/"), body)
                    return
                if url.path == "/_local/health":
                    self._send(200, {"Content-Type": "application/json"}, b'{"ok": true}')
                    return
                if url.path == OPENAPI_PATH and self.command == "GET":
                    self._send(200, {"Content-Type": "application/yaml; charset=utf-8"}, OPENAPI_DOCUMENT.read_bytes())
                    return
                found = stack.route(self.command, url.path)
                if found is None:
                    self._send(404, {"Content-Type": "application/json"}, b'{"message":"Not Found"}')
                    return
                route, parameters = found
                event = http_event(self.command, url.path, url.query, dict(self.headers), body, route, parameters)
                response = stack.invoke(route.function, event)
                self._send_lambda_response(response)
            except Exception as error:
                stack.log(f"{self.command} {url.path} failed: {error!r}")
                # What API Gateway answers when the integration fails.
                self._send(500, {"Content-Type": "application/json"}, b'{"message":"Internal Server Error"}')
            finally:
                stack.log(f"{self.command} {url.path} {(time.perf_counter() - started) * 1000:.0f} ms")

        def _invoke(self, function: str, body: bytes) -> None:
            """Lambda's Invoke API: a body that is no JSON is a 400, an unknown function a 404, and a function that
            raised a 200 with ``X-Amz-Function-Error`` (never a 5xx: the stack did its part)."""
            try:
                event = json.loads(body.decode("utf-8") or "{}")
            except (UnicodeDecodeError, ValueError) as error:
                self._send(400, _JSON, json.dumps({"error": f"the event is not JSON: {error}"}).encode())
                return
            if not isinstance(event, dict):
                self._send(400, _JSON, b'{"error": "the event must be a JSON object"}')
                return
            if function not in (stack.resources.functions if stack.resources else {}):
                known = sorted(stack.resources.functions) if stack.resources else []
                self._send(404, _JSON, json.dumps({"error": f"no function {function!r}; known: {known}"}).encode())
                return
            try:
                result = stack.invoke(function, event)
            except Exception as error:
                stack.log(f"{function} raised {error!r}")
                answer = {"errorType": type(error).__name__, "errorMessage": str(error)}
                self._send(200, {**_JSON, "X-Amz-Function-Error": "Unhandled"}, json.dumps(answer).encode())
                return
            self._send(200, _JSON, json.dumps(result, default=str).encode())

        def _send_lambda_response(self, response: Any) -> None:
            if not isinstance(response, dict) or "statusCode" not in response:
                # Payload v2 rule: anything else is a 200 with the value as JSON.
                self._send(200, {"Content-Type": "application/json"}, json.dumps(response).encode())
                return
            body = response.get("body") or ""
            data = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode("utf-8")
            self._send(int(response["statusCode"]), response.get("headers") or {}, data)

        def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
