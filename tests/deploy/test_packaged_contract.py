"""The contract between the code and the stack it is packaged into, read from the packaged
templates themselves (`make package`'s build/sam.json and the expanded
build/cloudformation.json), never from deploy/template.yaml alone: what Chalice and SAM
make of it is what deploys.

- Every route gets the security the app declares: the custom Lambda authorizer (its
  authorizerUri the authorizer function, its TTL), or none for the public routes; API
  Gateway may invoke the authorizer; API Gateway's own answers have the API's
  `{"Code", "Message"}` body.
- Every function's Handler is a callable of `app`, and its environment holds every setting
  that function needs; every `${...}` of the ASL file is filled with a resource of the
  stack; every event source of the app reaches its function.
- The stage is throttled, the API, the authorizer and the builds have reserved
  concurrency (and a throttled build waits for a free builder), and the access log never
  records a link's token.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import jsonschema
import pytest
from chalice.app import CloudWatchEventConfig, Rate, ScheduledEventConfig, SQSEventConfig

import app as application
from chalicelib.api import openapi
from chalicelib.core import errors, settings
from chalicelib.core.settings import Settings
from statemachine import definition as statemachine
from tests.support.stack_template import (
    ALLOCATOR_VARIABLES,
    NO_VALUE,
    STREAMING_FUNCTIONS,
    Packaged,
    Resolver,
    functions,
    packaged,
)

NAMES = {
    "Table": "satchel-test",
    "ArtifactsBucket": "satchel-test-artifacts",
    "SourceBucket": "satchel-test-sources",
}
# The routes anyone may call (DESIGN: every route but these requires a credential). A link
# is read (and claimed) by whoever holds it; only its owner revokes it.
PUBLIC_PATHS = {"/health", "/openapi.json"}
LINK_PATH = "/links/{token}"
LINK_OWNER_METHODS = {"DELETE"}
AUTHORIZER_MAX_TTL_SECONDS = 300  # a revoked key still works until its cached answer expires
# API Gateway's own answers: status (None: API Gateway's) and the stable Code of each.
GATEWAY_RESPONSES: dict[str, tuple[str | None, str]] = {
    "UNAUTHORIZED": ("401", "Unauthorized"),
    "ACCESS_DENIED": ("403", "Forbidden"),
    "MISSING_AUTHENTICATION_TOKEN": ("404", "RouteNotFound"),  # an unknown path or method
    "THROTTLED": ("429", "Throttled"),
    "REQUEST_TOO_LARGE": ("413", "RequestTooLarge"),
    "AUTHORIZER_FAILURE": ("503", "AuthorizerFailure"),
    "AUTHORIZER_CONFIGURATION_ERROR": ("500", "AuthorizerFailure"),
    "INTEGRATION_TIMEOUT": ("504", "GatewayTimeout"),
    "DEFAULT_4XX": (None, "RequestRefused"),
    "DEFAULT_5XX": (None, "InternalError"),
}
RETRY_AFTER = {"THROTTLED", "AUTHORIZER_FAILURE", "DEFAULT_5XX"}  # the ones that may be 429 or 503
# Lambda's default concurrency per account and region, and what must stay unreserved.
ACCOUNT_CONCURRENCY, UNRESERVED_MINIMUM = 1000, 100
RESERVED = {
    "app.app": "ApiReservedConcurrency",
    "app.bearer": "AuthorizerReservedConcurrency",
    "app.build": "BuildReservedConcurrency",
    "app.build_segment": "BuildSegmentReservedConcurrency",
}


def _authorizer() -> Any:
    """The app's one authorizer (Chalice's BuiltinAuthConfig)."""
    (config,) = application.app.builtin_auth_handlers
    return config


@pytest.fixture(scope="session")
def package() -> Packaged:
    return packaged()  # packaged once per test run, shared with tests/deploy/test_packaging.py


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in template["Resources"].items() if spec["Type"] == kind}


def _function_id(reference: Any) -> str:
    """The logical ID a FunctionName or Arn refers to: {"Ref": X} or {"Fn::GetAtt": [X, "Arn"]}."""
    if "Ref" in reference:
        return str(reference["Ref"])
    resource, attribute = reference["Fn::GetAtt"]
    assert attribute == "Arn", reference
    return str(resource)


def _swagger(package: Packaged, kind: str) -> dict[str, Any]:
    template = getattr(package, kind)
    properties = template["Resources"]["RestAPI"]["Properties"]
    body: dict[str, Any] = properties["DefinitionBody" if kind == "sam" else "Body"]
    return body


# --- Who may call what -------------------------------------------------------------------


def _public(path: str, method: str) -> bool:
    return path in PUBLIC_PATHS or (path == LINK_PATH and method not in LINK_OWNER_METHODS)


@pytest.mark.parametrize("kind", ["sam", "cloudformation"])
def test_each_route_gets_the_authorizer_or_is_public(package: Packaged, kind: str) -> None:
    swagger = _swagger(package, kind)
    packaged_routes = {
        (path, method.upper()): operation.get("security")
        for path, operations in swagger["paths"].items()
        for method, operation in operations.items()
    }
    app_routes = {
        (path, method): entry
        for path, methods in application.app.routes.items()
        for method, entry in methods.items()
    }
    assert set(packaged_routes) == set(app_routes)
    assert {route for route in app_routes if _public(*route)} >= {("/health", "GET"), (LINK_PATH, "GET")}
    for route, security in packaged_routes.items():
        if _public(*route):
            assert security is None, f"{route} is public, but packaged with {security}"
            assert app_routes[route].authorizer is None, route
        else:
            assert security == [{_authorizer().name: []}], f"{route} is packaged with {security}"
            assert app_routes[route].authorizer is not None, route


@pytest.mark.parametrize("kind", ["sam", "cloudformation"])
def test_the_only_security_scheme_is_the_custom_lambda_authorizer(package: Packaged, kind: str) -> None:
    template = getattr(package, kind)
    schemes = _swagger(package, kind)["securityDefinitions"]
    config = _authorizer()
    # Chalice turns an authorizer named `api_key` into API Gateway's usage-plan key check
    # ({"type": "apiKey", "name": "x-api-key"}), which would answer 403 to every Bearer key.
    usage_plan = [name for name, s in schemes.items() if s.get("x-amazon-apigateway-authtype") != "custom"]
    assert not usage_plan, f"API Gateway's own key check: {usage_plan}"
    assert "x-amazon-apigateway-api-key-source" not in _swagger(package, kind)
    assert list(schemes) == [config.name]
    scheme = schemes[config.name]
    assert scheme["x-amazon-apigateway-authtype"] == "custom"
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "token"

    function_id = functions(template)[config.handler_string]
    uri = authorizer["authorizerUri"]["Fn::Sub"]
    assert uri == (
        "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
        f"${{{function_id}.Arn}}/invocations"
    )
    assert authorizer["authorizerResultTtlInSeconds"] == config.ttl_seconds
    assert 0 < config.ttl_seconds <= AUTHORIZER_MAX_TTL_SECONDS


def test_api_gateway_may_invoke_the_authorizer_and_the_handler(package: Packaged) -> None:
    template = package.cloudformation
    by_handler = functions(template)
    source = {
        "Fn::Sub": [
            "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${RestAPIId}/*",
            {"RestAPIId": {"Ref": "RestAPI"}},
        ]
    }
    allowed = {
        _function_id(spec["Properties"]["FunctionName"])
        for spec in _resources(template, "AWS::Lambda::Permission").values()
        if spec["Properties"]["Principal"] == "apigateway.amazonaws.com"
        and spec["Properties"]["Action"] == "lambda:InvokeFunction"
        and spec["Properties"]["SourceArn"] == source
    }
    assert allowed == {by_handler["app.bearer"], by_handler["app.app"]}


def _render(template: str) -> Any:
    """A Gateway Response's body as API Gateway fills it, for a message with a quote in it."""
    filled = template.replace("$context.error.messageString", json.dumps('Missing "Authentication" Token'))
    assert "$" not in filled, f"an unexpected variable in {template}"
    return json.loads(filled)


