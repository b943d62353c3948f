"""Command line: ``python -m local.bitrix24_sandbox --port 8090``.

The first line on stdout is the inbound webhook URL (flushed at once, so a parent process can read it); with
``--tls`` a second line ``REQUESTS_CA_BUNDLE=<path>`` names the certificate to trust. Everything else goes to stderr.
Ctrl-C or SIGTERM stops the server cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .server import Sandbox


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sandbox = Sandbox(
        port=args.port,
        host=args.host,
        app_token=args.app_token,
        outbound_url=args.outbound_url,
        events=args.events.split(",") if args.events else None,
        rate=args.rate,
        burst=args.burst,
        user_id=args.user_id,
        secret=args.secret,
        seed=args.seed,
        portal_domain=args.portal_domain,
        member_id=args.member_id,
        timezone=args.timezone,
        operating_limit_seconds=args.operating_limit_seconds,
        operating_cost_seconds=args.operating_cost_seconds,
        method_seconds=args.method_seconds,
        time_scale=args.time_scale,
        request_time_limit=args.request_time_limit,
        crm_mode=args.crm_mode,
        error_rate=args.error_rate,
        lost_response_rate=args.lost_response_rate,
        latency_ms=args.latency_ms,
        log_requests=args.log_requests,
        tls=args.tls,
    )
    stopped = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    # Installed explicitly for SIGINT too: a process started in the background inherits an ignored SIGINT.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    sandbox.start()
    print(sandbox.webhook_url, flush=True)
    if sandbox.ca_file:
        # Second line, in a form a shell can export: requests-based clients then trust the self-signed certificate.
        print(f"REQUESTS_CA_BUNDLE={sandbox.ca_file}", flush=True)
    print(
        f"Bitrix24 sandbox on {sandbox.base_url} (portal {sandbox.portal_domain}, {sandbox.crm_mode} CRM, "
        f"application token "
        f"{sandbox.app_token}, outbound {sandbox.outbound_url or 'off'}); admin at {sandbox.base_url}/_sandbox/",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local.bitrix24_sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default 0)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--outbound-url", help="handler URL for outbound webhooks (ONCRM* events); off if omitted")
    parser.add_argument("--events", help="comma-separated event names to send, e.g. ONCRMLEADADD (default: all)")
    parser.add_argument("--app-token", help="application_token sent with outbound events (default: random)")
    parser.add_argument("--user-id", type=int, default=1, help="webhook user id in the URL (default 1)")
    parser.add_argument("--secret", help="webhook secret in the URL (default: random 16 characters)")
    parser.add_argument("--portal-domain", default="sandbox.bitrix24.ru", help="portal domain in outbound events")
    parser.add_argument("--member-id", help="member_id in outbound events (default: derived from the domain)")
    parser.add_argument("--timezone", default="Europe/Moscow", help="portal time zone (default Europe/Moscow)")
    parser.add_argument("--rate", type=float, default=2.0, help="leaky bucket drain per second (default 2)")
    parser.add_argument("--burst", type=float, default=50, help="leaky bucket threshold (default 50)")
    parser.add_argument("--operating-limit-seconds", type=float, default=480.0, help="per-method limit per 10 min")
    parser.add_argument(
        "--operating-cost-seconds", type=float, default=0.01, help="simulated seconds of one call of a method not set"
    )
    parser.add_argument(
        "--method-seconds",
        type=_method_seconds,
        default={},
        help="simulated seconds per call of some methods, e.g. crm.lead.add=2,crm.lead.list=0.3",
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="share of the simulated seconds really slept, 0..1 (default 1)"
    )
    parser.add_argument(
        "--request-time-limit", type=float, default=60.0, help="simulated seconds after which a request is cut off"
    )
    parser.add_argument(
        "--crm-mode", choices=("classic", "simple"), default="classic", help="simple: leads are converted at once"
    )
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests failing with 500 unexecuted")
    parser.add_argument("--lost-response-rate", type=float, default=0.0, help="share executed but answered 500")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added before every REST response")
    parser.add_argument("--seed", type=int, help="seed for fault rolls and generated secrets")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a self-signed certificate for 127.0.0.1/localhost; prints REQUESTS_CA_BUNDLE=<path>",
    )
    parser.add_argument("--log-requests", action="store_true", help="log every HTTP request to stderr")
    return parser


def _method_seconds(text: str) -> dict[str, float]:
    costs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        method, _, seconds = item.partition("=")
        try:
            costs[method.strip()] = float(seconds)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected method=seconds, got {item!r}") from None
    return costs


if __name__ == "__main__":
    sys.exit(main())
