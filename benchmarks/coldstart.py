"""Cold start of the HTTP functions as Lambda runs them: a fresh interpreter imports the handler from a read-only
layer and calls it once (a form post, a Bitrix24 event) against the local stack's AWS; the figure is that first
invocation (import + first call) over ``import boto3`` in a fresh interpreter (the runtime's own, precompiled).

The layer is laid out as ``sam build`` ships it — ``<tmp>/layer/python/`` with throughline and the core layer's
libraries (the installed distributions named by its requirements.txt, with their dependencies), ``<tmp>/task/`` with
the function's ``app.py`` — and prepared as ``make build`` prepares it with ``local.precompile``: unchecked-hash byte
code (issue 15 #6) and botocore's endpoints.json trimmed to the services the code names. ``PYTHONDONTWRITEBYTECODE=1``
stands for Lambda's read-only mount: without the byte code every start compiles.

``--before COMMIT`` measures the sources and layer requirements of an older commit (e.g. the one before the two
layers and the precompile step: ``git log --oneline -- layers/ template.yaml``), shipped without byte code as they
were then. ``--since COMMIT`` measures an older commit's sources packaged as now (precompiled): the effect of a code
change alone. Libraries are the installed versions in every case (only their byte code differs).

    PYTHONPATH=layers/core:. .venv/bin/python -m benchmarks.coldstart                  # as shipped now
    PYTHONPATH=layers/core:. .venv/bin/python -m benchmarks.coldstart --before 520f269 # and as it was
    PYTHONPATH=layers/core:. .venv/bin/python -m benchmarks.coldstart --since 1bab511  # a code change, same packaging
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.6  # issue 15 #9: the first invocation within 1.6 × `import boto3`
FUNCTIONS = ("capture_form", "bitrix_events")
_PROBE = r"""
import json, os, sys, time
started, started_cpu = time.perf_counter(), time.process_time()
import app
imported, imported_cpu = time.perf_counter(), time.process_time()
event = json.loads(os.environ["BENCH_EVENT"])
class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]; function_version = "$LATEST"; memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-central-1:123456789012:function:" + function_name
    aws_request_id = "bench"; log_group_name = "/aws/lambda/bench"; log_stream_name = "bench"
    def get_remaining_time_in_millis(self): return 10_000
