"""Read template.yaml and create its data resources in an AWS endpoint (moto locally), so tests, the local stack
and the deployed stack cannot drift: there is one description of queues, tables and the bucket, and it is this file.

Emulated: SQS queues (FIFO, visibility, retention, redrive), S3 buckets (versioning, lifecycle, encryption),
DynamoDB tables (keys, billing, TTL), Secrets Manager secrets, and each function's environment with its intrinsic
functions resolved. Not emulated (nothing to run locally): IAM, log groups, alarms, SNS, the layer, API Gateway —
the local HTTP server reads the routes from the functions' HttpApi events instead.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
ACCOUNT_ID = "123456789012"


@dataclass
class HttpRoute:
    method: str
    path: str  # with {param} placeholders, as in the template
    function: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method.upper() != self.method.upper():
            return None
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        found = re.match(pattern, path)
        return found.groupdict() if found else None


@dataclass
class QueueSource:
    function: str
    queue_url: str
    queue_arn: str
    batch_size: int = 10
    maximum_concurrency: int = 2


@dataclass
class FunctionSpec:
    logical_id: str
    name: str  # the folder under functions/
    handler: str  # module.function, e.g. app.lambda_handler
    timeout: int
    memory: int
    environment: dict[str, str] = field(default_factory=dict)


@dataclass
class LocalStackResources:
    stack_name: str
    region: str
    physical: dict[str, str]  # logical id → what Ref gives
    functions: dict[str, FunctionSpec]  # folder name → spec
    routes: list[HttpRoute]
    queue_sources: list[QueueSource]
    outputs: dict[str, str]

    def environment(self) -> dict[str, str]:
        """Every function's environment merged (they share one process locally); conflicting values are an error,
        except ``SECRETS_ARN``: each function lists the secrets it uses, and the one process gets them all."""
        merged: dict[str, str] = {}
        secret_arns: list[str] = []
        for spec in self.functions.values():
            for key, value in spec.environment.items():
                if key == "POWERTOOLS_SERVICE_NAME":
                    continue
                if key == "SECRETS_ARN":
                    secret_arns += [arn for arn in value.split(",") if arn and arn not in secret_arns]
                    merged[key] = ",".join(secret_arns)
                    continue
                if key in merged and merged[key] != value:
                    raise ValueError(f"functions disagree on {key}; the local stack runs them in one process")
                merged[key] = value
        return merged


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The parsed template: a fresh copy each call, parsed once per process and file version (a stack starts in
    about a second; parsing the YAML took a third of it)."""
    text = path.read_text(encoding="utf-8")
    return copy.deepcopy(_parsed(text))


@functools.lru_cache(maxsize=4)
def _parsed(text: str) -> dict[str, Any]:
    return yaml.load(text, Loader=_CfnLoader)


def parameters_from_environment(template: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Template parameters whose setting is in ``environ``: for every function variable that is a ``Ref`` to a
    parameter (``GOOGLE_ADS_CUSTOMER_IDS: !Ref GoogleAdsCustomerIds``), the environment's value of that variable.
    Locally the environment wins over a parameter's default, as the README promises."""
    parameters = template.get("Parameters", {})
    functions = [r for r in template.get("Resources", {}).values() if r.get("Type") == "AWS::Serverless::Function"]
    variables = [template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})]
    variables += [function.get("Properties", {}).get("Environment", {}).get("Variables", {}) for function in functions]
    found: dict[str, str] = {}
    for mapping in variables:
        for name, value in mapping.items():
            if isinstance(value, dict) and value.get("Ref") in parameters and name in environ:
                found[value["Ref"]] = environ[name]
    return found


class _ClientPerService:
    """A boto3 session that makes one client per service and hands it out again. Making a client takes tens of
    milliseconds on a busy machine, and every test that starts a local stack provisions every resource again."""

    def __init__(self, session: Any) -> None:
        self._session, self._clients = session, {}
        self.region_name = session.region_name

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service)
        return self._clients[service]


