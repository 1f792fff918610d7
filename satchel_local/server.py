"""The whole stack in one process on loopback: moto's server, the real state machine with
the real handlers, demo data, the Chalice app served over HTTP, and the event sources
(the requests queue, EventBridge's rules, the cleanup schedule) feeding their functions.

Start order: bind the API port (fail fast before anything is spent), start moto and
point every boto3 client at it, provision, seed, serve, start the event sources, and
last write the state file, which is therefore also the readiness signal. Stop order:
close the API and the event sources (nothing new can start an execution), stop running
executions and wait for their handlers, stop moto.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shlex
import signal
import socket
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import ClientError
from chalice.app import Chalice
from chalice.cli.factory import CLIFactory
from chalice.local import ChaliceRequestHandler, LocalDevServer, RouteMatcher, create_local_server
from chalice.package import YAMLTemplateSerializer
from moto.server import ThreadedMotoServer

from chalicelib.api.http import PROBLEM_JSON, SECURITY_HEADERS
from chalicelib.core import clients
from chalicelib.core.errors import problem
from chalicelib.storage.keys import KeyStore
from chalicelib.storage.secrets import WebhookSecrets
from satchel_local import lambdas, seed
from satchel_local.eventsources import EventSources
from satchel_local.issuer import DISCOVERY_PATH, JWKS_PATH, TOKEN_PATH, RunningIssuer
from satchel_local.stack import MOTO_CONFIG, REGION, Stack, provision

log = logging.getLogger("satchel_local")

PROJECT_DIR = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# Variables that would send boto3 anywhere but the emulator, or to a real account.
_FOREIGN_AWS_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_IDLE_TIMEOUT_SECONDS = 30.0
_SIGNAL_CHECK_SECONDS = 0.5  # how soon the main thread notices SIGINT or SIGTERM at the latest


@dataclass(frozen=True)
class Options:
    host: str = LOOPBACK
    port: int = 8000  # 0: any free port (the state file tells which)
    moto_port: int = 5000
    state_file: Path = Path(".satchel-local.json")
    stage: str = "local"
    demo_rows: int = seed.DEMO_ROWS  # transactions seeded for tenant acme
    # Seconds between two runs of the cleanup function (deployed: every few minutes); 0: never.
    cleanup_interval: float = 5.0
    # How callers sign in: "keys" (API keys), or "oidc" (tokens of a demo issuer on issuer_port).
    auth: str = "keys"
    issuer_port: int = 8002  # 0: any free port


class StartupError(Exception):
    """The stack cannot start (a port in use, most often); the message says why."""


def point_aws_at_emulator(moto_port: int) -> None:
    """Dummy credentials and the emulator's endpoint for every boto3 client in this process."""
    for name in list(os.environ):
        # AWS_ENDPOINT_URL_S3 and friends beat AWS_ENDPOINT_URL; none may point elsewhere.
        if name in _FOREIGN_AWS_VARIABLES or name.startswith("AWS_ENDPOINT_URL_"):
            del os.environ[name]
    os.environ.pop("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{moto_port}",
            # moto's Step Functions interpreter calls Lambda at http://localhost:$MOTO_PORT.
            "MOTO_PORT": str(moto_port),
        }
    )
    clients.reset()


def port_taken(host: str, port: int, error: OSError, make_variable: str, option: str) -> StartupError:
    """A busy port, and how to choose another: `make run` and `python -m satchel_local` both."""
    return StartupError(
        f"{host}:{port} is not available: {error.strerror}. "
        f"Choose another port: make run {make_variable}={port + 1} "
        f"(python -m satchel_local {option} {port + 1}; 0 picks any free one)"
    )


