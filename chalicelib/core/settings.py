"""Settings: one frozen object built from the environment, failing fast on what is missing."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from chalicelib.core.errors import ConfigurationError
from chalicelib.core.models import Principal
from chalicelib.core.names import PRINCIPAL_ID_PATTERN, is_principal_id

# Every environment variable Satchel reads is named here and nowhere else.
ENV_STAGE = "SATCHEL_STAGE"
ENV_TABLE = "SATCHEL_TABLE"
ENV_ARTIFACT_BUCKET = "SATCHEL_ARTIFACT_BUCKET"
ENV_SOURCE_BUCKET = "SATCHEL_SOURCE_BUCKET"
ENV_STATE_MACHINE_ARN = "SATCHEL_STATE_MACHINE_ARN"
ENV_API_PREFIX = "SATCHEL_API_PREFIX"
ENV_PUBLIC_URL = "SATCHEL_PUBLIC_URL"
ENV_DATASETS = "SATCHEL_DATASETS"
ENV_EVENT_BUS = "SATCHEL_EVENT_BUS"
ENV_REQUEST_PREFIX = "SATCHEL_REQUEST_PREFIX"
ENV_SERVICE_PRINCIPALS = "SATCHEL_SERVICE_PRINCIPALS"
ENV_REQUEST_BUS = "SATCHEL_REQUEST_BUS"
ENV_QUEUE_SENDERS = "SATCHEL_QUEUE_SENDERS"
ENV_CALLBACK_ALLOW_LOOPBACK = "SATCHEL_CALLBACK_ALLOW_LOOPBACK"
ENV_CALLBACK_PORTS = "SATCHEL_CALLBACK_PORTS"
ENV_KMS_KEY_ID = "SATCHEL_KMS_KEY_ID"

# Sign-in (chalicelib/api/auth.py). The mode is also read when the app is packaged: an `iam`
# stage's routes use API Gateway's AWS_IAM authorization instead of the bearer authorizer.
ENV_AUTH_MODE = "SATCHEL_AUTH_MODE"
ENV_KEY_LAST_USED_SECONDS = "SATCHEL_KEY_LAST_USED_SECONDS"
ENV_OIDC_ISSUER = "SATCHEL_OIDC_ISSUER"
ENV_OIDC_AUDIENCE = "SATCHEL_OIDC_AUDIENCE"
ENV_OIDC_JWKS_URL = "SATCHEL_OIDC_JWKS_URL"
ENV_OIDC_ALGORITHMS = "SATCHEL_OIDC_ALGORITHMS"
ENV_OIDC_LEEWAY_SECONDS = "SATCHEL_OIDC_LEEWAY_SECONDS"
ENV_OIDC_TENANT_CLAIM = "SATCHEL_OIDC_TENANT_CLAIM"
ENV_OIDC_TENANT = "SATCHEL_OIDC_TENANT"
ENV_OIDC_USER_CLAIM = "SATCHEL_OIDC_USER_CLAIM"
ENV_OIDC_ROLES_CLAIM = "SATCHEL_OIDC_ROLES_CLAIM"
ENV_OIDC_ADMIN_VALUE = "SATCHEL_OIDC_ADMIN_VALUE"
ENV_OIDC_JWKS_CACHE_SECONDS = "SATCHEL_OIDC_JWKS_CACHE_SECONDS"
ENV_OIDC_JWKS_REFRESH_SECONDS = "SATCHEL_OIDC_JWKS_REFRESH_SECONDS"

# The deliveries queue (chalicelib/notify/delivery.py) and its dead-letter queue, by URL.
ENV_DELIVERIES_QUEUE_URL = "SATCHEL_DELIVERIES_QUEUE_URL"
ENV_DELIVERIES_DEAD_LETTER_QUEUE_URL = "SATCHEL_DELIVERIES_DEAD_LETTER_QUEUE_URL"

# Read when the app is packaged, since Chalice fixes event sources at that time.
ENV_REQUESTS_QUEUE = "SATCHEL_REQUESTS_QUEUE"
ENV_DELIVERIES_QUEUE = "SATCHEL_DELIVERIES_QUEUE"
ENV_CLEANUP_RATE_MINUTES = "SATCHEL_CLEANUP_RATE_MINUTES"

# Read when a handler first runs (chalicelib/core/observability.py), before any Settings exist.
ENV_TRACING = "SATCHEL_TRACING"


@dataclass(frozen=True)
class EventSources:
    requests_queue: str = "satchel-requests"
    # The queue the `deliver` function reads (webhook deliveries, chalicelib/notify/delivery.py).
    deliveries_queue: str = "satchel-deliveries"
    cleanup_rate_minutes: int = 5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EventSources:
        env = os.environ if environ is None else environ
        return cls(
            requests_queue=env.get(ENV_REQUESTS_QUEUE) or cls.requests_queue,
            deliveries_queue=env.get(ENV_DELIVERIES_QUEUE) or cls.deliveries_queue,
            cleanup_rate_minutes=int(env.get(ENV_CLEANUP_RATE_MINUTES) or cls.cleanup_rate_minutes),
        )


AUTH_MODES = ("keys", "oidc", "iam")
# Asymmetric algorithms only: `none` would accept an unsigned token, and an HMAC algorithm
# would let a public JWKS key be used as a shared secret (algorithm confusion).
OIDC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def auth_mode(environ: Mapping[str, str] | None = None) -> str:
    """How callers sign in on this stage: `keys` (default), `oidc` or `iam`."""
    env = os.environ if environ is None else environ
    mode = (env.get(ENV_AUTH_MODE) or "keys").strip().lower()
    if mode not in AUTH_MODES:
        raise ConfigurationError(f"{ENV_AUTH_MODE} must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class SignIn:
    """How callers prove who they are, and how that maps to a principal (docs/sign-in.md)."""

    mode: str = "keys"
    # keys: a key's last use is written at most once in this many seconds.
    key_last_used_seconds: int = 300
    # oidc: whose tokens, for whom, signed how; and which claims name the principal.
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_algorithms: tuple[str, ...] = ("RS256",)
    oidc_leeway_seconds: int = 60
    oidc_tenant_claim: str = "tenant"
    oidc_tenant: str = ""  # every token's tenant, for an issuer that serves one tenant
    oidc_user_claim: str = "sub"
    oidc_roles_claim: str = "roles"
    oidc_admin_value: str = "admin"
    oidc_jwks_cache_seconds: int = 3600
    oidc_jwks_refresh_seconds: int = 60

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SignIn:
        env = os.environ if environ is None else environ
        mode = auth_mode(env)

        def seconds(name: str, default: int) -> int:
            raw = env.get(name)
            if not raw:
                return default
            if not raw.isdigit():
                raise ConfigurationError(f"{name} must be a whole number of seconds, got {raw!r}")
            return int(raw)

        issuer = (env.get(ENV_OIDC_ISSUER) or "").rstrip("/")
        algorithms = tuple(
            part.strip() for part in (env.get(ENV_OIDC_ALGORITHMS) or "RS256").split(",") if part.strip()
        )
        sign_in = cls(
            mode=mode,
            key_last_used_seconds=seconds(ENV_KEY_LAST_USED_SECONDS, cls.key_last_used_seconds),
            oidc_issuer=issuer,
            oidc_audience=env.get(ENV_OIDC_AUDIENCE) or "",
            # Cognito user pools publish their keys here; other issuers name theirs.
            oidc_jwks_url=env.get(ENV_OIDC_JWKS_URL) or (f"{issuer}/.well-known/jwks.json" if issuer else ""),
            oidc_algorithms=algorithms,
            oidc_leeway_seconds=seconds(ENV_OIDC_LEEWAY_SECONDS, cls.oidc_leeway_seconds),
            oidc_tenant_claim=env.get(ENV_OIDC_TENANT_CLAIM) or cls.oidc_tenant_claim,
            oidc_tenant=env.get(ENV_OIDC_TENANT) or "",
            oidc_user_claim=env.get(ENV_OIDC_USER_CLAIM) or cls.oidc_user_claim,
            oidc_roles_claim=env.get(ENV_OIDC_ROLES_CLAIM) or cls.oidc_roles_claim,
            oidc_admin_value=env.get(ENV_OIDC_ADMIN_VALUE) or cls.oidc_admin_value,
            oidc_jwks_cache_seconds=seconds(ENV_OIDC_JWKS_CACHE_SECONDS, cls.oidc_jwks_cache_seconds),
            oidc_jwks_refresh_seconds=seconds(ENV_OIDC_JWKS_REFRESH_SECONDS, cls.oidc_jwks_refresh_seconds),
        )
        sign_in._check()
        return sign_in

    def _check(self) -> None:
        if self.mode != "oidc":
            return
        missing = [
            name
            for name, value in (
                (ENV_OIDC_ISSUER, self.oidc_issuer),
                (ENV_OIDC_AUDIENCE, self.oidc_audience),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(f"{ENV_AUTH_MODE}=oidc needs {', '.join(missing)}")
        refused = sorted(set(self.oidc_algorithms) - OIDC_ALGORITHMS)
        if refused or not self.oidc_algorithms:
            raise ConfigurationError(
                f"{ENV_OIDC_ALGORITHMS} may list only {', '.join(sorted(OIDC_ALGORITHMS))}; refused: "
                f"{', '.join(refused) or 'an empty list'}"
            )
        if self.oidc_tenant and not is_principal_id(self.oidc_tenant):
            raise ConfigurationError(f"{ENV_OIDC_TENANT} must match {PRINCIPAL_ID_PATTERN}")


@dataclass(frozen=True)
class Telemetry:
    # X-Ray traces of each invocation and of the AWS calls it makes; they reach X-Ray only
    # from a function whose tracing is Active (the stack's Tracing parameter sets both).
    tracing: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Telemetry:
        env = os.environ if environ is None else environ
        raw = env.get(ENV_TRACING, "").strip().lower()
        if raw not in ("", "true", "false"):
            raise ConfigurationError(f"{ENV_TRACING} must be true or false, got {raw!r}")
        return cls(tracing=raw == "true")


# Integer settings: field name -> environment variable.
INTEGER_VARIABLES: dict[str, str] = {
    "max_content_bytes": "SATCHEL_MAX_CONTENT_BYTES",
    "max_files": "SATCHEL_MAX_FILES",
    "max_keys": "SATCHEL_MAX_KEYS",
    "max_rows": "SATCHEL_MAX_ROWS",
    "max_table_bytes": "SATCHEL_MAX_TABLE_BYTES",
    "max_active_per_user": "SATCHEL_MAX_ACTIVE_PER_USER",
    "max_active_per_tenant": "SATCHEL_MAX_ACTIVE_PER_TENANT",
    "part_size": "SATCHEL_PART_SIZE",
    "progress_every_bytes": "SATCHEL_PROGRESS_EVERY_BYTES",
    "read_chunk_bytes": "SATCHEL_READ_CHUNK_BYTES",
    "retention_default_seconds": "SATCHEL_RETENTION_DEFAULT_SECONDS",
    "retention_min_seconds": "SATCHEL_RETENTION_MIN_SECONDS",
    "retention_max_seconds": "SATCHEL_RETENTION_MAX_SECONDS",
    "file_url_ttl_seconds": "SATCHEL_FILE_URL_TTL_SECONDS",
    "json_url_ttl_seconds": "SATCHEL_JSON_URL_TTL_SECONDS",
    "link_default_ttl_seconds": "SATCHEL_LINK_DEFAULT_TTL_SECONDS",
    "link_max_ttl_seconds": "SATCHEL_LINK_MAX_TTL_SECONDS",
    "link_max_uses": "SATCHEL_LINK_MAX_USES",
    "link_retry_after_seconds": "SATCHEL_LINK_RETRY_AFTER_SECONDS",
    "link_claim_window_seconds": "SATCHEL_LINK_CLAIM_WINDOW_SECONDS",
    "idempotency_ttl_seconds": "SATCHEL_IDEMPOTENCY_TTL_SECONDS",
    "build_deadline_seconds": "SATCHEL_BUILD_DEADLINE_SECONDS",
    "record_retention_seconds": "SATCHEL_RECORD_RETENTION_SECONDS",
    "expiring_unused_seconds": "SATCHEL_EXPIRING_UNUSED_SECONDS",
    "stale_upload_seconds": "SATCHEL_STALE_UPLOAD_SECONDS",
    "webhook_secret_grace_seconds": "SATCHEL_WEBHOOK_SECRET_GRACE_SECONDS",
    "delivery_budget_seconds": "SATCHEL_DELIVERY_BUDGET_SECONDS",
    "delivery_window_seconds": "SATCHEL_DELIVERY_WINDOW_SECONDS",
    "delivery_base_delay_seconds": "SATCHEL_DELIVERY_BASE_DELAY_SECONDS",
    "delivery_max_delay_seconds": "SATCHEL_DELIVERY_MAX_DELAY_SECONDS",
    "delivery_max_attempts": "SATCHEL_DELIVERY_MAX_ATTEMPTS",
    "fetch_concurrency": "SATCHEL_FETCH_CONCURRENCY",
    "fetch_window_bytes": "SATCHEL_FETCH_WINDOW_BYTES",
    "server_copy_min_bytes": "SATCHEL_SERVER_COPY_MIN_BYTES",
    "parallel_min_bytes": "SATCHEL_PARALLEL_MIN_BYTES",
    "parallel_min_files": "SATCHEL_PARALLEL_MIN_FILES",
    "segment_bytes": "SATCHEL_SEGMENT_BYTES",
    "segment_files": "SATCHEL_SEGMENT_FILES",
    "max_segments": "SATCHEL_MAX_SEGMENTS",
    "dry_run_seconds": "SATCHEL_DRY_RUN_SECONDS",
    "map_concurrency": "SATCHEL_MAP_CONCURRENCY",
    "handoff_reserve_ms": "SATCHEL_HANDOFF_RESERVE_MS",
}

MIB = 1024 * 1024
# The settings where 0 means off.
_MAY_BE_ZERO = frozenset({"expiring_unused_seconds"})
S3_MIN_PART_SIZE = 5 * MIB
SQS_MAX_VISIBILITY_SECONDS = 12 * 3600
# The most sources a build may read at once (SATCHEL_FETCH_CONCURRENCY). The S3 client's
# connection pool is sized from it (chalicelib/core/clients.py), so no request ever waits for
# or throws away a connection; docs/configuration.md says why the default is what it is.
MAX_FETCH_CONCURRENCY = 64


@dataclass(frozen=True)
class Settings:
    table: str
    artifact_bucket: str
    source_bucket: str
    state_machine_arn: str
    stage: str = "local"
    # Path prefix the API is served under (the API Gateway stage), for `url` and `Location`.
    api_prefix: str = ""
    # The API's public base URL (a custom domain); when empty, links are built from the request.
    public_url: str = ""
    # The datasets `export` may read, by index (SATCHEL_DATASETS: chalicelib/downloadtypes/datasets.py).
    datasets: dict[str, Dataset] = dataclasses.field(default_factory=dict)
    # The EventBridge bus Satchel's events go to (chalicelib/notify/events.py).
    event_bus: str = "default"
    # Request manifests dropped under <source bucket>/<request_prefix><tenant>/ start downloads.
    request_prefix: str = "requests/"
    # Principals that events may act as without an API key (JSON [{tenant, user_id, roles}]),
    # the only ones a trigger may act as with the tenant admin role.
    service_principals: tuple[Principal, ...] = ()
    # The custom EventBridge bus "Satchel Download Requested" events are read from.
    request_bus: str = "satchel-requests"
    # Who may send to the requests queue, for whom: SQS SenderId (before any ':') -> the
    # tenants ("acme") or users ("acme/alice") it may act for (chalicelib/triggers/senders.py).
    queue_senders: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # The KMS key (id, ARN or alias) that encrypts the tenants' webhook signing secrets.
    kms_key_id: str = ""
    # Callbacks over http to loopback (a receiver on this machine): the local stage only.
    callback_allow_loopback: bool = False
    # The ports an https callback may go to, comma-separated; loopback receivers use any.
    callback_ports: str = "443"
    # How callers sign in (SATCHEL_AUTH_MODE and the SATCHEL_OIDC_* variables).
    sign_in: SignIn = dataclasses.field(default_factory=SignIn)
    # A zip's sources: 1 TiB and a million files by default, checked in Prepare (and by a dry run).
    max_content_bytes: int = 1024 * 1024 * MIB
    max_files: int = 1_000_000
    # Where events owed a webhook are queued for the `deliver` function, and where it puts
    # those it gave up on. Empty: none is queued (a stage without the queue; logged).
    deliveries_queue_url: str = ""
    deliveries_dead_letter_queue_url: str = ""
    max_keys: int = 1000
    # Caps of the row types (export, listing, audit): rows in one file, and its size in bytes.
    max_rows: int = 10_000_000
    max_table_bytes: int = 5 * 1024 * MIB
    max_active_per_user: int = 10
    # Across all of a tenant's users: one tenant cannot take the account's whole Lambda and
    # Step Functions capacity (1,000 concurrent Lambda runs by default) from the others.
    max_active_per_tenant: int = 100
    part_size: int = 8 * MIB
    progress_every_bytes: int = 4 * MIB
    read_chunk_bytes: int = 1 * MIB
    retention_default_seconds: int = 24 * 3600
    retention_min_seconds: int = 60
    retention_max_seconds: int = 7 * 24 * 3600
    file_url_ttl_seconds: int = 300
    json_url_ttl_seconds: int = 3600
    link_default_ttl_seconds: int = 24 * 3600
    link_max_ttl_seconds: int = 7 * 24 * 3600
    link_max_uses: int = 1000
    link_retry_after_seconds: int = 5
    # How long a claimant may claim a link again (retries, resumed downloads) without spending a use.
    link_claim_window_seconds: int = 15 * 60
    idempotency_ttl_seconds: int = 24 * 3600
    # A download still PENDING or RUNNING this long after its creation is stopped (Timeout).
    build_deadline_seconds: int = 2 * 3600
    # How long the record of a finished download is kept (expired ones: after expiry).
    record_retention_seconds: int = 30 * 24 * 3600
    # How long before its expiry a DONE download no one has fetched is announced
    # (`download.expiring_unused`); 0: never.
    expiring_unused_seconds: int = 3600
    # Multipart uploads and temporary objects older than this are leftovers: removed.
    stale_upload_seconds: int = 24 * 3600
    # How long a rotated-out webhook secret still signs (the most a rotation may ask for).
    webhook_secret_grace_seconds: int = 24 * 3600
    # Webhook deliveries (chalicelib/notify/delivery.py): the wall-clock budget of one attempt
    # (connect, send, headers and the first 4 KiB of the answer); how long an event is retried,
    # counted from when it was recorded; the backoff between attempts (doubled each time, with
    # jitter, capped); and the attempts an event gets at most within that window.
    delivery_budget_seconds: int = 10
    delivery_window_seconds: int = 26 * 3600
    delivery_base_delay_seconds: int = 30
    delivery_max_delay_seconds: int = 3600
    delivery_max_attempts: int = 100
    # Sources read at once (zip), and the bytes of small ones that may be fetched ahead. A
    # small object costs a round trip, not bandwidth: 32 in flight hide S3's ~10-20 ms latency
    # until the worker's CPU (request signing, parsing, deflate) is the bound; each costs one
    # thread and one pooled connection, the bytes held stay capped by fetch_window_bytes.
    fetch_concurrency: int = 32
    fetch_window_bytes: int = 16 * MIB
    # Store-mode members at least this large are copied by S3 (UploadPartCopy), not read.
    server_copy_min_bytes: int = 16 * MIB
    # Zips over either size are built in parallel segments (Map), then joined by Assemble.
    parallel_min_bytes: int = 1024 * MIB
    parallel_min_files: int = 10_000
    # A segment closes at this many bytes or files; there are never more than max_segments
    # (the segments grow instead). The real bound is S3's 10,000 parts of the joined upload:
    # chalicelib/workflow/segments.py checks a plan against it (TooManyParts) before any build.
    segment_bytes: int = 512 * MIB
    segment_files: int = 2_500
    max_segments: int = 9_000
    # Segments built at once by the Distributed Map (its MaxConcurrencyPath).
    map_concurrency: int = 10
    # A long step hands on to its next run when less than this is left of its Lambda run
    # (chalicelib/workflow/runs.py): enough to finish the members already fetched and save.
    handoff_reserve_ms: int = 120_000
    # How long a dry run may list sources before it answers with lower bounds (`complete: false`):
    # within API Gateway's 29-second integration timeout.
    dry_run_seconds: int = 20

    @property
    def callback_port_numbers(self) -> tuple[int, ...]:
        return _ports(self.callback_ports)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        required = {
            "table": ENV_TABLE,
            "artifact_bucket": ENV_ARTIFACT_BUCKET,
            "source_bucket": ENV_SOURCE_BUCKET,
            "state_machine_arn": ENV_STATE_MACHINE_ARN,
        }
        missing = [name for name in required.values() if not env.get(name)]
        if missing:
            raise ConfigurationError(f"missing environment variables: {', '.join(missing)}")
        values: dict[str, object] = {field: env[name] for field, name in required.items()}
        values["stage"] = env.get(ENV_STAGE) or cls.stage
        values["api_prefix"] = env.get(ENV_API_PREFIX, "").rstrip("/")
        values["public_url"] = env.get(ENV_PUBLIC_URL, "").rstrip("/")
        values["datasets"] = parse_datasets(env.get(ENV_DATASETS) or "{}")
        values["event_bus"] = env.get(ENV_EVENT_BUS) or cls.event_bus
        values["request_prefix"] = env.get(ENV_REQUEST_PREFIX) or cls.request_prefix
        values["service_principals"] = parse_service_principals(env.get(ENV_SERVICE_PRINCIPALS) or "[]")
        values["request_bus"] = env.get(ENV_REQUEST_BUS) or cls.request_bus
        values["queue_senders"] = parse_queue_senders(env.get(ENV_QUEUE_SENDERS) or "{}")
        values["kms_key_id"] = env.get(ENV_KMS_KEY_ID, "")
        loopback = env.get(ENV_CALLBACK_ALLOW_LOOPBACK, "")
        values["callback_allow_loopback"] = (
            loopback.lower() == "true" if loopback else values["stage"] == "local"
        )
        values["callback_ports"] = env.get(ENV_CALLBACK_PORTS) or cls.callback_ports
        values["sign_in"] = SignIn.from_env(env)
        values["deliveries_queue_url"] = env.get(ENV_DELIVERIES_QUEUE_URL, "")
        values["deliveries_dead_letter_queue_url"] = env.get(ENV_DELIVERIES_DEAD_LETTER_QUEUE_URL, "")
        for field, name in INTEGER_VARIABLES.items():
            raw = env.get(name)
            if raw:
                try:
                    values[field] = int(raw)
                except ValueError:
                    raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings._check()
        return settings

    def _check(self) -> None:
        negative = [
            f.name
            for f in fields(self)
            if type(getattr(self, f.name)) is int  # bools are not counts
            and getattr(self, f.name) < (0 if f.name in _MAY_BE_ZERO else 1)
        ]
        if negative:
            raise ConfigurationError(f"settings must be positive: {', '.join(negative)}")
        if self.part_size < S3_MIN_PART_SIZE:
            raise ConfigurationError(f"{INTEGER_VARIABLES['part_size']} must be at least {S3_MIN_PART_SIZE}")
        if self.server_copy_min_bytes < 2 * S3_MIN_PART_SIZE:
            # A copied member needs 5 MiB read through the worker and 5 MiB left to copy.
            name = INTEGER_VARIABLES["server_copy_min_bytes"]
            raise ConfigurationError(f"{name} must be at least {2 * S3_MIN_PART_SIZE}")
        if self.stale_upload_seconds <= self.build_deadline_seconds:
            # Cleanup would abort the upload of a build that is still within its deadline.
            raise ConfigurationError(
                f"{INTEGER_VARIABLES['stale_upload_seconds']} must exceed "
                f"{INTEGER_VARIABLES['build_deadline_seconds']}"
            )
        if not self.retention_min_seconds <= self.retention_default_seconds <= self.retention_max_seconds:
            raise ConfigurationError("the default retention must lie within its min and max")
        if not self.request_prefix.endswith("/"):
            # The tenant is the path segment after the prefix: requests/<tenant>/<name>.json.
            raise ConfigurationError(f"{ENV_REQUEST_PREFIX} must end with '/', got {self.request_prefix!r}")
        _ports(self.callback_ports)
        if self.delivery_base_delay_seconds > self.delivery_max_delay_seconds:
            raise ConfigurationError("the base delay between deliveries must not exceed the maximum delay")
        if self.delivery_max_delay_seconds > SQS_MAX_VISIBILITY_SECONDS:
            # The delay is a message's visibility timeout, which SQS caps at 12 hours.
            name = INTEGER_VARIABLES["delivery_max_delay_seconds"]
            raise ConfigurationError(f"{name} must be at most {SQS_MAX_VISIBILITY_SECONDS}")
        if self.link_default_ttl_seconds > self.link_max_ttl_seconds:
            raise ConfigurationError("the default link lifetime must not exceed its maximum")
        if self.fetch_concurrency > MAX_FETCH_CONCURRENCY:
            # More threads than pooled connections would open (and drop) a connection per request.
            name = INTEGER_VARIABLES["fetch_concurrency"]
            raise ConfigurationError(f"{name} must be at most {MAX_FETCH_CONCURRENCY}")


def _ports(raw: str) -> tuple[int, ...]:
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and 0 < int(part) < 65536 for part in parts):
        raise ConfigurationError(f"{ENV_CALLBACK_PORTS} must list TCP ports separated by commas, got {raw!r}")
    return tuple(sorted({int(part) for part in parts}))


def parse_service_principals(raw: str) -> tuple[Principal, ...]:
    """Parsed once, failing at start-up, not on every event that names one: [{tenant, user_id, roles?}]."""
    try:
        specs = json.loads(raw)
    except ValueError:
        specs = None
    valid = isinstance(specs, list) and all(
        isinstance(spec, dict)
        and all(is_principal_id(spec.get(name)) for name in ("tenant", "user_id"))
        and isinstance(spec.get("roles", []), list)
        and all(isinstance(role, str) for role in spec.get("roles", []))
        for spec in specs
    )
    if not valid:
        raise ConfigurationError(
            f"{ENV_SERVICE_PRINCIPALS} must be a JSON list of {{tenant, user_id, roles}} objects, "
            f"whose tenant and user_id match {PRINCIPAL_ID_PATTERN}"
        )
    return tuple(
        Principal(spec["tenant"], spec["user_id"], frozenset(spec.get("roles", []))) for spec in specs
    )


_SENDER_ID = re.compile(r"^[A-Z0-9]{1,128}$")


def parse_queue_senders(raw: str) -> dict[str, tuple[str, ...]]:
    """{sender id: ["tenant" | "tenant/user", ...]}, parsed once, failing at start-up. A sender
    id is the unique id of an IAM role (AROA...) or user (AIDA...), as SQS's SenderId names it."""
    try:
        specs = json.loads(raw)
    except ValueError:
        specs = None
    valid = isinstance(specs, dict) and all(
        isinstance(sender, str)
        and _SENDER_ID.match(sender)
        and isinstance(grants, list)
        and all(_is_grant(grant) for grant in grants)
        for sender, grants in specs.items()
    )
    if not valid:
        raise ConfigurationError(
            f"{ENV_QUEUE_SENDERS} must be a JSON object mapping IAM unique ids (AROA..., AIDA...) to "
            f'lists of "<tenant>" or "<tenant>/<user_id>", whose ids match {PRINCIPAL_ID_PATTERN}'
        )
    return {sender: tuple(grants) for sender, grants in specs.items()}


