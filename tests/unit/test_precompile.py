"""`make build` prepares the SAM build output: every source gets unchecked-hash byte code for the interpreter that
compiled it, botocore's endpoints.json keeps the services the code names, and the check names whatever is not so."""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import botocore
from botocore.loaders import Loader
from botocore.regions import EndpointResolver

from local.precompile import (
    inflate_models,
    main,
    missing_bytecode,
    named_services,
    trim_endpoints,
    untrimmed_endpoints,
)


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


# botocore's endpoints.json, trimmed to the services the shipped code names (issue 15 #9).
BOTOCORE_DATA = Path(botocore.__file__).parent / "data"
NAMED = {"sqs": "sqs", "sesv2": "email", "s3": "s3", "secretsmanager": "secretsmanager"}  # name → endpointPrefix


def built(tmp_path: Path) -> Path:
    """A build with the installed botocore's endpoints.json (linked, as the benchmark's layer links it) and models
    (three copied, three linked folders), and code that names four services, one of them under another endpoint
    prefix (sesv2 → email)."""
    data = tmp_path / "Layer" / "python" / "botocore" / "data"
    data.mkdir(parents=True)
    (data / "endpoints.json").symlink_to(BOTOCORE_DATA / "endpoints.json")
    for service in ("sqs", "sesv2", "secretsmanager"):
        shutil.copytree(BOTOCORE_DATA / service, data / service)
    for service in ("s3", "dynamodb", "athena"):  # linked, as from an installed botocore
        (data / service).symlink_to(BOTOCORE_DATA / service, target_is_directory=True)
    code = tmp_path / "Function"
    code.mkdir()
    (code / "app.py").write_text(
        'from throughline.adapters import aws\nqueue = aws.client("sqs")\nimport boto3\nmail = boto3.client(\n'
        '    \'sesv2\')\ns3 = session.create_client("s3", region_name="eu-central-1")\n'
        'secrets = provider._client(service_name="secretsmanager")\nnot_a_service = aws.client("no-such-thing")\n'
        "dynamic = aws.client(name)  # not a literal: not named\n"
    )
    return tmp_path


def test_endpoints_keep_exactly_the_named_services_under_their_endpoint_prefixes(tmp_path: Path) -> None:
    root = built(tmp_path)
    assert named_services(root) == {*NAMED, "no-such-thing"}
    trimmed = trim_endpoints(root)
    ((path, (before, after)),) = trimmed.items()
    assert before > 250 and after == 4 and not path.is_symlink()
    for partition in json.loads(path.read_text())["partitions"]:
        assert set(partition["services"]) <= set(NAMED.values())  # dynamodb and athena: not named, gone
    assert untrimmed_endpoints(root) == []
    full = json.loads((BOTOCORE_DATA / "endpoints.json").read_text())  # the installed file, left alone
    assert "dynamodb" in full["partitions"][0]["services"]


def test_a_named_service_resolves_exactly_as_before_in_every_region_and_variant(tmp_path: Path) -> None:
    root = built(tmp_path)
    ((path, _),) = trim_endpoints(root).items()
    full = EndpointResolver(json.loads((BOTOCORE_DATA / "endpoints.json").read_text()), uses_builtin_data=True)
    ours = EndpointResolver(json.loads(path.read_text()), uses_builtin_data=True)
    compared = 0
    for partition in full._endpoint_data["partitions"]:
        regions = {*partition["regions"], *partition["services"]["sqs"]["endpoints"], "xx-nowhere-1"}
        for prefix in NAMED.values():
            for region in sorted(regions):
                for fips, dualstack in ((False, False), (True, False), (False, True), (True, True)):
                    variant = {"use_fips_endpoint": fips, "use_dualstack_endpoint": dualstack}
                    assert resolve(ours, prefix, region, variant) == resolve(full, prefix, region, variant), (
                        prefix,
                        region,
                        variant,
                    )
                    compared += 1
    assert compared > 1000
    for region in ("eu-central-1", "us-east-1"):  # a service not named falls back to its partition's defaults
        assert ours.construct_endpoint("dynamodb", region)["hostname"] == f"dynamodb.{region}.amazonaws.com"


def resolve(resolver: EndpointResolver, prefix: str, region: str, variant: dict) -> object:
    """What the resolver answers, or the error it raises (a variant the data does not model is an error)."""
    try:
        return resolver.construct_endpoint(prefix, region, **variant)
    except Exception as error:  # the error is the answer compared
        return type(error), str(error)


def test_an_untrimmed_build_fails_the_check(tmp_path: Path, capsys) -> None:
    root = built(tmp_path)
    assert main(["--check", str(root)]) == 1
    assert "not trimmed" in capsys.readouterr().err
    assert main([str(root)]) == 0 and main(["--check", str(root)]) == 0
    assert "→ 4 services" in capsys.readouterr().out


