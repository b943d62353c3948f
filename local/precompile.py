"""Precompile the `sam build` output, so a cold start does not compile the layer's sources (and trim botocore's
endpoints.json to the services the shipped code names).

Lambda mounts a layer read-only under ``/opt``: without ``__pycache__`` next to the sources every cold start compiles
every module it imports (capture_form: 433 ms as shipped against 159 ms precompiled, x86). The byte code is written
with ``unchecked-hash`` invalidation, so the interpreter neither stats the sources nor rewrites anything, and it has
to be compiled by the Python the functions run (python3.13: ``make build`` uses it).

The first AWS client of a process parses botocore's ``data/endpoints.json``: 1.2 MB describing every endpoint of
some 300 services in every partition, about 17 ms of capture_form's first call (issue 15 #9), of which the code
uses the endpoints of a handful. ``trim_endpoints`` rewrites each copy in the build to the services named by the
code shipped beside it (``client("sqs")``, ``create_client("sts", …)`` in any ``.py`` below the build, botocore's
own credential providers included), under both the client's name and its model's ``endpointPrefix`` (the key
botocore resolves; ``sesv2`` is ``email``). The file stays botocore's own, in its own folder: botocore treats data
from anywhere else differently (``EndpointResolver.uses_builtin_data``). A named service resolves exactly as
before (tests/unit/test_precompile.py compares every region and variant); one the code does not name would fall
back to its partition's defaults, as botocore does for a service newer than its data. ``inflate_models`` stores
those services' models uncompressed, which botocore reads first.

    python -m local.precompile .aws-sam/build            # compile every .py below, trim endpoints.json
    python -m local.precompile --check .aws-sam/build    # exit 1 naming each .py without its byte code
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import importlib.util
import json
import py_compile
import re
import sys
from collections.abc import Iterator
from pathlib import Path

# The header flags of an unchecked-hash pyc (PEP 552): bit 0 "hash-based", bit 1 "check_source" clear.
_HASH_BASED, _CHECK_SOURCE = 0b01, 0b10


def compile_tree(root: Path) -> bool:
    """Compile every ``.py`` below ``root`` for the running interpreter; ``False`` if any failed to compile."""
    return bool(
        compileall.compile_dir(
            str(root),
            quiet=1,
            workers=0,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    )


# A client factory called with a service's name: boto3.client("s3"), aws.client("sqs"), create_client("sts", …),
# _build_boto3_client(service_name="ssm"), boto3.resource("dynamodb"), and botocore's credential providers'
# self._client_creator('sts', …) and create_nested_client(self._session, "sso-oidc", …).
_CLIENT_CALL = re.compile(
    r"""(?:\w*(?:client|client_creator|resource)\(|create_nested_client\(\s*[\w.]+\s*,)"""
    r"""\s*(?:service_name\s*=\s*)?["']([a-z0-9][a-z0-9.-]*)["']"""
)
ENDPOINTS = Path("botocore", "data", "endpoints.json")


def named_services(root: Path) -> set[str]:
    """The service names the ``.py`` files below ``root`` pass to a client factory as a literal."""
    names: set[str] = set()
    for source in _sources(root):
        names.update(_CLIENT_CALL.findall(source.read_text(encoding="utf-8", errors="replace")))
    return names


def endpoint_keys(data: Path, services: set[str]) -> set[str]:
    """``services`` and their models' ``endpointPrefix`` (newest API version) in botocore's ``data`` folder; a name
    with no model there (not a service) gives nothing."""
    keys: set[str] = set()
    for service in services:
        versions = sorted(path for path in (data / service).glob("*") if path.is_dir()) if service else []
        for model in (versions[-1] / "service-2.json", versions[-1] / "service-2.json.gz") if versions else ():
            if model.is_file():
                raw = gzip.decompress(model.read_bytes()) if model.suffix == ".gz" else model.read_bytes()
                keys.update((service, json.loads(raw)["metadata"]["endpointPrefix"]))
                break
    return keys


def trim_endpoints(root: Path) -> dict[Path, tuple[int, int]]:
    """Rewrite every ``botocore/data/endpoints.json`` below ``root`` to the services its code names; per file, the
    services of its largest partition before and after. A symbolic link is replaced by the trimmed file, the file
    it pointed to left alone."""
    files = [path for path in sorted(root.rglob("endpoints.json")) if path.parts[-3:] == ENDPOINTS.parts]
    if not files:
        return {}
    named = named_services(root)
    trimmed: dict[Path, tuple[int, int]] = {}
    for path in files:
        keep = endpoint_keys(path.parent, named)
        endpoints = json.loads(path.read_bytes())
        before = max(len(partition["services"]) for partition in endpoints["partitions"])
        for partition in endpoints["partitions"]:
            partition["services"] = {key: value for key, value in partition["services"].items() if key in keep}
        after = max(len(partition["services"]) for partition in endpoints["partitions"])
        path.unlink()  # a link into an installed botocore (the benchmark's layer): never write through it
        path.write_text(json.dumps(endpoints, separators=(",", ":")), encoding="utf-8")
        trimmed[path] = (before, after)
    return trimmed


def inflate_models(root: Path) -> list[Path]:
    """Store plain the models of the services the code names, in each ``botocore/data`` below ``root``: botocore reads
    ``service-2.json`` before ``service-2.json.gz``, and unzipping is a third of a model's load (DynamoDB's: 2.4 of
    7 ms). The compressed file is removed (a link is unlinked, never written through); the files inflated."""
    named = named_services(root)
    inflated = []
    for endpoints in sorted(root.rglob("endpoints.json")):
        if endpoints.parts[-3:] != ENDPOINTS.parts:
            continue
        for service in sorted(named):
            for packed in sorted((endpoints.parent / service).glob("*/*.json.gz")):
                if not packed.parent.resolve().is_relative_to(root.resolve()):
                    continue  # a folder linked from elsewhere (an installed botocore): not ours to change
                plain = packed.with_suffix("")
                plain.write_bytes(gzip.decompress(packed.read_bytes()))
                packed.unlink()
                inflated.append(plain)
    return inflated


def untrimmed_endpoints(root: Path) -> list[Path]:
    """The ``botocore/data/endpoints.json`` below ``root`` that still hold a service its code does not name."""
    named = named_services(root)
    untrimmed = []
    for path in sorted(root.rglob("endpoints.json")):
        if path.parts[-3:] == ENDPOINTS.parts:
            keep = endpoint_keys(path.parent, named)
            partitions = json.loads(path.read_bytes())["partitions"]
            if any(set(partition["services"]) - keep for partition in partitions):
                untrimmed.append(path)
    return untrimmed


def missing_bytecode(root: Path) -> list[Path]:
    """The sources below ``root`` with no unchecked-hash byte code for the running interpreter."""
    return [source for source in _sources(root) if not _has_unchecked_pyc(source)]


def _sources(root: Path) -> Iterator[Path]:
    for source in sorted(root.rglob("*.py")):
        if "__pycache__" not in source.parts:
            yield source


def _has_unchecked_pyc(source: Path) -> bool:
    cached = Path(importlib.util.cache_from_source(str(source)))
    try:
        header = cached.read_bytes()[:8]
    except OSError:
        return False
    if len(header) < 8 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags = int.from_bytes(header[4:8], "little")
    return bool(flags & _HASH_BASED) and not flags & _CHECK_SOURCE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a build folder (.aws-sam/build)")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 naming what lacks byte code")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    tag = sys.implementation.cache_tag
    if not args.check:
        if not compile_tree(args.root):
            print(f"some sources below {args.root} did not compile", file=sys.stderr)
            return 1
        for path, (before, after) in trim_endpoints(args.root).items():
            print(f"{path}: {before} → {after} services (the ones the code names)")
        print(f"{len(inflate_models(args.root))} models of those services stored uncompressed")
    untrimmed = untrimmed_endpoints(args.root)
    for path in untrimmed:
        print(f"not trimmed to the services the code names: {path}", file=sys.stderr)
    missing = missing_bytecode(args.root)
    total = sum(1 for _ in _sources(args.root))
    if missing:
        for source in missing[:20]:
            print(f"no {tag} unchecked-hash byte code: {source}", file=sys.stderr)
        print(f"{len(missing)} of {total} sources below {args.root} lack byte code", file=sys.stderr)
    if missing or untrimmed:
        return 1
    print(f"{total} sources below {args.root} have {tag} unchecked-hash byte code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
