"""A Lambda cold start without the cyclic garbage collector (issue 15 #9: the HTTP functions' first invocation).

A cold start imports boto3, botocore and Powertools, then its first call parses botocore's endpoints.json and the
service models of its clients: some 75 000 objects, every one of them kept for the life of the process. The
collector runs a pass every 2 000 new objects and walks the young ones each time, and none of them is garbage:
about 20 ms of CPU in the import and as much again in the first call, by ``gc.callbacks``. Reference counting frees
everything as usual without it; only reference cycles wait for the collector, and a whole cold start of capture_form
leaves 448 unreachable objects (``gc.collect()`` after it).

So an HTTP function imports this module first of all: in Lambda (``AWS_EXECUTION_ENV`` is ``AWS_Lambda_…``) the
collector is off from there to the end of the first invocation (``after_first_call``), which then freezes what the
cold start made (``gc.freeze()``: no later pass walks it, so warm invocations do not either) and switches it back
on. Anywhere else (tests, the local stack, the CLI) nothing changes: a process that imports a handler and never
calls it must not run without its collector.
"""

from __future__ import annotations

# Only what the interpreter has loaded before any user code: nothing here may allocate enough to start a pass.
import functools
import gc
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

_paused = False


def in_lambda(environ: Mapping[str, str] = os.environ) -> bool:
    """Lambda sets ``AWS_EXECUTION_ENV`` to ``AWS_Lambda_<runtime>`` (e.g. ``AWS_Lambda_python3.13``)."""
    return environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_")


def pause() -> None:
    """Switch the collector off for the cold start (in Lambda only; idempotent)."""
    global _paused
    if in_lambda() and gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what the cold start made and switch the collector back on, if ``pause`` switched it off."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def after_first_call(handler: Callable[..., Any]) -> Callable[..., Any]:
    """The handler, resuming the collector once its first invocation has answered (or failed)."""

    @functools.wraps(handler)
    def invoke(event: Any, context: Any) -> Any:
        try:
            return handler(event, context)
        finally:
            resume()

    return invoke


pause()
