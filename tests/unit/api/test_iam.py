"""IAM callers' ARNs, normalised so that one mapping covers every session of a role."""

from __future__ import annotations

import pytest

from chalicelib.api import iam


@pytest.mark.parametrize(
    ("arn", "normalised"),
    [
        (
            "arn:aws:sts::123456789012:assumed-role/reporting/nightly-job",
            "arn:aws:iam::123456789012:role/reporting",
        ),
        (
            "arn:aws-us-gov:sts::123456789012:assumed-role/Reporting_2/i-0abc@example.com",
            "arn:aws-us-gov:iam::123456789012:role/Reporting_2",
        ),
        ("arn:aws:iam::123456789012:user/ops/alice", "arn:aws:iam::123456789012:user/ops/alice"),
        ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root"),
        ("arn:aws:sts::123456789012:federated-user/bob", "arn:aws:sts::123456789012:federated-user/bob"),
        ("arn:aws:s3:::bucket/key", None),  # not an IAM principal
        ("arn:aws:iam::1234:role/short-account", None),
        ("arn:aws:iam::123456789012:role/x#y", None),  # '#' would split table keys
        ("", None),
    ],
)
def test_normalise(arn: str, normalised: str | None) -> None:
    assert iam.normalise(arn) == normalised


def test_the_caller_is_the_identitys_user_arn() -> None:
    assert iam.caller_arn({"identity": {"userArn": "arn:aws:iam::123456789012:root"}}) == (
        "arn:aws:iam::123456789012:root"
    )
    assert iam.caller_arn({"identity": {"userArn": None}}) is None
    assert iam.caller_arn({}) is None