def test_api_gateways_own_answers_have_the_apis_error_shape(package: Packaged) -> None:
    # SAM's GatewayResponses, as SAM puts them into the API's definition.
    sam = package.sam["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    responses = _swagger(package, "cloudformation")["x-amazon-apigateway-gateway-responses"]
    assert set(sam) == set(responses)
    assert set(responses) == set(GATEWAY_RESPONSES)
    for response_type, (status, code) in GATEWAY_RESPONSES.items():
        response = responses[response_type]
        assert response.get("statusCode") == status, response_type
        body = _render(response["responseTemplates"]["application/json"])
        # An RFC 9457 problem that keeps Code and Message; a catch-all cannot name its status.
        problem = errors.problem(code, int(status or 0), body["Message"])
        if status is None:
            del problem["status"]
        assert body == problem, response_type
        assert isinstance(body["Message"], str), response_type
        assert body["Message"], response_type
        headers = response["responseParameters"]
        assert headers["gatewayresponse.header.Cache-Control"] == "'no-store'", response_type
        assert headers["gatewayresponse.header.Content-Type"] == "'application/problem+json'", response_type
        assert ("gatewayresponse.header.Retry-After" in headers) == (response_type in RETRY_AFTER)
        # A Code that names one of the API's own errors answers that error's status.
        known = getattr(errors, code, None)
        if isinstance(known, type) and issubclass(known, errors.SatchelError):
            assert status == str(known.status), response_type
    unauthorized = responses["UNAUTHORIZED"]["responseParameters"]
    assert unauthorized["gatewayresponse.header.WWW-Authenticate"] == "'Bearer'"
    # Gateway Responses are part of the API's definition, so that each deployment carries
    # them: separate AWS::ApiGateway::GatewayResponse resources are dropped whenever
    # CloudFormation updates the definition.
    for template in (package.sam, package.cloudformation):
        assert not _resources(template, "AWS::ApiGateway::GatewayResponse")


# Which of API Gateway's answers an operation may get: throttling and a body too large on
# any, the authorizer's on the routes that need a credential. (MISSING_AUTHENTICATION_TOKEN
# answers a route the API does not have; the catch-alls name no status.)
_ANY_ROUTE = {"THROTTLED", "REQUEST_TOO_LARGE", "INTEGRATION_TIMEOUT"}
_BEARER_ROUTES = {"UNAUTHORIZED", "ACCESS_DENIED", "AUTHORIZER_FAILURE", "AUTHORIZER_CONFIGURATION_ERROR"}


def test_api_gateways_own_answers_fit_what_each_operation_documents_for_their_status(
    package: Packaged,
) -> None:
    """A generated client reads an answer by the schema its operation documents for that
    status, whoever sent it: API Gateway's own answer must fit it too (createDownload's 429
    is its quota's QuotaError, and the stage's throttle answers it as well)."""
    document = openapi.document()
    gateway = _swagger(package, "cloudformation")["x-amazon-apigateway-gateway-responses"]
    checked = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            reachable = _ANY_ROUTE | (_BEARER_ROUTES if operation.get("security") else set())
            for response_type in sorted(reachable):
                answer = operation["responses"].get(GATEWAY_RESPONSES[response_type][0])
                if answer is None:
                    continue
                if "$ref" in answer:
                    answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
                schema = answer["content"]["application/problem+json"]["schema"]
                body = _render(gateway[response_type]["responseTemplates"]["application/json"])
                jsonschema.validate(body, {**schema, "components": document["components"]})
                checked.add((response_type, path, method.upper()))
    assert ("THROTTLED", "/downloads", "POST") in checked
    assert ("UNAUTHORIZED", "/downloads", "POST") in checked


# --- Functions ----------------------------------------------------------------------------


def test_every_handler_is_a_callable_of_the_app(package: Packaged) -> None:
    handlers = functions(package.cloudformation)
    assert handlers.keys() == functions(package.sam).keys()
    for handler in handlers:
        module, _, name = handler.partition(".")
        assert module == "app", handler
        assert callable(getattr(application, name, None)), f"{handler} is no callable of app.py"
    app = application.app
    declared = {"app.app"} | {function.handler_string for function in app.pure_lambda_functions}
    declared |= {source.handler_string for source in app.event_sources}
    declared |= {authorizer.handler_string for authorizer in app.builtin_auth_handlers}
    assert set(handlers) == declared


_VARIABLES = {
    value for name, value in vars(settings).items() if name.startswith("ENV_") and isinstance(value, str)
} | set(settings.INTEGER_VARIABLES.values())
_REQUIRED_FIELDS = [
    field.name
    for field in dataclasses.fields(settings.Settings)
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
]


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {
            "SourceBucketName": "given",
            "RequestPrefix": "in/box/",
            "ServicePrincipals": '[{"tenant": "acme", "user_id": "etl"}]',
        },
    ],
)
def test_every_function_gets_every_setting_it_needs(package: Packaged, parameters: dict[str, str]) -> None:
    template = package.cloudformation
    resolver = Resolver(template, NAMES, parameters)
    assert _REQUIRED_FIELDS  # the table, the buckets, the state machine
    for handler, function_id in functions(template).items():
        environment = resolver.resolve(template["Resources"][function_id]["Properties"]["Environment"])
        variables: dict[str, str] = {name: str(value) for name, value in environment["Variables"].items()}
        unknown = sorted(set(variables) - _VARIABLES - set(ALLOCATOR_VARIABLES))
        assert not unknown, f"{handler}: settings.py reads no {unknown}"
        allocator = {name: variables[name] for name in ALLOCATOR_VARIABLES if name in variables}
        assert allocator == (ALLOCATOR_VARIABLES if handler in STREAMING_FUNCTIONS else {}), handler
        # What each function builds first: the settings (failing fast on a missing or bad
        # value), the telemetry switch, the event sources.
        loaded = settings.Settings.from_env(variables)
        for field in _REQUIRED_FIELDS:
            assert getattr(loaded, field), f"{handler}: {field} is empty"
        settings.Telemetry.from_env(variables)
        settings.EventSources.from_env(variables)
        assert loaded.stage == "prod", handler
        assert loaded.source_bucket == parameters.get("SourceBucketName", NAMES["SourceBucket"])
        assert loaded.state_machine_arn == resolver.ref("DownloadStateMachine"), handler


