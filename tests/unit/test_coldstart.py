"""The HTTP functions' cold start runs without the cyclic garbage collector, in Lambda only, and gets it back after
the first invocation (throughline.coldstart)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from throughline import coldstart

ROOT = Path(__file__).resolve().parents[2]
LAMBDA = "AWS_Lambda_python3.13"
# Counts the collector's passes while the handler module is imported, then reports them and the collector's state.
PROBE = """
import gc, json
passes = []
gc.callbacks.append(lambda phase, info: passes.append(info["generation"]) if phase == "start" else None)
import app
print(json.dumps({"passes": len(passes), "enabled": gc.isenabled()}))
"""


@pytest.fixture
def collector():
    """Leave the process's collector as it was: on, nothing frozen, the module not paused."""
    yield
    coldstart._paused = False
    gc.unfreeze()
    gc.enable()


def test_lambda_is_told_by_its_execution_environment():
    assert coldstart.in_lambda({"AWS_EXECUTION_ENV": LAMBDA})
    assert not coldstart.in_lambda({})
    assert not coldstart.in_lambda({"AWS_EXECUTION_ENV": "AWS_ECS_FARGATE"})


def test_outside_lambda_nothing_changes(monkeypatch, collector):
    monkeypatch.delenv("AWS_EXECUTION_ENV", raising=False)
    coldstart.pause()
    assert gc.isenabled()
    coldstart.after_first_call(lambda event, context: None)({}, None)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_in_lambda_the_first_call_gets_the_collector_back_and_freezes_the_cold_start(monkeypatch, collector):
    monkeypatch.setenv("AWS_EXECUTION_ENV", LAMBDA)
    coldstart.pause()
    assert not gc.isenabled()
    seen = []
    handler = coldstart.after_first_call(lambda event, context: seen.append(gc.isenabled()) or {"statusCode": 202})
    assert handler({}, None) == {"statusCode": 202}
    assert seen == [False]  # the first call itself ran without it
    assert gc.isenabled() and gc.get_freeze_count() > 0
    frozen = gc.get_freeze_count()
    handler({}, None)  # a warm call changes nothing
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_a_first_call_that_fails_gets_the_collector_back_too(monkeypatch, collector):
    monkeypatch.setenv("AWS_EXECUTION_ENV", LAMBDA)
    coldstart.pause()

    def fail(event, context):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        coldstart.after_first_call(fail)({}, None)
    assert gc.isenabled()


def test_a_collector_switched_off_by_someone_else_stays_off(monkeypatch, collector):
    monkeypatch.setenv("AWS_EXECUTION_ENV", LAMBDA)
    gc.disable()
    coldstart.pause()
    coldstart.after_first_call(lambda event, context: None)({}, None)
    assert not gc.isenabled() and gc.get_freeze_count() == 0


@pytest.mark.parametrize("function", ["capture_form", "bitrix_events"])
def test_the_http_functions_import_without_a_collector_pass_in_lambda_only(function, tmp_path):
    def imported(execution_env: str | None) -> dict:
        # Byte code as Lambda's layer has it (precompiled): compiling a source is a pass of its own. The first run
        # writes it under tmp_path, the second one is measured.
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("AWS_EXECUTION_ENV", "PYTHONDONTWRITEBYTECODE")
        }
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path)
        env |= {"PYTHONPATH": f"{ROOT / 'functions' / function}:{ROOT / 'layers/core'}", "AWS_REGION": "eu-west-1"}
        env |= {"POWERTOOLS_SERVICE_NAME": function} | ({"AWS_EXECUTION_ENV": execution_env} if execution_env else {})
        for _ in range(2):
            output = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
        return json.loads(output.stdout.strip().splitlines()[-1])

    assert imported(LAMBDA) == {"passes": 0, "enabled": False}  # off from before boto3 to the first call
    elsewhere = imported(None)
    assert elsewhere["enabled"] and elsewhere["passes"] > 0


def test_the_capture_path_imports_phonenumbers_only_for_a_phone():
    """An e-mail-only form's cold start does not pay phonenumbers' import (~15 ms: every module, every region)."""
    probe = (
        "import sys; from throughline.capture import forms, receive; from throughline import contacts; "
        "assert 'phonenumbers' not in sys.modules; contacts.normalize_email('Ivan@Example.ru'); "
        "assert 'phonenumbers' not in sys.modules; print(contacts.normalize_phone('8 916 123-45-67'))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers/core")}
    output = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "+79161234567"
