"""The alert rules file: the documented default is valid, every bad key is named in one message, the CLI checks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from throughline.__main__ import main
from throughline.alerts.rules import DEFAULT_YAML, AlertsConfigError, default_rules, format_number, parse_rules, render


def test_the_default_file_is_valid_and_big_deal_is_off_until_a_threshold_is_set():
    config = default_rules()
    assert config.rule("cpl_spike").threshold == Decimal(40)
    assert config.rule("cpl_spike").min_volume.spend == Decimal(1000)
    assert config.rule("conversion_drop").window.baseline_days == 28
    assert config.rule("big_deal") is None
    assert config.rules["big_deal"].threshold is None


def test_every_bad_key_is_named_in_one_message():
    text = (
        DEFAULT_YAML.replace("  cpl_spike:", "  cpl_spyke:")
        .replace("threshold: 30        # % relative drop", "threshold: many")
        .replace("{campaign}» ({source}) {day}: потрачено", "{campagn}» ({source}) {day}: потрачено")
        .replace("enabled: false\n    trigger: realtime", "enabled: true\n    trigger: realtime")
        .replace("channels: [bitrix, email]", "channels: [bitrix, pigeon]")
    )
    with pytest.raises(AlertsConfigError) as caught:
        parse_rules(text)
    message = str(caught.value)
    for expected in (
        "rules.cpl_spyke: unknown rule",
        "rules.conversion_drop.threshold",
        "rules.spend_without_leads.message: unknown placeholder(s) campagn",
        "rules.big_deal.threshold: required while the rule is enabled",
        "rules.data_quality.channels.1",
    ):
        assert expected in message, message


def test_wrong_trigger_unknown_field_and_bad_yaml_are_refused():
    hot = "trigger: realtime\n    metric: first_response_minutes"
    with pytest.raises(AlertsConfigError, match=r"rules.hot_lead.trigger: must be realtime"):
        parse_rules(DEFAULT_YAML.replace(hot, hot.replace("realtime", "schedule"), 1))
    with pytest.raises(AlertsConfigError, match=r"rules.lost_deals.colour: Extra inputs"):
        parse_rules(DEFAULT_YAML.replace("  lost_deals:", "  lost_deals:\n    colour: red"))
    with pytest.raises(AlertsConfigError, match=r"rules.hot_lead.message: write \{name\} only"):
        parse_rules(DEFAULT_YAML.replace('"Обработать в течение 5 минут: {title}"', '"{title:>999999999}"'))
    with pytest.raises(AlertsConfigError, match=r"rules.hot_lead.message: unknown placeholder\(s\) title.__class__"):
        parse_rules(DEFAULT_YAML.replace('"Обработать в течение 5 минут: {title}"', '"{title.__class__}"'))
    with pytest.raises(AlertsConfigError, match="not valid YAML"):
        parse_rules("rules: [unclosed")
    with pytest.raises(AlertsConfigError, match=r"rules.repeat_request.recipients: Value error, Bitrix24 user ids"):
        parse_rules(DEFAULT_YAML.replace("  repeat_request:", "  repeat_request:\n    recipients: [0]"))


def test_messages_render_in_russian_notation():
    rule = default_rules().rule("cpl_spike")
    values = {"campaign": "Весна", "source": "Яндекс", "day": "05.12.2026", "cpl": Decimal("1500")}
    values |= {"median": Decimal("1000.5"), "rise": Decimal("49.93"), "spend": Decimal("4500"), "leads": 3}
    text = render(rule, values)
    assert text.startswith("Стоимость лида выросла на 49,93 %: «Весна» (Яндекс) 05.12.2026: CPL 1\u00a0500 при")
    assert format_number(Decimal("12345.60")) == "12\u00a0345,6"


def test_the_cli_checks_a_file(tmp_path, capsys):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(DEFAULT_YAML, encoding="utf-8")
    bad.write_text(DEFAULT_YAML.replace("cooldown_hours: 168", "cooldown_hours: -1"), encoding="utf-8")
    assert main(["alerts", "--check", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["alerts", "--check", str(bad)]) == 1
    assert "rules.conversion_drop.cooldown_hours" in capsys.readouterr().err
