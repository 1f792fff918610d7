"""Settings: one frozen object built from the environment, failing fast on what is missing."""

from __future__ import annotations

import dataclasses
import json
import os
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
ENV_WEBHOOK_SECRET = "SATCHEL_WEBHOOK_SECRET"
ENV_WEBHOOK_SECRET_PARAMETER = "SATCHEL_WEBHOOK_SECRET_PARAMETER"
ENV_CALLBACK_ALLOW_LOOPBACK = "SATCHEL_CALLBACK_ALLOW_LOOPBACK"
ENV_CALLBACK_PORTS = "SATCHEL_CALLBACK_PORTS"
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
    "stale_upload_seconds": "SATCHEL_STALE_UPLOAD_SECONDS",
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
}

MIB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MIB
SQS_MAX_VISIBILITY_SECONDS = 12 * 3600


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
    # Principals that events may act as without an API key (JSON [{tenant, user_id, roles}]).
    service_principals: tuple[Principal, ...] = ()
    # The key that signs callbacks: the value itself (local, tests) or an SSM parameter name.
    webhook_secret: str = ""
    webhook_secret_parameter: str = ""
    # Callbacks over http to loopback (a receiver on this machine): the local stage only.
    callback_allow_loopback: bool = False
    # The ports an https callback may go to, comma-separated; loopback receivers use any.
    callback_ports: str = "443"
    # Where events owed a webhook are queued for the `deliver` function, and where it puts
    # those it gave up on. Empty: none is queued (a stage without the queue; logged).
    deliveries_queue_url: str = ""
    deliveries_dead_letter_queue_url: str = ""
    max_content_bytes: int = 5 * 1024 * MIB
    max_files: int = 50_000
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
    # Multipart uploads and temporary objects older than this are leftovers: removed.
    stale_upload_seconds: int = 24 * 3600
    # Webhook deliveries (chalicelib/notify/delivery.py): the wall-clock budget of one attempt
    # (connect, send, headers and the first 4 KiB of the answer); how long an event is retried,
    # counted from when it was recorded; the backoff between attempts (doubled each time, with
    # jitter, capped); and the attempts an event gets at most within that window.
    delivery_budget_seconds: int = 10
    delivery_window_seconds: int = 26 * 3600
    delivery_base_delay_seconds: int = 30
    delivery_max_delay_seconds: int = 3600
    delivery_max_attempts: int = 100
    # Sources read at once (zip), and the bytes of small ones that may be fetched ahead.
    fetch_concurrency: int = 8
    fetch_window_bytes: int = 16 * MIB
    # Store-mode members at least this large are copied by S3 (UploadPartCopy), not read.
    server_copy_min_bytes: int = 16 * MIB
    # Zips over either size are built in parallel segments (Map), then joined by Assemble.
    parallel_min_bytes: int = 1024 * MIB
    parallel_min_files: int = 10_000
    # A segment closes at this many bytes or files; there are never more than max_segments.
    segment_bytes: int = 512 * MIB
    segment_files: int = 2_500
    max_segments: int = 100

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
        values["webhook_secret"] = env.get(ENV_WEBHOOK_SECRET, "")
        values["webhook_secret_parameter"] = env.get(ENV_WEBHOOK_SECRET_PARAMETER, "")
        loopback = env.get(ENV_CALLBACK_ALLOW_LOOPBACK, "")
        values["callback_allow_loopback"] = (
            loopback.lower() == "true" if loopback else values["stage"] == "local"
        )
        values["callback_ports"] = env.get(ENV_CALLBACK_PORTS) or cls.callback_ports
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
            if type(getattr(self, f.name)) is int and getattr(self, f.name) < 1  # bools are not counts
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
