"""Settings: one frozen object built from the environment, failing fast on what is missing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.errors import ConfigurationError

# Every environment variable Satchel reads is named here and nowhere else.
ENV_STAGE = "SATCHEL_STAGE"
ENV_TABLE = "SATCHEL_TABLE"
ENV_ARTIFACT_BUCKET = "SATCHEL_ARTIFACT_BUCKET"
ENV_SOURCE_BUCKET = "SATCHEL_SOURCE_BUCKET"
ENV_STATE_MACHINE_ARN = "SATCHEL_STATE_MACHINE_ARN"
ENV_MAX_CONTENT_BYTES = "SATCHEL_MAX_CONTENT_BYTES"
ENV_MAX_FILES = "SATCHEL_MAX_FILES"
ENV_PART_SIZE = "SATCHEL_PART_SIZE"
ENV_PROGRESS_EVERY_BYTES = "SATCHEL_PROGRESS_EVERY_BYTES"
ENV_READ_CHUNK_BYTES = "SATCHEL_READ_CHUNK_BYTES"
ENV_RETENTION_DEFAULT = "SATCHEL_RETENTION_DEFAULT_SECONDS"
ENV_RETENTION_MIN = "SATCHEL_RETENTION_MIN_SECONDS"
ENV_RETENTION_MAX = "SATCHEL_RETENTION_MAX_SECONDS"
ENV_FILE_URL_TTL = "SATCHEL_FILE_URL_TTL_SECONDS"
ENV_JSON_URL_TTL = "SATCHEL_JSON_URL_TTL_SECONDS"
ENV_API_PREFIX = "SATCHEL_API_PREFIX"

MIB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MIB


@dataclass(frozen=True)
class Settings:
    stage: str
    table: str
    artifact_bucket: str
    source_bucket: str
    state_machine_arn: str
    max_content_bytes: int = 5 * 1024 * MIB
    max_files: int = 50_000
    part_size: int = 8 * MIB
    progress_every_bytes: int = 4 * MIB
    read_chunk_bytes: int = 1 * MIB
    retention_default_seconds: int = 24 * 3600
    retention_min_seconds: int = 60
    retention_max_seconds: int = 7 * 24 * 3600
    file_url_ttl_seconds: int = 300
    json_url_ttl_seconds: int = 3600
    # Path prefix the API is served under (API Gateway stage), used to build `url` fields.
    api_prefix: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        missing = [
            name
            for name in (ENV_TABLE, ENV_ARTIFACT_BUCKET, ENV_SOURCE_BUCKET, ENV_STATE_MACHINE_ARN)
            if not env.get(name)
        ]
        if missing:
            raise ConfigurationError(f"missing environment variables: {', '.join(missing)}")
        defaults = cls.__dataclass_fields__

        def integer(name: str, field: str) -> int:
            raw = env.get(name)
            if raw is None or raw == "":
                default = defaults[field].default
                assert isinstance(default, int)
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None

        settings = cls(
            stage=env.get(ENV_STAGE, "local"),
            table=env[ENV_TABLE],
            artifact_bucket=env[ENV_ARTIFACT_BUCKET],
            source_bucket=env[ENV_SOURCE_BUCKET],
            state_machine_arn=env[ENV_STATE_MACHINE_ARN],
            max_content_bytes=integer(ENV_MAX_CONTENT_BYTES, "max_content_bytes"),
            max_files=integer(ENV_MAX_FILES, "max_files"),
            part_size=integer(ENV_PART_SIZE, "part_size"),
            progress_every_bytes=integer(ENV_PROGRESS_EVERY_BYTES, "progress_every_bytes"),
            read_chunk_bytes=integer(ENV_READ_CHUNK_BYTES, "read_chunk_bytes"),
            retention_default_seconds=integer(ENV_RETENTION_DEFAULT, "retention_default_seconds"),
            retention_min_seconds=integer(ENV_RETENTION_MIN, "retention_min_seconds"),
            retention_max_seconds=integer(ENV_RETENTION_MAX, "retention_max_seconds"),
            file_url_ttl_seconds=integer(ENV_FILE_URL_TTL, "file_url_ttl_seconds"),
            json_url_ttl_seconds=integer(ENV_JSON_URL_TTL, "json_url_ttl_seconds"),
            api_prefix=env.get(ENV_API_PREFIX, "").rstrip("/"),
        )
        if settings.part_size < S3_MIN_PART_SIZE:
            raise ConfigurationError(f"{ENV_PART_SIZE} must be at least {S3_MIN_PART_SIZE} bytes")
        if not (
            settings.retention_min_seconds
            <= settings.retention_default_seconds
            <= settings.retention_max_seconds
        ):
            raise ConfigurationError("retention default must lie within its min and max")
        return settings
