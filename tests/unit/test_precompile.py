"""`make build` precompiles the SAM build output: every source gets unchecked-hash byte code for the interpreter
that compiled it, and the check names whatever lacks it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from local.precompile import main, missing_bytecode


def layer(tmp_path: Path) -> Path:
    package = tmp_path / "python" / "throughline"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "config.py").write_text("VALUE = 1\n")
    return tmp_path


def test_the_check_fails_before_and_passes_after_compiling(tmp_path: Path, capsys) -> None:
    root = layer(tmp_path)
    assert main(["--check", str(root)]) == 1
    assert len(missing_bytecode(root)) == 2
    assert main([str(root)]) == 0
    assert missing_bytecode(root) == []
    assert "2 sources" in capsys.readouterr().out


def test_timestamp_byte_code_does_not_count(tmp_path: Path) -> None:
    root = layer(tmp_path)
    import py_compile

    for source in root.rglob("*.py"):
        py_compile.compile(str(source), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    assert len(missing_bytecode(root)) == 2  # they would be checked against the read-only sources' times


def test_the_compiled_module_imports_from_its_byte_code_without_the_source_being_read(tmp_path: Path) -> None:
    root = layer(tmp_path)
    assert main([str(root)]) == 0
    source = root / "python" / "throughline" / "config.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    source.write_text("VALUE = 2\n")  # unchecked: the interpreter trusts the byte code and never looks
    probe = "import throughline.config as c; print(c.VALUE)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=root / "python", capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "1" and cached.exists()