def provision(
    session: Any,
    *,
    stack_name: str = "throughline-local",
    parameters: Mapping[str, str] | None = None,
    template: Mapping[str, Any] | None = None,
) -> LocalStackResources:
    """Create the template's data resources through ``session`` (a boto3 Session pointed at moto) and resolve
    every function's environment. Idempotent: existing resources are reused."""
    template = template or load_template()
    session = _ClientPerService(session)  # 23 resources, four services: a client each, not one per resource
    region = session.region_name or "eu-central-1"
    resolver = _Resolver(template, stack_name, region, dict(parameters or {}))
    resources = template.get("Resources", {})

    for logical_id, resource in resources.items():
        kind = resource["Type"]
        if kind == "AWS::SQS::Queue":
            resolver.physical[logical_id] = _create_queue(session, resolver, logical_id, resource)
        elif kind == "AWS::S3::Bucket":
            resolver.physical[logical_id] = _create_bucket(session, resolver, logical_id, resource)
        elif kind == "AWS::DynamoDB::Table":
            resolver.physical[logical_id] = _create_table(session, resolver, logical_id, resource)
        elif kind == "AWS::SecretsManager::Secret":
            resolver.physical[logical_id] = _create_secret(session, resolver, logical_id, resource)
    # Redrive needs the dead-letter queue's ARN, which exists only now.
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in resource.get("Properties", {}):
            policy = resolver.resolve(resource["Properties"]["RedrivePolicy"])
            session.client("sqs").set_queue_attributes(
                QueueUrl=resolver.physical[logical_id], Attributes={"RedrivePolicy": json.dumps(policy)}
            )

    functions, routes, sources = {}, [], []
    globals_ = template.get("Globals", {}).get("Function", {})
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        name = Path(str(props["CodeUri"]).rstrip("/")).name
        environment = {
            **resolver.resolve(globals_.get("Environment", {}).get("Variables", {})),
            **resolver.resolve(props.get("Environment", {}).get("Variables", {})),
        }
        functions[name] = FunctionSpec(
            logical_id=logical_id,
            name=name,
            handler=props.get("Handler", globals_.get("Handler", "app.lambda_handler")),
            timeout=int(resolver.resolve(props.get("Timeout", globals_.get("Timeout", 3)))),
            memory=int(resolver.resolve(props.get("MemorySize", globals_.get("MemorySize", 128)))),
            environment={key: str(value) for key, value in environment.items() if value is not None},
        )
        for event in props.get("Events", {}).values():
            event_props = event.get("Properties", {})
            if event["Type"] == "HttpApi":
                routes.append(HttpRoute(event_props["Method"], event_props["Path"], name))
            elif event["Type"] == "SQS":
                queue_arn = resolver.resolve(event_props["Queue"])
                queue_logical = next(key for key, value in resolver.arns.items() if value == queue_arn)
                scaling = event_props.get("ScalingConfig", {})
                sources.append(
                    QueueSource(
                        function=name,
                        queue_url=resolver.physical[queue_logical],
                        queue_arn=queue_arn,
                        batch_size=int(resolver.resolve(event_props.get("BatchSize", 10))),
                        maximum_concurrency=int(resolver.resolve(scaling.get("MaximumConcurrency", 2))),
                    )
                )
    outputs = {}
    for key, output in template.get("Outputs", {}).items():
        try:
            outputs[key] = str(resolver.resolve(output["Value"]))
        except _Unresolvable:
            continue  # outputs about API Gateway and other parts that do not exist locally
    return LocalStackResources(stack_name, region, dict(resolver.physical), functions, routes, sources, outputs)


# -- resources ---------------------------------------------------------------------------------------------------------


def _physical_name(stack_name: str, logical_id: str) -> str:
    return f"{stack_name}-{logical_id}".lower()


def _create_queue(session: Any, resolver: _Resolver, logical_id: str, resource: Mapping[str, Any]) -> str:
    props = resolver.resolve({k: v for k, v in resource.get("Properties", {}).items() if k != "RedrivePolicy"})
    fifo = bool(props.get("FifoQueue"))
    name = props.get("QueueName") or _physical_name(resolver.stack_name, logical_id) + (".fifo" if fifo else "")
    attributes = {
        key: str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
        for key in ("FifoQueue", "ContentBasedDeduplication", "VisibilityTimeout", "MessageRetentionPeriod",
                    "DelaySeconds", "ReceiveMessageWaitTimeSeconds", "SqsManagedSseEnabled")
        if key in props
    }  # fmt: skip
    sqs = session.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    resolver.arns[logical_id] = f"arn:aws:sqs:{resolver.region}:{ACCOUNT_ID}:{name}"
    resolver.attributes[logical_id] = {"QueueName": name, "QueueUrl": url}
    return url


