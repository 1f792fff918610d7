"""Every client's timestamp parser (chalicelib/core/clients.py `parse_timestamp`) gives what
botocore's own gives, for the forms AWS sends and those it hands back to botocore."""

from __future__ import annotations

import pytest
from botocore.utils import parse_timestamp as botocores

from chalicelib.core import clients

SAMPLES = [
    "Wed, 12 Oct 2009 17:50:00 GMT",  # S3's Last-Modified header
    "Mon, 29 Feb 2028 23:59:59 GMT",
    "2026-11-30T02:38:04.000Z",  # S3's listings
    "2026-11-30T02:38:04Z",
    "2026-11-30T02:38:04.123456+05:30",
    "2026-11-30T02:38:04",  # no zone: botocore's
    "1700000000",  # an epoch in a string: botocore's
    1700000000,
    1700000000.25,
]


@pytest.mark.parametrize("value", SAMPLES, ids=str)
def test_the_same_instant_and_offset_as_botocore(value: str | float) -> None:
    ours, theirs = clients.parse_timestamp(value), botocores(value)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()
    assert (ours.tzinfo is None) == (theirs.tzinfo is None)


@pytest.mark.parametrize("value", ["nonsense", "", "Wed, 32 Oct 2009 17:50:00 GMT"])
def test_what_botocore_refuses_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="Invalid timestamp"):
        botocores(value)
    with pytest.raises(ValueError, match="Invalid timestamp"):
        clients.parse_timestamp(value)
