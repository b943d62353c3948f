"""A local emulator of the Bitrix24 REST API (inbound webhook) and its outbound webhooks, for demos and tests.

Typical use::

    from local.bitrix24_sandbox import Sandbox

    with Sandbox(app_token="tok", outbound_url="http://127.0.0.1:8000/b24/events") as sandbox:
        client = MyBitrixClient(sandbox.webhook_url)
        ...

See README.md next to this file for what is emulated and where the sandbox knowingly differs from a real portal.
"""

from .server import Sandbox

__all__ = ["Sandbox"]
