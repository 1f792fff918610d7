"""AWS clients, built on first use (never at import) and shared within a process.

Everything that talks to AWS takes its client as an argument; these getters are what the
Lambda entry points hand in. boto3 honours AWS_ENDPOINT_URL, which is how the local stack
points them at the embedded emulator.

Every session parses timestamps with `parse_timestamp` (below) instead of botocore's default,
through botocore's own hook for it (`set_parser_defaults`, as the AWS CLI uses).
"""

from __future__ import annotations

import datetime
import email.utils
import threading
from functools import cache
from typing import TYPE_CHECKING, cast

from botocore.config import Config

from chalicelib.core.settings import MAX_FETCH_CONCURRENCY

if TYPE_CHECKING:  # the stubs are a development requirement (requirements-dev.txt), not a runtime one
    import boto3
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_kms.client import KMSClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_stepfunctions.client import SFNClient

_lock = threading.Lock()
# botocore counts `max_attempts` here as retries: a call is tried 6 times, backing off, before
# its error reaches the code (workflow steps then leave it as TransientError: chalicelib/core/errors.py).
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
# Connections S3 requests may hold at once: a store build reads sources (`fetch`) and looks up
# CRCs (`crc32s`) at once, each up to MAX_FETCH_CONCURRENCY threads, besides a copied member's
# first pass (its ranged reads: FIRST_PASS_WORKERS in chalicelib/downloadtypes/archive.py, 4)
# and the thread that uploads parts. botocore's default of 10 would drop the connection of
# every request above it (a new TCP and TLS handshake each time). A pooled connection costs
# nothing until it is used.
S3_MAX_POOL_CONNECTIONS = 2 * MAX_FETCH_CONCURRENCY + 8
# SigV4 presigned URLs (SigV2 is deprecated and capped differently).
_S3 = _RETRIES.merge(Config(signature_version="s3v4", max_pool_connections=S3_MAX_POOL_CONNECTIONS))


@cache
def _loader() -> object:
    import botocore.loaders

    return botocore.loaders.create_loader()


def parse_timestamp(value: object) -> datetime.datetime:
    """botocore's timestamp parsing, without dateutil for the two forms AWS sends most: an
    HTTP date in a header (S3's Last-Modified, on every GetObject and HeadObject) and ISO
    8601 with its zone in a body (S3's listings). dateutil's general parser took about 8% of
    botocore's CPU per small GetObject (profiled in the Build worker, whose CPU per request
    bounds a zip of many small files). Anything else (epoch numbers, which botocore gives in
    the local zone; a string without a zone; one neither form takes) goes to botocore's own
    parser, so the results are the same datetimes."""
    if isinstance(value, str):
        try:
            if value.endswith(" GMT"):
                parsed: datetime.datetime | None = email.utils.parsedate_to_datetime(value)
            else:
                parsed = datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    from botocore.utils import parse_timestamp as botocores

    result: datetime.datetime = botocores(value)
    return result


def session(region_name: str | None = None) -> boto3.session.Session:
    """A new session (it reads the environment afresh: endpoint, region, credentials) that
    shares one loader per process, so each service's model is parsed once, not per session."""
    import boto3  # deferred: keeps importing app.py cheap (a Lambda cold start)
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _loader())
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return boto3.session.Session(botocore_session=core, region_name=region_name)


# `object`, not Any: boto3 itself is untyped here, and each getter below casts to its stub type.
@cache
def _client(service: str) -> object:
    with _lock:  # creating clients is not thread-safe; using them is
        return session().client(service, config=_S3 if service == "s3" else _RETRIES)


@cache
def _table(name: str) -> object:
    with _lock:
        return session().resource("dynamodb", config=_RETRIES).Table(name)


def s3() -> S3Client:
    return cast("S3Client", _client("s3"))


def stepfunctions() -> SFNClient:
    return cast("SFNClient", _client("stepfunctions"))


def events() -> EventBridgeClient:
    return cast("EventBridgeClient", _client("events"))


def sqs() -> SQSClient:
    return cast("SQSClient", _client("sqs"))


def kms() -> KMSClient:
    return cast("KMSClient", _client("kms"))


def table(name: str) -> Table:
    return cast("Table", _table(name))


def reset() -> None:
    """Forget cached clients (tests and the local stack re-point the endpoint)."""
    _client.cache_clear()
    _table.cache_clear()