def test_every_placeholder_of_the_asl_file_is_a_resource_of_the_stack(package: Packaged) -> None:
    template = package.cloudformation
    machine = template["Resources"]["DownloadStateMachine"]["Properties"]
    placeholders = set(re.findall(r"\$\{([^}]+)\}", statemachine.ASL_PATH.read_text()))
    substitutions = machine["DefinitionSubstitutions"]
    assert placeholders == set(substitutions)
    for placeholder, value in substitutions.items():
        function_id = _function_id(value)
        assert template["Resources"][function_id]["Type"] == "AWS::Lambda::Function", placeholder
        handler = template["Resources"][function_id]["Properties"]["Handler"]
        assert handler == f"app.{statemachine.FUNCTIONS[placeholder]}", placeholder


def _rule_targets(template: dict[str, Any], function_id: str) -> dict[str, dict[str, Any]]:
    return {
        rule_id: spec["Properties"]
        for rule_id, spec in _resources(template, "AWS::Events::Rule").items()
        if any(_function_id(target["Arn"]) == function_id for target in spec["Properties"]["Targets"])
    }


def _events_may_invoke(template: dict[str, Any], function_id: str, rule_id: str) -> bool:
    return any(
        _function_id(spec["Properties"]["FunctionName"]) == function_id
        and spec["Properties"]["Principal"] == "events.amazonaws.com"
        and spec["Properties"]["Action"] == "lambda:InvokeFunction"
        and spec["Properties"]["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}
        for spec in _resources(template, "AWS::Lambda::Permission").values()
    )


def test_every_event_source_of_the_app_reaches_its_function(package: Packaged) -> None:
    template = package.cloudformation
    resolver = Resolver(template, NAMES)
    by_handler = functions(template)
    sources = application.app.event_sources
    assert {type(source) for source in sources} == {
        SQSEventConfig,
        CloudWatchEventConfig,
        ScheduledEventConfig,
    }
    for source in sources:
        function_id = by_handler[source.handler_string]
        if isinstance(source, SQSEventConfig):
            (mapping,) = [
                spec["Properties"]
                for spec in _resources(template, "AWS::Lambda::EventSourceMapping").values()
                if _function_id(spec["Properties"]["FunctionName"]) == function_id
            ]
            queue_id = _function_id(mapping["EventSourceArn"])
            assert template["Resources"][queue_id]["Type"] == "AWS::SQS::Queue"
            assert resolver.queue_name(queue_id) == source.queue
            assert mapping["BatchSize"] == source.batch_size
            assert mapping.get("Enabled", True) is True
            continue
        (rule_id, rule), *others = _rule_targets(template, function_id).items()
        assert not others, f"{source.handler_string} has more than one rule"
        assert rule.get("State", "ENABLED") == "ENABLED"
        assert _events_may_invoke(template, function_id, rule_id), source.handler_string
        if isinstance(source, ScheduledEventConfig):
            expression = source.schedule_expression
            assert isinstance(expression, Rate)
            assert rule["ScheduleExpression"] == expression.to_string()
        else:
            assert isinstance(source, CloudWatchEventConfig)
            pattern = resolver.resolve(rule["EventPattern"])
            for key, values in source.event_pattern.items():
                assert pattern[key] == values, key


# --- Limits ---------------------------------------------------------------------------------


def _stage(template: dict[str, Any]) -> dict[str, Any]:
    (stage,) = _resources(template, "AWS::ApiGateway::Stage").values()
    properties: dict[str, Any] = stage["Properties"]
    return properties


@pytest.mark.parametrize("parameters", [{}, {"ApiThrottlingRateLimit": "5", "ApiThrottlingBurstLimit": "10"}])
def test_the_stage_is_throttled_as_a_whole(package: Packaged, parameters: dict[str, str]) -> None:
    template = package.cloudformation
    resolver = Resolver(template, NAMES, parameters)
    (setting,) = resolver.resolve(_stage(template)["MethodSettings"])
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    rate, burst = float(setting["ThrottlingRateLimit"]), int(setting["ThrottlingBurstLimit"])
    assert 0 < rate <= burst
    if parameters:
        assert (rate, burst) == (5, 10)


def test_the_api_the_authorizer_and_the_builds_have_reserved_concurrency(package: Packaged) -> None:
    template = package.cloudformation
    by_handler = functions(template)
    defaults = Resolver(template, NAMES)
    reserved = {}
    for handler, parameter in RESERVED.items():
        properties = template["Resources"][by_handler[handler]]["Properties"]
        value = defaults.resolve(properties["ReservedConcurrentExecutions"])
        assert int(value) > 0, handler
        reserved[handler] = int(value)
        # 0 means none reserved (a reservation of 0 would stop the function altogether).
        unset = Resolver(template, NAMES, {parameter: "0"})
        assert unset.resolve(properties["ReservedConcurrentExecutions"]) is NO_VALUE, handler
        assert (
            int(
                Resolver(template, NAMES, {parameter: "7"}).resolve(
                    properties["ReservedConcurrentExecutions"]
                )
            )
            == 7
        )
    others = set(by_handler) - set(RESERVED)
    assert not [
        h
        for h in others
        if "ReservedConcurrentExecutions" in template["Resources"][by_handler[h]]["Properties"]
    ]
    # The defaults fit an account with Lambda's default concurrency.
    assert sum(reserved.values()) <= ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM
    # The workflow's own fan-out (the Distributed Map's concurrency, a setting the payload
    # carries) fits under the segment builders' cap.
    map_state = statemachine.load()["States"]["BuildSegments"]
    assert map_state["MaxConcurrencyPath"] == "$.segments.concurrency"
    assert Settings.map_concurrency <= reserved["app.build_segment"]


def test_access_logs_name_the_route_never_the_path(package: Packaged) -> None:
    template = package.cloudformation
    resolver = Resolver(template, NAMES)
    access = _stage(template)["AccessLogSetting"]
    log_group_id = access["DestinationArn"]["Fn::GetAtt"][0]
    log_group = template["Resources"][log_group_id]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert int(resolver.resolve(log_group["Properties"]["RetentionInDays"])) > 0
    line = json.loads(access["Format"])  # one JSON object a request
    variables = set(line.values())
    assert {
        "$context.requestId",
        "$context.status",
        "$context.resourcePath",
        "$context.httpMethod",
    } <= variables
    # $context.path (and what carries it) holds /links/<token>: the token is the link's secret.
    leaks = [
        value
        for value in variables
        if re.search(r"\$context\.(path|requestOverride)|\$input|\$method", value)
    ]
    assert not leaks, leaks
    assert all(re.fullmatch(r"\$context\.[A-Za-z.]+", value) for value in variables), variables
    # The stage logs only once the region's API Gateway logging role is set: the stack sets
    # it (first) unless told it is already set.
    tag = {tag["Key"]: tag["Value"] for tag in log_group["Properties"]["Tags"]}["satchel:api-gateway-account"]
    assert tag == {"Fn::If": ["CreateApiGatewayLogsRole", {"Ref": "ApiGatewayAccount"}, "existing"]}
    account = template["Resources"]["ApiGatewayAccount"]
    assert account["Condition"] == "CreateApiGatewayLogsRole"
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayLogsRole", "Arn"]}
    assert resolver.condition("CreateApiGatewayLogsRole")
    assert not Resolver(template, NAMES, {"ApiGatewayAccountLogsRole": "existing"}).condition(
        "CreateApiGatewayLogsRole"
    )


def _tasks(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for name, state in states.items():
        if state["Type"] == "Task":
            found[name] = state
        if "ItemProcessor" in state:
            found.update(_tasks(state["ItemProcessor"]["States"]))
    return found


def _longest_wait(retrier: dict[str, Any]) -> float:
    """Seconds a retrier waits in all, before its attempts run out (without jitter)."""
    interval, rate = retrier.get("IntervalSeconds", 1), retrier.get("BackoffRate", 2.0)
    cap = retrier.get("MaxDelaySeconds", float("inf"))
    return float(sum(min(interval * rate**attempt, cap) for attempt in range(retrier.get("MaxAttempts", 3))))


def test_a_throttled_build_waits_for_a_builder_instead_of_failing() -> None:
    # Reserved concurrency caps the builders: a step Lambda throttles must wait until one is
    # free (a run lasts at most 15 minutes), and give up before cleanup's deadline does.
    capped = {f"${{{p}}}" for p, name in statemachine.FUNCTIONS.items() if f"app.{name}" in RESERVED}
    tasks = {
        name: task
        for name, task in _tasks(statemachine.load()["States"]).items()
        if task["Parameters"]["FunctionName"] in capped
    }
    assert len(tasks) == len(capped) == 2
    for name, task in tasks.items():
        retrier = next(r for r in task["Retry"] if "Lambda.TooManyRequestsException" in r["ErrorEquals"])
        # FULL jitter waits, on average, half of each delay.
        average = _longest_wait(retrier) / (2 if retrier.get("JitterStrategy") == "FULL" else 1)
        assert average >= 15 * 60, name
        assert _longest_wait(retrier) < settings.Settings.build_deadline_seconds, name