called, called_cpu = time.perf_counter(), time.process_time()
answer = app.lambda_handler(event, Context())
finished, finished_cpu = time.perf_counter(), time.process_time()
assert answer["statusCode"] in (200, 202), answer
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]  # ru_maxrss survives exec
cpu = imported_cpu - started_cpu + finished_cpu - called_cpu
rss = int(peak[0].split()[1])
print(json.dumps({"import": imported - started, "call": finished - called, "cpu": cpu, "rss_kib": rss}))
"""
_BASELINE = (
    "import time, json; t, c = time.perf_counter(), time.process_time(); import boto3; "
    "elapsed, cpu = time.perf_counter() - t, time.process_time() - c; "
    "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')]; "
    "print(json.dumps({'import': elapsed, 'call': 0.0, 'cpu': cpu, 'rss_kib': int(peak[0].split()[1])}))"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds: a smoke run")
    parser.add_argument("--rounds", type=int, help="fresh interpreters per variant (default 15)")
    parser.add_argument("--before", metavar="COMMIT", help="also measure this commit's layer, shipped without .pyc")
    parser.add_argument(
        "--since", metavar="COMMIT", help="also measure this commit's layer precompiled as now (a code change's effect)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    figures = measure(rounds, before=args.before, since=args.since)
    print(f"First invocation in a fresh interpreter (import + first call), {rounds} runs each, interleaved; median:")
    for name, figure in figures.items():
        note = f"   target ≤ {TARGET_RATIO}×: {'met' if figure['ratio'] <= TARGET_RATIO else 'MISSED'}"
        print(
            f"  {name:<34} import {figure['import_ms']:6.1f} ms + call {figure['call_ms']:6.1f} ms = "
            f"{figure['total_ms']:6.1f} ms  {figure['ratio']:4.2f}× boto3  (CPU {figure['cpu_ms']:5.1f} ms "
            f"{figure['cpu_ratio']:4.2f}×)  {figure['rss_mib']:5.1f} MiB" + ("" if name == "import boto3" else note)
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def measure(rounds: int, before: str | None = None, since: str | None = None) -> dict[str, dict[str, float]]:
    """Median figures per variant: ``import boto3``, then each HTTP function as shipped (and as it was: ``before``
    as it shipped then, ``since`` with today's packaging)."""
    from local.stack import LocalStack

    with (
        tempfile.TemporaryDirectory(prefix="coldstart-") as folder,
        contextlib.redirect_stdout(io.StringIO()),
        LocalStack(
            poll_queues=False, environment={"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
        ) as stack,
    ):
        # Each function reads its own secret, as deployed (the local stack's process lists them all): the person key
        # for capture_form, the application tokens for bitrix_events. One ARN each, which the old layer reads too.
        own_secret = {
            "capture_form": stack.resources.physical["Secrets"],
            "bitrix_events": stack.resources.physical["EventsSecret"],
        }
        variants: dict[str, tuple[list[str], dict[str, str]]] = {"import boto3": (["-c", _BASELINE], {})}
        shipped = build_layer(Path(folder) / "now", ROOT, compile_it=True)
        for function in FUNCTIONS:
            variants[f"{function} (as shipped)"] = _variant(shipped, function)
        for commit, label, compiled in ((since, "at", True), (before, "before", False)):
            if commit:
                source = Path(folder) / f"source-{label}"
                _export(commit, source)
                old = build_layer(Path(folder) / label, source, compile_it=compiled)
                for function in FUNCTIONS:
                    variants[f"{function} ({label} {commit[:7]})"] = _variant(old, function)
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("PYTHON") and key != "VIRTUAL_ENV"
        }
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for index in range(rounds):
            for variant, (name, (command, extra)) in enumerate(variants.items()):
                event = _event(name, index, variant)
                env = {**environment, **extra, "PYTHONDONTWRITEBYTECODE": "1", "BENCH_EVENT": json.dumps(event)}
                function = extra.get("AWS_LAMBDA_FUNCTION_NAME")
                if function in own_secret:
                    env["SECRETS_ARN"] = own_secret[function]
                output = subprocess.run(
                    [sys.executable, *command], env=env, capture_output=True, text=True, check=False, cwd=folder
                )
                if output.returncode != 0:
                    raise RuntimeError(f"{name}: {output.stderr.strip()[-2000:]}")
                samples[name].append(json.loads(output.stdout.strip().splitlines()[-1]))
    baseline = statistics.median(sample["import"] + sample["call"] for sample in samples["import boto3"])
    baseline_cpu = statistics.median(sample["cpu"] for sample in samples["import boto3"])
    figures = {}
    for name, runs in samples.items():
        total = statistics.median(run["import"] + run["call"] for run in runs)
        figures[name] = {
            "import_ms": statistics.median(run["import"] for run in runs) * 1000,
            "call_ms": statistics.median(run["call"] for run in runs) * 1000,
            "total_ms": total * 1000,
            "ratio": total / baseline,
            # CPU time (the process's own): steadier than the wall clock on a shared machine, where other processes
            # stretch every wall figure; the target is the wall-clock ratio, as Lambda bills and users wait.
            "cpu_ms": statistics.median(run["cpu"] for run in runs) * 1000,
            "cpu_ratio": statistics.median(run["cpu"] for run in runs) / baseline_cpu,
            "rss_mib": statistics.median(run["rss_kib"] for run in runs) / 1024,
        }
    return figures


def build_layer(target: Path, source: Path, *, compile_it: bool) -> Path:
    """``target/layer/python`` (throughline + the core layer's libraries) and ``target/task/<function>/app.py``."""
    python = target / "layer" / "python"
    python.mkdir(parents=True)
    shutil.copytree(source / "layers/core/throughline", python / "throughline", ignore=_no_bytecode)
    for path in _distribution_files(source / "layers/core/requirements.txt"):
        destination = python.joinpath(*path.parts[_site_depth(path) + 1 :])
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.symlink_to(path)  # the byte code goes next to the link (in the layer), not into the venv
    for function in FUNCTIONS:
        shutil.copytree(source / "functions" / function, target / "task" / function, ignore=_no_bytecode)
    if compile_it:
        from local.precompile import (
            compile_tree,
            inflate_models,
            missing_bytecode,
            trim_endpoints,
            untrimmed_endpoints,
        )

        assert compile_tree(target), "the layer did not compile"
        assert not missing_bytecode(target), "sources without byte code"
        trim_endpoints(target)  # as `make build` ships it: botocore's endpoints.json for the services named,
        inflate_models(target)  # and their models uncompressed
        assert not untrimmed_endpoints(target), "endpoints.json not trimmed"
    return target


def _variant(layer: Path, function: str) -> tuple[list[str], dict[str, str]]:
    path = f"{layer / 'task' / function}:{layer / 'layer' / 'python'}"
    # AWS_EXECUTION_ENV as Lambda sets it for the runtime (throughline.coldstart reads it).
    environment = {
        "PYTHONPATH": path,
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "POWERTOOLS_SERVICE_NAME": function,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
    }
    return ["-c", _PROBE], environment


def _event(name: str, index: int, variant: int) -> dict:
    from local.bitrix24_sandbox.outbound import event_body
    from local.stack import LOCAL_APP_TOKEN, http_event
    from local.template import HttpRoute

    if name.startswith("bitrix_events"):
        route = HttpRoute("POST", "/v1/bitrix/events", "bitrix_events")
        body = event_body(
            event="ONCRMDEALUPDATE", record_id=index + 1, domain="sandbox.bitrix24.ru", member_id="bench",
            application_token=LOCAL_APP_TOKEN, timestamp=1766047124 + index,
        )  # fmt: skip
        headers = {"content-type": "application/x-www-form-urlencoded"}
        return http_event("POST", "/v1/bitrix/events", "", headers, body, route, {})
    route = HttpRoute("POST", "/v1/forms/{form_id}/submissions", "capture_form")
    person = {"name": "Иван", "phone": f"+7916{variant:03d}{index:04d}", "utm_source": "yandex"}  # a new one each time
    body, headers = json.dumps(person).encode(), {"content-type": "application/json"}
    return http_event("POST", "/v1/forms/contact/submissions", "", headers, body, route, {"form_id": "contact"})


def _export(commit: str, target: Path) -> None:
    """The commit's layers/ and functions/ (git archive: no checkout, no worktree)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "layers", "functions"],
        capture_output=True,
        check=True,
    ).stdout
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def _distribution_files(requirements: Path) -> Iterator[Path]:
    """Every installed file of the distributions a requirements file names, and of their dependencies."""
    wanted = [
        re.split(r"[\[=<>~! ;]", line.strip(), maxsplit=1)[0]
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    extras = {"aws-lambda-powertools": {"tracer"}}
    seen: set[str] = set()
    while wanted:
        name = wanted.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "phonenumbers":  # the full build shares the module with the lite one installed here
                wanted.append("phonenumberslite")
                continue
            raise
        for requirement in distribution.requires or []:
            requirement_name, _, marker = requirement.partition(";")
            if "extra ==" in marker and not any(f'"{extra}"' in marker for extra in extras.get(name, ())):
                continue
            if "python_version" in marker and '< "3' in marker:
                continue
            wanted.append(re.split(r"[\[=<>~! (]", requirement_name.strip(), maxsplit=1)[0])
        for file in distribution.files or []:
            path = Path(distribution.locate_file(file)).resolve()
            skipped = path.suffix == ".pyc" or "__pycache__" in path.parts or ".dist-info" in str(file)
            if not skipped and path.is_file() and not str(file).startswith(".."):
                yield path


def _site_depth(path: Path) -> int:
    """How many parts of ``path`` (from the root) make up its site-packages folder."""
    parts = path.parts
    return max(index for index, part in enumerate(parts) if part in ("site-packages", "dist-packages"))


def _no_bytecode(folder: str, names: list[str]) -> set[str]:
    return {name for name in names if name == "__pycache__" or name.endswith(".pyc")}


if __name__ == "__main__":
    raise SystemExit(main())