def _is_grant(grant: object) -> bool:
    if not isinstance(grant, str):
        return False
    parts = grant.split("/")
    return len(parts) <= 2 and all(is_principal_id(part) for part in parts)


@dataclass(frozen=True)
class Dataset:
    """A tenant-scoped DynamoDB query `export` may run (chalicelib/downloadtypes/datasets.py runs it)."""

    name: str
    table: str
    tenant_key: str
    columns: list[str]
    index: str | None = None
    description: str = ""


def parse_datasets(config: str) -> dict[str, Dataset]:
    """SATCHEL_DATASETS, parsed once (chalicelib/downloadtypes/datasets.py describes the shape)."""
    try:
        raw = json.loads(config or "{}")
        datasets = {
            name: Dataset(
                name=name,
                table=spec["table"],
                tenant_key=spec.get("tenant_key", "tenant"),
                columns=list(spec["columns"]),
                index=spec.get("index"),
                description=spec.get("description", ""),
            )
            for name, spec in raw.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigurationError(f"{ENV_DATASETS} is not a valid dataset configuration: {error}") from None
    for dataset in datasets.values():
        if not dataset.name.isidentifier() or not dataset.columns:
            raise ConfigurationError(f"dataset {dataset.name!r} needs an identifier name and columns")
    return datasets