def test_every_client_the_shipped_code_makes_names_its_service_as_a_literal() -> None:
    """The scan sees only literals: a client made from a variable would lose its endpoints in the build."""
    root = Path(__file__).resolve().parents[2]
    calls = []
    for folder in (root / "layers" / "core" / "throughline", root / "functions"):
        for source in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                function = ast.unparse(node.func) if isinstance(node, ast.Call) else ""
                if function.endswith(("aws.client", "boto3.client", "create_client")):
                    calls.append((source.relative_to(root), node))
    factory = Path("layers/core/throughline/adapters/aws.py")
    dynamic = [
        f"{path}:{node.lineno}"
        for path, node in calls
        if path != factory and not (node.args and isinstance(node.args[0], ast.Constant))
    ]
    assert len(calls) > 20 and dynamic == []
    assert {"dynamodb", "s3", "sqs", "secretsmanager", "athena", "sesv2"} <= named_services(root / "functions").union(
        named_services(root / "layers" / "core")
    )


def test_the_named_services_models_are_stored_uncompressed_and_load_as_before(tmp_path: Path) -> None:
    root = built(tmp_path)
    data = root / "Layer" / "python" / "botocore" / "data"
    copied = ("sqs", "sesv2", "secretsmanager")
    packed = {path.relative_to(data): path.read_bytes() for name in copied for path in data.glob(f"{name}/*/*.gz")}
    inflated = inflate_models(root)
    assert {path.relative_to(data).parts[0] for path in inflated} == set(copied) and len(packed) >= 6
    for name, body in packed.items():  # each plain file holds what its compressed one did, which is gone
        assert (data / name).with_suffix("").read_bytes() == gzip.decompress(body) and not (data / name).exists()
    assert list((BOTOCORE_DATA / "s3").glob("*/service-2.json.gz"))  # a linked folder: never written through
    ours, installed = Loader(extra_search_paths=[str(data)]), Loader()
    for service in copied:
        for kind in ("service-2", "endpoint-rule-set-1"):
            assert ours.load_service_model(service, kind) == installed.load_service_model(service, kind)
    assert inflate_models(root) == []  # a second build step finds nothing left to do


def test_the_clients_botocore_and_boto3_make_themselves_are_named(tmp_path: Path) -> None:
    """The credential providers make their clients through a creator (``_client_creator('sts', …)``,
    ``create_nested_client(session, "sso-oidc", …)``) and boto3's resources through ``resource(…)``: the scan names
    them, or a role assumed through STS would lose its global and FIPS endpoints (``aws-global`` →
    ``sts.amazonaws.com`` signed for us-east-1) in the build."""
    code = tmp_path / "Layer" / "python" / "botocore"
    code.mkdir(parents=True)
    (code / "credentials.py").write_text(
        "def _assume_role(self):\n    client = self._client_creator('sts', config=config)\n"
        "def _sso(self):\n    client = self._client_creator(\n        'sso', config=config)\n"
        'def _oidc(self):\n    return create_nested_client(self._session, "sso-oidc", config=config)\n'
        'table = boto3.resource("dynamodb").Table("x")\n'
    )
    assert named_services(tmp_path) == {"sts", "sso", "sso-oidc", "dynamodb"}
    # And the installed botocore's own providers, whatever else its sources mention.
    installed = named_services(Path(botocore.__file__).parent)
    assert {"sts", "sso", "sso-oidc"} <= installed


def test_sts_keeps_its_global_endpoint_when_only_the_credential_provider_names_it(tmp_path: Path) -> None:
    root = built(tmp_path)
    data = root / "Layer" / "python" / "botocore" / "data"
    (data / "sts").symlink_to(BOTOCORE_DATA / "sts", target_is_directory=True)
    (root / "Layer" / "python" / "botocore" / "credentials.py").write_text(
        "client = self._client_creator('sts', config=config)\n"
    )
    ((path, _),) = trim_endpoints(root).items()
    full = EndpointResolver(json.loads((BOTOCORE_DATA / "endpoints.json").read_text()), uses_builtin_data=True)
    ours = EndpointResolver(json.loads(path.read_text()), uses_builtin_data=True)
    for region in ("aws-global", "us-east-1", "us-east-1-fips", "eu-central-1", "us-gov-west-1", "cn-north-1"):
        variant = {"use_fips_endpoint": False, "use_dualstack_endpoint": False}
        assert resolve(ours, "sts", region, variant) == resolve(full, "sts", region, variant), region
    assert ours.construct_endpoint("sts", "aws-global")["hostname"] == "sts.amazonaws.com"