def ensure_port_free(host: str, port: int) -> None:
    """moto's server thread dies silently on a busy port and its start() then waits forever."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The servers set SO_REUSEADDR too: a port in TIME_WAIT is free for them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise port_taken(host, port, error, "MOTO_PORT", "--moto-port") from None


def configure_moto(moto_port: int) -> None:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{moto_port}/moto-api/config",
        data=json.dumps(MOTO_CONFIG).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status >= 300:  # moto answers 201
            raise StartupError(f"moto refused its configuration: HTTP {response.status}")


MERGE_TEMPLATE = PROJECT_DIR / "deploy" / "template.yaml"


@functools.cache
def gateway_responses() -> dict[str, dict[str, Any]]:
    """API Gateway's own answers as the deployed stack gives them (deploy/template.yaml's
    GatewayResponses): the local stack answers the same status, headers and body."""
    template = YAMLTemplateSerializer().load_template(MERGE_TEMPLATE.read_text(), str(MERGE_TEMPLATE))
    answers: dict[str, dict[str, Any]] = template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    return answers


def gateway_answer(code: int, error_type: str | None) -> str | None:
    """Which of API Gateway's answers Chalice's local imitation of it gave, if any."""
    if error_type == "AccessDeniedException":
        return "ACCESS_DENIED"  # the authorizer refused the key
    if error_type == "UnauthorizedException":
        # 401: no Authorization header; 403: no route (API Gateway's "Missing Authentication Token")
        return "UNAUTHORIZED" if code == 401 else "MISSING_AUTHENTICATION_TOKEN"
    return None


class RequestHandler(ChaliceRequestHandler):
    """`chalice local`'s handler, with what the API answers everywhere: a method no route of
    the path has is 405 with `Allow` and a problem body (`Code`, `Message`) (http.server's own answer
    to a method it has no `do_` for, such as TRACE, is a 501 HTML page), and every answer
    carries SECURITY_HEADERS, the authorizer's refusals included."""

    def __init__(
        self, request: Any, client_address: Any, server: Any, app_object: Chalice, config: Any
    ) -> None:
        self._routes = app_object.routes  # before super(): it serves the request at once
        super().__init__(request, client_address, server, app_object, config)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any method http.server has no handler for
            return self._satchel_handle
        raise AttributeError(name)

    def _allowed(self) -> list[str] | None:
        """The methods of the route this path matches; None when no route matches."""
        try:
            route = RouteMatcher(list(self._routes)).match_route(self.path).route
        except ValueError:
            return None
        return sorted(self._routes[route])

    def _satchel_handle(self) -> None:
        allowed = self._allowed()
        if allowed is None or self.command in allowed or self.command == "OPTIONS":
            # Unknown paths get Chalice's answer (API Gateway's 403); OPTIONS its CORS preflight.
            self._generic_handle()
            return
        self._parse_payload()  # read the body off the connection, which stays open
        message = f"{self.command} is not allowed here; allowed: {', '.join(allowed)}"
        body = problem("MethodNotAllowed", 405, message)
        headers = {"Content-Type": PROBLEM_JSON, "Allow": ", ".join(allowed)}
        # An answer to HEAD has no body: one sent anyway would be read as the next response.
        self._send_http_response(405, headers, None if self.command == "HEAD" else json.dumps(body))

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _satchel_handle

    def _send_http_response(self, code: int, headers: Any, body: str | bytes | None) -> None:
        answer = gateway_answer(code, headers.get("x-amzn-ErrorType"))
        if answer is not None:
            response = gateway_responses()[answer]
            code = int(response["StatusCode"])
            headers.pop("Content-Type", None)  # Chalice's; the Gateway Response names its own
            for name, value in response["ResponseParameters"]["Headers"].items():
                headers[name] = value.strip("'")  # a static value in API Gateway's quoting
            template = response["ResponseTemplates"]["application/json"]
            body = None if self.command == "HEAD" else template
        super()._send_http_response(code, headers, body)

    def _send_headers(self, headers: dict[str, Any]) -> None:
        present = {name.lower() for name in headers}
        for name, value in SECURITY_HEADERS.items():
            if name.lower() not in present:
                headers[name] = value
        super()._send_headers(headers)


