"""`make serve`: keep the local stack up — the HTTP routes of template.yaml, `POST /_local/invoke/<function>`, the
queue consumed as Lambda would, and the Bitrix24 sandbox (unless BITRIX24_WEBHOOK_URL points at a real portal).

Beside it, on another port (another origin, as a customer's site is), the demo shop from web/ with the capture
snippet; that origin, and any in ALLOWED_ORIGINS, may post forms from the browser."""

from __future__ import annotations

import argparse
import functools
import os
import signal
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from local.stack import OPENAPI_PATH, LocalStack

WEB = Path(__file__).resolve().parent.parent / "web"


class _SiteFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # edits to the snippet show on the next reload
        super().end_headers()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--site-port", type=int, default=int(os.environ.get("SITE_PORT", "8000")), help="0: no demo site"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print each request and queue batch")
    parser.add_argument(
        "--captcha",
        choices=("smartcaptcha", "turnstile"),
        default=os.environ.get("CAPTCHA") or None,
        help="verify form posts against this captcha provider's local sandbox (tokens: its /_sandbox/token)",
    )
    args = parser.parse_args(argv)

    site = None
    origins = [origin for origin in os.environ.get("ALLOWED_ORIGINS", "").split(",") if origin.strip()]
    if args.site_port:
        site = ThreadingHTTPServer((args.host, args.site_port), functools.partial(_SiteFiles, directory=str(WEB)))
        origins.append(f"http://{args.host}:{site.server_address[1]}")
        threading.Thread(target=site.serve_forever, daemon=True).start()
    ad_servers, ad_environment = [], {}
    if not any(
        os.environ.get(name) for name in ("YANDEX_DIRECT_TOKEN", "GOOGLE_ADS_REFRESH_TOKEN", "VK_ADS_CLIENT_ID")
    ):
        from local.ad_sandboxes import start_all

        ad_servers, ad_environment = start_all()  # the spend import reads the ad sandboxes unless real APIs are set
    stack = LocalStack(
        port=args.port,
        host=args.host,
        parameters={"AllowedOrigins": ",".join(origins)} if origins else None,
        environment=ad_environment,
        log=None if args.quiet else print,
        captcha=args.captcha,
    )
    stack.start()
    assert stack.resources is not None
    print(f"\nThroughline local stack at {stack.url}")
    for route in stack.resources.routes:
        print(f"  {route.method:<7} {stack.url}{route.path}  → functions/{route.function}")
    for name in stack.resources.functions:
        print(f"  POST    {stack.url}/_local/invoke/{name}  (any JSON event)")
    print(f"  GET     {stack.url}{OPENAPI_PATH}  (these routes, OpenAPI 3.1)")
    if stack.sandbox:
        print(f"  Bitrix24 sandbox webhook: {stack.sandbox.webhook_url}")
        print(f"  sandbox state: {stack.sandbox.base_url}/_sandbox/state?entity=lead   stats: /_sandbox/stats")
    print(f"  AWS (moto): {stack.aws_endpoint_url}   data bucket: {stack.resources.physical.get('DataBucket')}")
    for server in ad_servers:
        print(f"  {server.name}: {server.url}")
    if stack.captcha_sandbox:
        print(f"  {stack.captcha_sandbox.name}: {stack.captcha_sandbox.url} (a token: POST /_sandbox/token)")
    if site:
        demo = f"http://{args.host}:{site.server_address[1]}/demo/?endpoint={stack.url}/v1/forms"
        print(f"  demo shop with the capture snippet: {demo}")
        print(f"    arriving from an ad: {demo}&utm_source=yandex&utm_medium=cpc&utm_campaign=zima&yclid=123")
    print("Ctrl-C to stop.\n")

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        for server in ad_servers:
            server.stop()
        if site:
            site.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
