"""The callback signing key read from SSM Parameter Store through Powertools' parameters
utility: decrypted, read once per cache age, and a rotated key picked up after it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import base as parameters_base
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib.core import clients
from chalicelib.notify import dispatch

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_ssm.client import SSMClient

PARAMETER = "/satchel-test/webhook-secret"


class Clock(datetime):
    """Powertools' parameter cache reads datetime.now(); this one moves only when told, so
    the cache age is crossed exactly, without waiting for it."""

    at = datetime(2026, 1, 1, 12, 0, 0)

    @classmethod
    def now(cls, tz: Any = None) -> Clock:
        return cls.at  # type: ignore[return-value]  # a datetime is all the cache compares

    @classmethod
    def advance(cls, seconds: float) -> None:
        cls.at += timedelta(seconds=seconds)


class Reads:
    """GetParameter calls made through the client the application uses (counted by botocore's
    own event hook, before moto answers)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        clients.ssm().meta.events.register("before-parameter-build.ssm.GetParameter", self._seen)

    def _seen(self, params: dict[str, Any], **_: Any) -> None:
        assert params["WithDecryption"] is True  # a SecureString is read decrypted
        self.names.append(params["Name"])

    @property
    def count(self) -> int:
        return len(self.names)


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[SSMClient]:
    monkeypatch.setattr(Clock, "at", Clock.at)
    monkeypatch.setattr(parameters_base, "datetime", Clock)
    with mock_aws():
        clients.reset()
        client = boto3.client("ssm")
        client.put_parameter(Name=PARAMETER, Value="whsec_first", Type="SecureString")
        try:
            yield client
        finally:
            clients.reset()


def rotate(ssm: SSMClient, value: str) -> None:
    ssm.put_parameter(Name=PARAMETER, Value=value, Type="SecureString", Overwrite=True)


def test_the_secret_is_read_once_within_its_cache_age_and_rotation_shows_after_it(ssm: SSMClient) -> None:
    reads = Reads()

    assert dispatch.webhook_secret("", PARAMETER, max_age=60) == "whsec_first"  # decrypted
    rotate(ssm, "whsec_second")
    Clock.advance(59)
    assert dispatch.webhook_secret("", PARAMETER, max_age=60) == "whsec_first"
    assert reads.count == 1

    Clock.advance(2)
    assert dispatch.webhook_secret("", PARAMETER, max_age=60) == "whsec_second"
    assert dispatch.webhook_secret("", PARAMETER, max_age=60) == "whsec_second"
    assert reads.names == [PARAMETER, PARAMETER]


def test_by_default_a_rotated_secret_signs_within_five_minutes(ssm: SSMClient) -> None:
    reads = Reads()
    assert dispatch.WEBHOOK_SECRET_MAX_AGE_SECONDS == 300

    assert dispatch.webhook_secret("", PARAMETER) == "whsec_first"
    rotate(ssm, "whsec_second")
    Clock.advance(300)
    assert dispatch.webhook_secret("", PARAMETER) == "whsec_first"
    Clock.advance(1)
    assert dispatch.webhook_secret("", PARAMETER) == "whsec_second"
    assert reads.count == 2


def test_a_cache_age_of_zero_reads_on_every_use(ssm: SSMClient) -> None:
    reads = Reads()

    assert dispatch.webhook_secret("", PARAMETER, max_age=0) == "whsec_first"
    rotate(ssm, "whsec_second")
    assert dispatch.webhook_secret("", PARAMETER, max_age=0) == "whsec_second"
    assert reads.count == 2


def test_a_secret_given_directly_is_never_read_from_ssm(ssm: SSMClient) -> None:
    reads = Reads()

    assert dispatch.webhook_secret("whsec_local", PARAMETER) == "whsec_local"
    assert reads.count == 0
    with pytest.raises(LookupError, match="no webhook secret"):
        dispatch.webhook_secret("", "")


def test_reads_follow_the_clients_when_they_are_rebuilt(ssm: SSMClient) -> None:
    """clients.reset() (tests, the local stack re-pointing its endpoint) builds a new SSM client:
    the reads go through it, where the fault injector and the endpoint are."""
    assert dispatch.webhook_secret("", PARAMETER, max_age=600) == "whsec_first"
    clients.reset()
    reads = Reads()
    rotate(ssm, "whsec_second")

    assert dispatch.webhook_secret("", PARAMETER, max_age=600) == "whsec_second"
    assert reads.count == 1


def test_a_failed_read_raises_botocores_error_as_before(ssm: SSMClient) -> None:
    """Not Powertools' GetParameterError: the workflow steps' boundary classifies botocore's
    errors (a throttled read is a TransientError that the state machine retries)."""
    with pytest.raises(ClientError) as raised:
        dispatch.webhook_secret("", "/satchel-test/missing", max_age=60)
    assert raised.value.response["Error"]["Code"] == "ParameterNotFound"
