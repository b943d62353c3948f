"""The operator commands come from one registry that the capabilities plug into, with no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from throughline.__main__ import COMMAND_MODULES, build_parser, main

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "core" / "throughline"
COMMANDS = {
    "bitrix-setup", "replay-dlq", "split-secrets", "attribute", "import-spend", "report", "athena-views",
    "athena-paths", "journey-index", "journey-sweep", "journey-export", "forget", "release-held", "alerts",
    "conversions", "segments",
}  # fmt: skip


def subcommands() -> dict:
    parser = build_parser()
    [action] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices


def test_every_command_is_registered_with_a_run_of_its_own():
    choices = subcommands()
    assert set(choices) == COMMANDS
    for name, parser in choices.items():
        assert callable(parser.get_default("run")), name


def test_no_capability_imports_the_entry_point():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [f"{path.relative_to(PACKAGE)}: {name}" for name in names if name == "throughline.__main__"]
    assert offenders == []
    assert all(name.startswith("throughline.") for name in COMMAND_MODULES)


def test_an_unknown_command_is_refused_and_a_failing_one_says_why_in_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
    assert main(["attribute", str(tmp_path / "missing.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_a_stacks_outputs_fill_only_the_settings_the_environment_lacks(monkeypatch):
    from throughline.adapters.stack import use_stack

    monkeypatch.delenv("JOURNEY_TABLE", raising=False)
    monkeypatch.setenv("DATA_BUCKET", "mine")
    outputs = {"SecretsArn": "arn:secret", "DataBucketName": "theirs", "JourneyTableName": "journeys"}
    monkeypatch.setenv("SECRETS_ARN", "arn:given")
    use_stack(outputs, "SecretsArn", "DataBucketName", "JourneyTableName")
    import os

    assert (os.environ["SECRETS_ARN"], os.environ["DATA_BUCKET"], os.environ["JOURNEY_TABLE"]) == (
        "arn:given",
        "mine",
        "journeys",
    )


def test_segments_refuses_printing_and_skipping_the_audiences_at_once(capsys):
    with pytest.raises(SystemExit):
        main(["segments", "--audiences", "--no-audiences"])
    assert "argument --no-audiences: not allowed with argument --audiences" in capsys.readouterr().err
