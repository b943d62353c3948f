"""The rules file in the data bucket: read and validated for every run; the documented default written when absent."""

from __future__ import annotations

from typing import Any

from throughline.alerts.realtime import REALTIME_KEY
from throughline.alerts.rules import CONFIG_KEY, DEFAULT_YAML, AlertsConfig, parse_rules, realtime_json


def load_rules(objects: Any) -> AlertsConfig:
    """``config/alerts.yaml`` validated (``AlertsConfigError`` naming every bad key fails the run), or the default
    when the file is absent."""
    body = objects.get(CONFIG_KEY)
    if body is None:
        return parse_rules(DEFAULT_YAML, name="the default alerts.yaml")
    return parse_rules(body, name=f"s3://{getattr(objects, 'bucket', '')}/{CONFIG_KEY}")


def ensure_default_rules(objects: Any) -> bool:
    """Write the documented default unless a rules file is there already; True when written."""
    if objects.get(CONFIG_KEY) is not None:
        return False
    objects.put(CONFIG_KEY, DEFAULT_YAML.encode("utf-8"), "application/yaml")
    publish_realtime(objects, parse_rules(DEFAULT_YAML))
    return True


def publish_realtime(objects: Any, config: AlertsConfig) -> bool:
    """Write ``config/alerts.realtime.json`` for the writer when it differs from what is there; True when written."""
    body = realtime_json(config)
    if objects.get(REALTIME_KEY) == body:
        return False
    objects.put(REALTIME_KEY, body, "application/json")
    return True
