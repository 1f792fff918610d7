from __future__ import annotations

import json

import pytest

from chalicelib.core import clients
from chalicelib.core.errors import ConfigurationError, MalformedRequest, UnknownPrincipal
from chalicelib.core.models import Principal
from chalicelib.core.names import UniqueNames, is_principal_id, safe_filename, safe_path
from chalicelib.core.settings import Settings
from chalicelib.runtime import Runtime
from chalicelib.s3.artifacts import content_disposition
from chalicelib.storage.keys import KeyStore, hash_secret
from chalicelib.triggers import inbound as triggers
from scripts import add_api_key
from tests.conftest import Satchel

GOOD_IDS = ["acme", "a", "0", "alice", "x_y.z-1", "a" * 63, "9lives"]
BAD_IDS = ["", "x#y", "acme#x", "Alice", "a/b", "a\n", "-a", ".a", "_a", "a" * 64, "a b", "é", "a:b", "a*"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("reports/q1.csv", "reports/q1.csv"),
        ("/etc/passwd", "etc/passwd"),
        ("a/../../b", "a/_/_/b"),
        ("a/./b//c/", "a/b/c"),
        ("..", "_"),
        ("C:/Windows/win.ini", "C_/Windows/win.ini"),
        ("dir\\..\\evil.txt", "dir_.._evil.txt"),
        ("bad\x00name\x1f\x7f.txt", "badname.txt"),
        ("line\nbreak.txt", "linebreak.txt"),
        ("été ☃/文件.txt", "été ☃/文件.txt"),
        ("e\u0301te.txt", "\u00e9te.txt"),  # NFC
        ("", "file"),
        ("/./", "file"),
    ],
)
def test_safe_path(raw: str, expected: str) -> None:
    cleaned = safe_path(raw)
    assert cleaned == expected
    assert not cleaned.startswith("/")
    assert ".." not in cleaned.split("/")


def test_segments_are_capped_at_255_bytes_without_splitting_characters() -> None:
    cleaned = safe_path("☃" * 200)
    assert len(cleaned.encode()) <= 255
    assert set(cleaned) == {"☃"}


def test_unique_names_number_repeats_before_the_extension() -> None:
    names = UniqueNames()
    assert [names.claim(n) for n in ["a.txt", "a.txt", "A.TXT", "b", "b", "dir/a.txt"]] == [
        "a.txt",
        "a (2).txt",
        "A (3).TXT",
        "b",
        "b (2)",
        "dir/a.txt",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "fallback.zip"),
        ("report", "report.zip"),
        ("report.ZIP", "report.ZIP"),
        ("../../etc/passwd", "passwd.zip"),
        ("a/b/c.zip", "c.zip"),
        ("évé\r\n.zip", "évé.zip"),
    ],
)
def test_safe_filename(raw: str | None, expected: str) -> None:
    assert safe_filename(raw, "fallback.zip", ".zip") == expected


@pytest.mark.parametrize(
    ("filename", "ascii_part", "utf8_part"),
    [
        ("report.zip", 'filename="report.zip"', "filename*=UTF-8''report.zip"),
        ("Résumé ☃.zip", 'filename="Resume .zip"', "filename*=UTF-8''R%C3%A9sum%C3%A9%20%E2%98%83.zip"),
        ('q"uote\\.zip', 'filename="q_uote_.zip"', "filename*=UTF-8''q%22uote%5C.zip"),
        (
            "x\r\nSet-Cookie: a=b.zip",
            'filename="xSet-Cookie: a=b.zip"',
            "filename*=UTF-8''xSet-Cookie%3A%20a%3Db.zip",
        ),
    ],
)
def test_content_disposition_is_rfc6266_and_single_line(
    filename: str, ascii_part: str, utf8_part: str
) -> None:
    header = content_disposition(filename)
    assert header == f"attachment; {ascii_part}; {utf8_part}"
    assert "\r" not in header
    assert "\n" not in header
    assert header.isascii()


@pytest.mark.parametrize("value", GOOD_IDS)
def test_principal_ids_that_match_the_pattern(value: str) -> None:
    assert is_principal_id(value)
    assert Principal(value, value).tenant == value


@pytest.mark.parametrize("value", [*BAD_IDS, None, 7])
def test_principal_ids_that_do_not_match_are_refused(value: object) -> None:
    assert not is_principal_id(value)
    with pytest.raises(UnknownPrincipal, match="tenant"):
        Principal(value, "alice")  # type: ignore[arg-type]
    with pytest.raises(UnknownPrincipal, match="user_id"):
        Principal("acme", value)  # type: ignore[arg-type]


def test_ids_joined_with_hash_can_no_longer_collide() -> None:
    """("acme", "x#y") and ("acme#x", "y") would share every 'OWNER#acme#x#y' key."""
    for tenant, user_id in (("acme", "x#y"), ("acme#x", "y")):
        with pytest.raises(UnknownPrincipal):
            Principal(tenant, user_id)


def test_a_key_record_with_an_invalid_id_is_no_principal(satchel: Satchel) -> None:
    table = clients.table(satchel.stack.table)
    about = {"tenant": "acme#x", "user_id": "y", "roles": []}
    table.put_item(Item={"pk": f"APIKEY#{hash_secret('forged-key')}", "sk": "APIKEY", **about})
    with pytest.raises(UnknownPrincipal):
        KeyStore(table).principal_for("forged-key")


@pytest.mark.parametrize(("tenant", "user_id"), [("acme#x", "y"), ("acme", "x#y"), ("Acme", "alice")])
def test_the_keys_script_refuses_invalid_ids_before_any_aws_call(
    tenant: str, user_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        add_api_key.main(["--table", "no-such-table", "--tenant", tenant, "--user", user_id])
    assert exited.value.code == 2
    assert "is not a valid id" in capsys.readouterr().err


_ENVIRONMENT = {
    "SATCHEL_TABLE": "t",
    "SATCHEL_ARTIFACT_BUCKET": "a",
    "SATCHEL_SOURCE_BUCKET": "s",
    "SATCHEL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
}


@pytest.mark.parametrize(
    "spec",
    [
        {"tenant": "acme#x", "user_id": "y"},
        {"tenant": "acme", "user_id": "x#y"},
        {"tenant": "ACME", "user_id": "exporter"},
        {"tenant": "acme", "user_id": "exporter", "roles": [1]},
    ],
)
def test_service_principals_with_invalid_ids_fail_at_start_up(spec: dict[str, object]) -> None:
    environment = {**_ENVIRONMENT, "SATCHEL_SERVICE_PRINCIPALS": json.dumps([spec])}
    with pytest.raises(ConfigurationError, match="SATCHEL_SERVICE_PRINCIPALS"):
        Settings.from_env(environment)


def test_valid_service_principals_are_accepted() -> None:
    spec = [{"tenant": "acme", "user_id": "nightly.export", "roles": ["admin"]}]
    Settings.from_env({**_ENVIRONMENT, "SATCHEL_SERVICE_PRINCIPALS": json.dumps(spec)})


@pytest.mark.parametrize(("tenant", "user_id"), [("acme#x", "y"), ("acme", "x#y"), ("acme", "Alice")])
def test_triggers_refuse_invalid_ids_before_any_lookup(satchel: Satchel, tenant: str, user_id: str) -> None:
    with pytest.raises(MalformedRequest, match="must match"):
        triggers.principal_named(Runtime.from_env(), tenant, user_id)