def _create_bucket(session: Any, resolver: _Resolver, logical_id: str, resource: Mapping[str, Any]) -> str:
    props = resolver.resolve(resource.get("Properties", {}))
    name = props.get("BucketName") or _physical_name(resolver.stack_name, logical_id)
    s3 = session.client("s3")
    try:
        if resolver.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": resolver.region})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    if props.get("VersioningConfiguration"):
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=props["VersioningConfiguration"])
    encryption = props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration")
    if encryption:
        # CloudFormation says ServerSideEncryptionByDefault where the S3 API says ApplyServerSideEncryptionByDefault.
        rules = [
            {("Apply" + key if key == "ServerSideEncryptionByDefault" else key): value for key, value in rule.items()}
            for rule in encryption
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if props.get("PublicAccessBlockConfiguration"):
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    rules = props.get("LifecycleConfiguration", {}).get("Rules")
    if rules:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(rule) for rule in rules]}
        )
    resolver.arns[logical_id] = f"arn:aws:s3:::{name}"
    return name


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle rule shape → the S3 API's."""
    converted: dict[str, Any] = {
        "ID": rule["Id"],
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if rule.get("ExpiredObjectDeleteMarker"):
        converted["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        converted["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "NoncurrentVersionExpiration" in rule:
        converted["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    return converted


def _create_table(session: Any, resolver: _Resolver, logical_id: str, resource: Mapping[str, Any]) -> str:
    props = resolver.resolve(resource.get("Properties", {}))
    name = props.get("TableName") or _physical_name(resolver.stack_name, logical_id)
    dynamodb = session.client("dynamodb")
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        )
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
        )
    resolver.arns[logical_id] = f"arn:aws:dynamodb:{resolver.region}:{ACCOUNT_ID}:table/{name}"
    return name


def _create_secret(session: Any, resolver: _Resolver, logical_id: str, resource: Mapping[str, Any]) -> str:
    props = resolver.resolve(resource.get("Properties", {}))
    name = props.get("Name") or _physical_name(resolver.stack_name, logical_id)
    secrets = session.client("secretsmanager")
    try:
        arn = secrets.create_secret(Name=name, SecretString=_secret_string(secrets, props))["ARN"]
    except secrets.exceptions.ResourceExistsException:
        arn = secrets.describe_secret(SecretId=name)["ARN"]  # reused as it is: its generated values stay
    resolver.arns[logical_id] = arn
    return arn


def _secret_string(secrets: Any, props: Mapping[str, Any]) -> str:
    """``SecretString``, or what CloudFormation makes of ``GenerateSecretString``: a random password (from the
    service's own GetRandomPassword) put under ``GenerateStringKey`` of the JSON ``SecretStringTemplate``."""
    generate = props.get("GenerateSecretString")
    if not generate:
        return props.get("SecretString", "{}")
    options = {
        option: generate[option]
        for option in ("PasswordLength", "ExcludeCharacters", "ExcludeNumbers", "ExcludePunctuation",
                       "ExcludeUppercase", "ExcludeLowercase", "IncludeSpace", "RequireEachIncludedType")
        if option in generate
    }  # fmt: skip
    password = secrets.get_random_password(**options)["RandomPassword"]
    if "SecretStringTemplate" not in generate:
        return password
    value = json.loads(generate["SecretStringTemplate"])
    value[generate["GenerateStringKey"]] = password
    return json.dumps(value)


# -- intrinsic functions ---------------------------------------------------------------------------------------------


class _Unresolvable(Exception):
    pass


class _NoValue:
    pass


class _Resolver:
    def __init__(self, template: Mapping[str, Any], stack_name: str, region: str, overrides: dict[str, str]):
        self.template = template
        self.stack_name = stack_name
        self.region = region
        self.parameters = {
            name: str(overrides.get(name, spec.get("Default", "")))
            for name, spec in template.get("Parameters", {}).items()
        }
        unknown = set(overrides) - set(self.parameters)
        if unknown:
            raise ValueError(f"unknown template parameters: {sorted(unknown)}")
        self.physical: dict[str, str] = {}
        self.arns: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self.pseudo = {
            "AWS::Region": region,
            "AWS::StackName": stack_name,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::Partition": "aws",
        }

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if not isinstance(item, _NoValue)]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(argument)
            if key == "Fn::GetAtt":
                return self._get_att(*(argument.split(".", 1) if isinstance(argument, str) else argument))
            if key == "Fn::Sub":
                return self._sub(argument)
            if key == "Fn::If":
                condition, when_true, when_false = argument
                return self.resolve(when_true if self._condition(condition) else when_false)
            if key == "Fn::Join":
                separator, items = argument
                return separator.join(str(item) for item in self.resolve(items))
            if key == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(separator)
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key.startswith("Fn::"):
                raise _Unresolvable(key)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if not isinstance(item, _NoValue)}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NoValue()
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name]
        raise _Unresolvable(f"Ref {name}")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        if attribute == "Arn" and logical_id in self.arns:
            return self.arns[logical_id]
        if attribute in self.attributes.get(logical_id, {}):
            return self.attributes[logical_id][attribute]
        raise _Unresolvable(f"GetAtt {logical_id}.{attribute}")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        variables = {key: self.resolve(item) for key, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                return str(self._get_att(*name.split(".", 1)))
            return str(self._ref(name))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def _condition(self, name_or_expression: Any) -> bool:
        expression = (
            self.template["Conditions"][name_or_expression]
            if isinstance(name_or_expression, str)
            else name_or_expression
        )
        ((key, argument),) = expression.items()
        if key == "Fn::Not":
            return not self._condition(argument[0])
        if key == "Fn::Equals":
            left, right = (self.resolve(item) for item in argument)
            return str(left) == str(right)
        if key == "Fn::And":
            return all(self._condition(item) for item in argument)
        if key == "Fn::Or":
            return any(self._condition(item) for item in argument)
        if key == "Condition":
            return self._condition(argument)
        raise _Unresolvable(key)


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !GetAtt, !Sub, …) read as their long forms."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)
