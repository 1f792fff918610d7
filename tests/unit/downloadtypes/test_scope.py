"""A principal reads sources under its tenant's prefix of the source bucket only, by key or by
`s3://` URL, and the names inside an archive drop that prefix."""

from __future__ import annotations

import pytest

from chalicelib.core.errors import SourceNotAllowed
from chalicelib.core.models import Principal
from chalicelib.downloadtypes.scope import Scope

SCOPE = Scope.of(Principal("acme", "alice"), "sources")


def test_the_scope_of_a_principal_is_its_tenants_prefix_of_the_source_bucket() -> None:
    assert Scope("sources", "acme/") == SCOPE


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("acme/reports/q1.csv", "acme/reports/q1.csv"),
        ("s3://sources/acme/reports/q1.csv", "acme/reports/q1.csv"),
        ("acme/a..b/c.txt", "acme/a..b/c.txt"),  # dots inside a segment are a name, not a step up
    ],
)
def test_a_key_or_url_inside_the_scope_resolves_to_its_key(raw: str, key: str) -> None:
    assert SCOPE.resolve(raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        "globex/reports/q1.csv",  # another tenant
        "acmecorp/q1.csv",  # a tenant whose name starts with this one's
        "acme",  # the prefix without its slash
        "acme/../globex/q1.csv",  # a step up out of the prefix
        "acme/reports/..",
        "s3://other-bucket/acme/q1.csv",  # the right prefix in another bucket
        "s3://sources/globex/q1.csv",
        "/acme/q1.csv",
    ],
)
def test_anything_outside_the_scope_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(SourceNotAllowed, match="outside your allowed scope") as refused:
        SCOPE.resolve(raw)
    assert refused.value.details == {"key": raw}
    assert raw in refused.value.message


def test_a_members_name_drops_the_tenant_prefix_and_is_made_safe() -> None:
    assert SCOPE.entry_name("acme/reports/q1.csv") == "reports/q1.csv"
    assert SCOPE.entry_name("acme/été/aux.log") == "été/aux_.log"  # a reserved Windows name
