"""`make serve`: keep the local stack up — the HTTP routes of template.yaml, `POST /_local/invoke/<function>`, the
queue consumed as Lambda would, and the Bitrix24 sandbox (unless BITRIX24_WEBHOOK_URL points at a real portal)."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from local.stack import LocalStack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--quiet", action="store_true", help="do not print each request and queue batch")
    args = parser.parse_args(argv)

    stack = LocalStack(port=args.port, host=args.host, log=None if args.quiet else print)
    stack.start()
    assert stack.resources is not None
    print(f"\nThroughline local stack at {stack.url}")
    for route in stack.resources.routes:
        print(f"  {route.method:<7} {stack.url}{route.path}  → functions/{route.function}")
    for name in stack.resources.functions:
        print(f"  POST    {stack.url}/_local/invoke/{name}  (any JSON event)")
    if stack.sandbox:
        print(f"  Bitrix24 sandbox webhook: {stack.sandbox.webhook_url}")
        print(f"  sandbox state: {stack.sandbox.base_url}/_sandbox/state?entity=lead   stats: /_sandbox/stats")
    print(f"  AWS (moto): {stack.aws_endpoint_url}   data bucket: {stack.resources.physical.get('DataBucket')}")
    print("Ctrl-C to stop.\n")

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