def bind_api(host: str, port: int, stage: str) -> LocalDevServer:
    """The Chalice app on a bound (not yet serving) socket, configured as `chalice local` does."""
    # environ=os.environ: the stage's environment_variables apply to this process, as in
    # `chalice local`, and the handlers read them from os.environ.
    factory = CLIFactory(str(PROJECT_DIR), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    try:
        local = create_local_server(config.chalice_app, config, host, port)
    except OSError as error:
        raise port_taken(host, port, error, "PORT", "--port") from None
    # create_local_server takes no handler class; the server builds one per request from this.
    local.server.RequestHandlerClass = functools.partial(
        RequestHandler, app_object=local.app_object, config=config
    )
    return local


@dataclass
class LocalStack:
    options: Options
    stack: Stack | None = None
    users: dict[str, seed.User] = field(default_factory=dict)
    _api: LocalDevServer | None = None
    _api_thread: threading.Thread | None = None
    _moto: ThreadedMotoServer | None = None
    _moto_port: int = 0
    _event_sources: EventSources | None = None
    _written_state: str | None = None
    _issuer: RunningIssuer | None = None

    @property
    def api_url(self) -> str:
        assert self._api is not None, "start() first"
        return f"http://{self.options.host}:{self._api.server.server_address[1]}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self._moto_port}"

    def start(self) -> None:
        if self.options.auth == "oidc":
            self._start_issuer()  # before the app is loaded: its settings name the issuer
        self._api = bind_api(self.options.host, self.options.port, self.options.stage)
        self._start_moto()
        self.stack = provision(self.options.stage)
        os.environ.update(self.stack.environment())
        self.users = seed.seed_users(KeyStore(clients.table(self.stack.table)))
        store = WebhookSecrets(clients.table(self.stack.table), clients.kms(), self.stack.kms_key_id)
        self.stack = dataclasses.replace(self.stack, webhook_secrets=seed.seed_webhook_secrets(store))
        seed.seed_sources(clients.s3(), self.stack.source_bucket)
        seed.seed_dataset(self.options.stage, REGION, self.options.demo_rows)
        self._api_thread = threading.Thread(target=self._api.server.serve_forever, name="api", daemon=True)
        self._api_thread.start()
        self._event_sources = EventSources(self.stack, self.options.cleanup_interval)
        self._event_sources.start()
        self._write_state()

    def _start_issuer(self) -> None:
        try:
            self._issuer = RunningIssuer.start(self.options.host, self.options.issuer_port)
        except OSError as error:
            raise port_taken(
                self.options.host, self.options.issuer_port, error, "ISSUER_PORT", "--issuer-port"
            ) from None
        # The handlers read their settings from os.environ, as `chalice local` has them.
        os.environ.update(self._issuer.issuer.environment())

    def _start_moto(self) -> None:
        ensure_port_free(LOOPBACK, self.options.moto_port)
        self._moto = ThreadedMotoServer(ip_address=LOOPBACK, port=self.options.moto_port, verbose=False)
        self._moto.start()
        self._moto_port = self._moto.get_host_and_port()[1]
        point_aws_at_emulator(self._moto_port)
        configure_moto(self._moto_port)
        lambdas.install()

    def state(self) -> dict[str, Any]:
        """What .satchel-local.json holds: where things are, and who may call."""
        assert self.stack is not None, "start() first"
        return {
            "api_url": self.api_url,
            "s3_endpoint": self.s3_endpoint,
            # Every AWS service of the emulator answers there, S3 as well as SQS.
            "aws_endpoint": self.s3_endpoint,
            "region": REGION,
            "source_bucket": self.stack.source_bucket,
            "artifact_bucket": self.stack.artifact_bucket,
            "requests_queue_url": self.stack.requests_queue_url,
            "requests_dead_letter_queue_url": self.stack.requests_dead_letter_queue_url,
            "events_queue_url": self.stack.events_queue_url,
            "events_dead_letter_queue_url": self.stack.events_dead_letter_queue_url,
            # Put "Satchel Download Requested" events here, source "satchel.requests.<tenant>".
            "request_bus": self.stack.request_bus,
            "manifests_queue_url": self.stack.manifests_queue_url,
            "manifests_dead_letter_queue_url": self.stack.manifests_dead_letter_queue_url,
            "state_changes_queue_url": self.stack.state_changes_queue_url,
            "deliveries_queue_url": self.stack.deliveries_queue_url,
            "deliveries_dead_letter_queue_url": self.stack.deliveries_dead_letter_queue_url,
            # Each demo tenant's own signing secret (Standard Webhooks, whsec_...), as its
            # admin's POST /tenant/webhook-secret showed it.
            "webhook_secrets": dict(self.stack.webhook_secrets),
            "cleanup_interval_seconds": self.options.cleanup_interval,
            "users": {name: user.describe() for name, user in self.users.items()},
            "auth_mode": self.options.auth,
            **({"oidc": self._oidc_state()} if self._issuer is not None else {}),
        }

    def _oidc_state(self) -> dict[str, Any]:
        """Where the demo issuer is, and how to get a token from it (satchel_local/issuer.py)."""
        assert self._issuer is not None
        issuer = self._issuer.issuer
        return {
            "issuer": issuer.url,
            "audience": issuer.audience,
            "discovery_url": f"{issuer.url}{DISCOVERY_PATH}",
            "jwks_url": f"{issuer.url}{JWKS_PATH}",
            "token_url": f"{issuer.url}{TOKEN_PATH}",
            # A demo: it signs for the seeded users with no password; not an identity provider.
            "get_a_token": f'POST {issuer.url}{TOKEN_PATH} {{"user": "alice"}}',
        }

    def _write_state(self) -> None:
        # Written whole and renamed into place: a reader never sees half a file, and its
        # appearance means the stack is ready.
        text = json.dumps(self.state(), indent=2, ensure_ascii=False) + "\n"
        path = self.options.state_file
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
        self._written_state = text

    def stop(self) -> None:
        """Undo start(), however far it got. Safe to call twice."""
        if self._event_sources is not None:
            self._event_sources.request_stop()  # they notice within a second, while the API closes
        self._stop_api()
        self._stop_event_sources()
        self._stop_executions()
        self._stop_moto()
        self._stop_issuer()
        self._remove_state()

    def _stop_issuer(self) -> None:
        if self._issuer is not None:
            self._issuer.stop()
            self._issuer = None

    def _stop_api(self) -> None:
        if self._api is None:
            return
        if self._api_thread is not None:
            self._api.shutdown()  # returns once serve_forever has returned
            self._api_thread.join()
        self._api.server.server_close()
        self._api, self._api_thread = None, None

    def _stop_event_sources(self) -> None:
        """Wait for the pollers: one may be starting a download, whose execution is stopped next."""
        if self._event_sources is None:
            return
        if not self._event_sources.join(_IDLE_TIMEOUT_SECONDS):
            log.warning("an event source was still busy after %.0f s; stopping anyway", _IDLE_TIMEOUT_SECONDS)
        self._event_sources = None

    def _stop_executions(self) -> None:
        """Executions run in moto's threads: stop them while moto still answers their handlers."""
        if self.stack is None or self._moto is None:
            return
        sfn = clients.stepfunctions()
        paginator = sfn.get_paginator("list_executions")
        pages = paginator.paginate(stateMachineArn=self.stack.state_machine_arn, statusFilter="RUNNING")
        for page in pages:
            for execution in page["executions"]:
                log.info("stopping execution %s", execution["name"])
                with contextlib.suppress(ClientError):  # it may have ended meanwhile
                    sfn.stop_execution(executionArn=execution["executionArn"], cause="local stack stopped")
        # A handler already running finishes its step; let it, before its emulator goes.
        if not lambdas.wait_idle(_IDLE_TIMEOUT_SECONDS):
            log.warning("a handler was still running after %.0f s; stopping anyway", _IDLE_TIMEOUT_SECONDS)

    def _stop_moto(self) -> None:
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def _remove_state(self) -> None:
        """The keys die with the emulator: remove the file, unless someone changed it since."""
        path, written = self.options.state_file, self._written_state
        self._written_state = None
        if written is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if path.read_text(encoding="utf-8") == written:
                path.unlink()


def how_to_try(state: dict[str, Any], state_file: Path) -> str:
    """A copy-paste session with curl, as alice, over her tenant's seeded objects: with her API
    key, or (--auth oidc) with a token from the demo issuer."""
    api, key = state["api_url"], state["users"]["alice"]["api_key"]
    body = json.dumps(
        {"type": "zip", "params": {"keys": list(seed.DEMO_KEYS)}}, ensure_ascii=False, separators=(",", ":")
    )
    oidc = state.get("oidc")
    auth = '-H "Authorization: Bearer $TOKEN"' if oidc else '-H "Authorization: Bearer $KEY"'
    users = ", ".join(
        f"{name} ({user['tenant']}{', ' + ', '.join(user['roles']) if user['roles'] else ''})"
        for name, user in state["users"].items()
    )
    read_id = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])'"
    interval = state["cleanup_interval_seconds"]
    cleanup = f"every {interval:g} s (--cleanup-interval)" if interval > 0 else "off (--cleanup-interval 0)"
    return "\n".join(
        [
            "",
            "Satchel is running locally.",
            f"  API          {api}",
            f"  S3 emulator  {state['s3_endpoint']}   source bucket: {state['source_bucket']}",
            f"  users        {users}",
            f"  keys         {state_file}  (all users' API keys; removed when this stops)"
            + ("; refused: sign-in is OIDC" if oidc else ""),
            f"  requests     {state['requests_queue_url']}  (an SQS message starts a download)",
            f"  request bus  {state['request_bus']}  (so does an event, source satchel.requests.<tenant>)",
            f"  cleanup      {cleanup}",
            "",
            *(_oidc_lines(oidc) if oidc else []),
            "Try it as alice:",
            "",
            f"  API={api}",
            *(_token_lines(oidc) if oidc else [f"  KEY={key}"]),
            "",
            "  # create a zip of three seeded objects; the answer holds its id",
            f"  curl -s -X POST $API/downloads {auth} -H 'Content-Type: application/json' \\",
            f"       -d {shlex.quote(body)}",
            "",
            "  # or keep the id for the next steps",
            f"  ID=$(curl -s -X POST $API/downloads {auth} -H 'Content-Type: application/json' \\",
            f"       -d {shlex.quote(body)} | {read_id})",
            "",
            '  # poll until "state" is "DONE"',
            f"  curl -s $API/downloads/$ID {auth}",
            "",
            "  # download it: a 302 to a short-lived presigned URL on the S3 emulator",
            f"  curl -L -o out.zip $API/downloads/$ID/file {auth}",
            "  python3 -m zipfile -l out.zip",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
    )


# The command line as the banner prints it (tests/e2e/test_local_oidc.py runs it).
SATCHEL_AS_ALICE = ".venv/bin/satchel --as alice list"


def _oidc_lines(oidc: dict[str, Any]) -> list[str]:
    return [
        "Sign-in is OIDC (--auth oidc): the API takes only tokens of the demo issuer",
        f"  issuer       {oidc['issuer']}  (audience {oidc['audience']})",
        f'  tokens       POST {oidc["token_url"]} {{"user": "alice"}} (any seeded user)',
        f"  satchel      {SATCHEL_AS_ALICE}  (--as gets the user's token from the issuer)",
        "  A DEMO: it signs for the seeded users with no password. It is not an identity provider.",
        "",
    ]


def _token_lines(oidc: dict[str, Any]) -> list[str]:
    read_token = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id_token\"])'"
    return [
        f"  TOKEN=$(curl -s -X POST {oidc['token_url']} -H 'Content-Type: application/json' \\",
        f'       -d \'{{"user":"alice"}}\' | {read_token})',
    ]


def _idle_sweep(record: logging.LogRecord) -> bool:
    """False for the line of a cleanup run that found nothing to do."""
    if record.msg != "cleanup: %s":
        return True
    report = record.args if isinstance(record.args, Mapping) else (record.args or [{}])[0]
    return not isinstance(report, Mapping) or any(report.values())


def _quiet_libraries() -> None:
    # Keep the API's access log (as `chalice local` prints it); silence the emulator's own
    # per-request log, which the state machine's Lambda calls would flood.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("werkzeug", "botocore", "boto3", "urllib3", "moto"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Cleanup runs every few seconds here, not every few minutes: print only what it did.
    logging.getLogger("chalicelib.triggers.cleanup").addFilter(_idle_sweep)


def _on_signal(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        # A second Ctrl-C during the orderly stop aborts it at once.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run(options: Options) -> int:
    """Start, tell the user how to try it, wait for SIGINT or SIGTERM, stop. The exit status."""
    _quiet_libraries()
    stop = threading.Event()
    _on_signal(stop)  # before start(): a signal while starting still stops cleanly
    local = LocalStack(options)
    try:
        local.start()
        print(how_to_try(local.state(), options.state_file), flush=True)
        # Timed: a signal the kernel hands to another thread only flags the main thread for
        # its next bytecode, which an untimed lock wait never reaches (the stop then hung).
        while not stop.wait(_SIGNAL_CHECK_SECONDS):
            pass
        print("Stopping...", flush=True)
    except StartupError as error:
        log.error("cannot start: %s", error)
        return 1
    finally:
        local.stop()
    print("Stopped.", flush=True)
    return 0
