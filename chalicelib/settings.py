"""Settings: one frozen object built from the environment, failing fast on what is missing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from chalicelib.errors import ConfigurationError

# Every environment variable Satchel reads is named here and nowhere else.
ENV_STAGE = "SATCHEL_STAGE"
ENV_TABLE = "SATCHEL_TABLE"
ENV_ARTIFACT_BUCKET = "SATCHEL_ARTIFACT_BUCKET"
ENV_SOURCE_BUCKET = "SATCHEL_SOURCE_BUCKET"
ENV_STATE_MACHINE_ARN = "SATCHEL_STATE_MACHINE_ARN"
ENV_API_PREFIX = "SATCHEL_API_PREFIX"
ENV_PUBLIC_URL = "SATCHEL_PUBLIC_URL"
ENV_DATASETS = "SATCHEL_DATASETS"

# Integer settings: field name -> environment variable.
INTEGER_VARIABLES: dict[str, str] = {
    "max_content_bytes": "SATCHEL_MAX_CONTENT_BYTES",
    "max_files": "SATCHEL_MAX_FILES",
    "max_keys": "SATCHEL_MAX_KEYS",
    "max_active_per_user": "SATCHEL_MAX_ACTIVE_PER_USER",
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
    "idempotency_ttl_seconds": "SATCHEL_IDEMPOTENCY_TTL_SECONDS",
}

MIB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MIB


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
    # The datasets `export` may read, as JSON (chalicelib/datasets.py describes the shape).
    datasets: str = "{}"
    max_content_bytes: int = 5 * 1024 * MIB
    max_files: int = 50_000
    max_keys: int = 1000
    max_active_per_user: int = 10
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
    idempotency_ttl_seconds: int = 24 * 3600

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
        values["datasets"] = env.get(ENV_DATASETS) or "{}"
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
            if isinstance(getattr(self, f.name), int) and getattr(self, f.name) < 1
        ]
        if negative:
            raise ConfigurationError(f"settings must be positive: {', '.join(negative)}")
        if self.part_size < S3_MIN_PART_SIZE:
            raise ConfigurationError(f"{INTEGER_VARIABLES['part_size']} must be at least {S3_MIN_PART_SIZE}")
        if not self.retention_min_seconds <= self.retention_default_seconds <= self.retention_max_seconds:
            raise ConfigurationError("the default retention must lie within its min and max")
        if self.link_default_ttl_seconds > self.link_max_ttl_seconds:
            raise ConfigurationError("the default link lifetime must not exceed its maximum")
