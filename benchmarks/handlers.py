"""Cold-start proxy and CPU cost of the handlers. Prints figures; asserts nothing (machines are noisy).

1. Import time of each ``functions/<name>/app.py`` in a fresh interpreter, interleaved with ``import boto3`` runs
   so both see the same machine state, from the source tree. The cold-start target (the first invocation of the
   HTTP functions, import + first call, from the layer as shipped) is ``benchmarks.coldstart``'s.
2. CPU time per submission of capture_form and of bitrix_writer, and per event of bitrix_events, measured with
   ``time.thread_time`` in the invoking thread, so the local AWS (moto) and Bitrix24 sandbox threads are not
   counted — only the handler's own work: parsing, validation, building and signing requests, JSON.

    make bench                       # full run
    make bench BENCH_ARGS=--quick    # the CI smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_IMPORT_PROBE = (
    "import resource, time; t = time.perf_counter(); {statement}; elapsed = time.perf_counter() - t; "
    "print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    # The smoke run takes 150 submissions: the warm median of 60 still carried the first requests' warm-up (capture_form
    # 9.8 and 11.4 ms in two CI smoke runs; 7.7 and 8.5 ms with 150 on the same code, on the same machine).
    rounds, submissions = (5, 150) if args.quick else (25, 400)

    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    imports = import_times(rounds)
    baseline = statistics.median(imports["boto3"]["seconds"])
    print(f"\nImport time in a fresh interpreter ({rounds} runs each, interleaved; median / min; peak RSS):")
    for name, sample in imports.items():
        median, best = statistics.median(sample["seconds"]), min(sample["seconds"])
        ratio = median / baseline
        label = "python -c 'import boto3'" if name == "boto3" else f"functions/{name}/app.py"
        rss = statistics.median(sample["rss_kib"]) / 1024
        print(f"  {label:<32} {median * 1000:7.1f} ms / {best * 1000:6.1f} ms  {ratio:4.2f}× boto3  {rss:5.1f} MiB")

    cpu = handler_cpu(submissions)
    print(f"\nCPU time per submission in the handler's own thread ({submissions} submissions):")
    for name, figures in cpu.items():
        print(
            f"  {name:<14} first call {figures['first_ms']:6.1f} ms   then median {figures['median_ms']:5.2f} ms, "
            f"p95 {figures['p95_ms']:5.2f} ms, p99 {figures['p99_ms']:5.2f} ms  "
            f"(wall median {figures['wall_median_ms']:5.1f} ms incl. local AWS)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"imports": imports, "cpu": cpu}, indent=2))
    return 0


def import_times(rounds: int) -> dict[str, dict[str, list[float]]]:
    functions = sorted(path.parent.name for path in (ROOT / "functions").glob("*/app.py"))
    statements = {"boto3": "import boto3", **{name: "import app" for name in functions}}
    samples: dict[str, dict[str, list[float]]] = {name: {"seconds": [], "rss_kib": []} for name in statements}
    for _ in range(rounds):
        for name, statement in statements.items():
            seconds, rss = _probe(statement, name)
            samples[name]["seconds"].append(seconds)
            samples[name]["rss_kib"].append(rss)
    return samples


def _probe(statement: str, function: str) -> tuple[float, float]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{ROOT / 'layers/core'}:{ROOT / 'functions' / function}",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "POWERTOOLS_SERVICE_NAME": function,
        "PYTHONDONTWRITEBYTECODE": "",
    }
    output = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(statement=statement)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(output[-2]), float(output[-1])


def handler_cpu(count: int) -> dict[str, dict[str, float]]:
    """Drive the real handlers on the local stack, quietly, and time their thread's CPU."""
    import contextlib
    import io
    import warnings

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    from local.stack import LocalStack, http_event, sqs_record
    from local.template import HttpRoute
    from local.traffic import burst

    traffic = burst(count, seed=11, repeats=0, doubles=0, spam=0, invalid=0)
    route = HttpRoute("POST", "/v1/forms/{form_id}/submissions", "capture_form")
    results: dict[str, dict[str, float]] = {}
    with (
        contextlib.redirect_stdout(io.StringIO()),
        LocalStack(
            poll_queues=False, environment={"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
        ) as stack,
    ):
        cpu, wall = [], []
        for post in traffic.first_wave:
            body = json.dumps(post.body).encode()
            event = http_event(
                "POST",
                f"/v1/forms/{post.form_id}/submissions",
                "",
                # each visitor from their own address, as the per-IP flood limit expects of real traffic
                {"content-type": "application/json", "x-forwarded-for": post.person.ip},
                body,
                route,
                {"form_id": post.form_id},
            )
            started_cpu, started_wall = time.thread_time(), time.perf_counter()
            response = stack.invoke("capture_form", event)
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
            assert response["statusCode"] == 202, response
        results["capture_form"] = _figures(cpu, wall)

        import boto3

        source = stack.resources.queue_sources[0]
        sqs = boto3.client("sqs")
        cpu, wall = [], []
        while True:
            messages = sqs.receive_message(
                QueueUrl=source.queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                break
            event = {"Records": [sqs_record(message, source) for message in messages]}
            started_cpu, started_wall = time.thread_time(), time.perf_counter()
            result = stack.invoke("bitrix_writer", event)
            cpu.append((time.thread_time() - started_cpu) / len(messages))
            wall.append((time.perf_counter() - started_wall) / len(messages))
            assert result["batchItemFailures"] == [], result
            for message in messages:
                sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
        results["bitrix_writer"] = _figures(cpu, wall)

        from local.bitrix24_sandbox.outbound import event_body
        from local.stack import LOCAL_APP_TOKEN

        route = HttpRoute("POST", "/v1/bitrix/events", "bitrix_events")
        cpu, wall = [], []
        for index in range(count):
            body = event_body(
                event=("ONCRMDEALUPDATE", "ONCRMACTIVITYADD", "ONCRMLEADADD")[index % 3],
                record_id=index + 1,
                domain="sandbox.bitrix24.ru",
                member_id="bench",
                application_token=LOCAL_APP_TOKEN,
                timestamp=1766047124 + index,
            )
            event = http_event(
                "POST", "/v1/bitrix/events", "", {"content-type": "application/x-www-form-urlencoded"}, body, route, {}
            )
            started_cpu, started_wall = time.thread_time(), time.perf_counter()
            response = stack.invoke("bitrix_events", event)
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
            assert response["statusCode"] == 200, response
        results["bitrix_events"] = _figures(cpu, wall)
    return results


def _figures(cpu: list[float], wall: list[float]) -> dict[str, float]:
    warm = sorted(cpu[1:]) or cpu
    return {
        "first_ms": cpu[0] * 1000,
        "median_ms": statistics.median(warm) * 1000,
        "p95_ms": warm[int(len(warm) * 0.95) - 1] * 1000 if len(warm) > 1 else warm[0] * 1000,
        "p99_ms": warm[max(0, int(len(warm) * 0.99) - 1)] * 1000,
        "wall_median_ms": statistics.median(wall[1:] or wall) * 1000,
    }


if __name__ == "__main__":
    raise SystemExit(main())
