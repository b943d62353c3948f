"""The rules file in the data bucket: read and validated for every run; the documented default written when absent."""

from __future__ import annotations

from typing import Any

from throughline.alerts.rules import CONFIG_KEY, DEFAULT_YAML, AlertsConfig, parse_rules


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
    return True
