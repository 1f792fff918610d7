"""The tenants' webhook signing secrets (chalicelib/storage/secrets.py) in moto's DynamoDB and
KMS: encrypted per tenant, rotated with a grace period, decrypted once per process, and
refused when a ciphertext was tampered with or moved to another tenant.

Time is passed in (`now`), so grace periods are crossed exactly, without sleeping."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from chalicelib.core import clock
from chalicelib.core.errors import ConfigurationError, WebhookSecretConflict, WebhookSecretUnreadable
from chalicelib.storage import layout
from chalicelib.storage.secrets import PlaintextCache, WebhookSecrets
from satchel_local.stack import REGION

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_kms.client import KMSClient

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
ALIAS = "alias/satchel-test-webhook-secrets"
WHSEC = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")


@dataclass
class Env:
    table: Table
    kms: KMSClient
    decrypts: list[dict[str, Any]]

    def store(self, cache: PlaintextCache | None = None, key_id: str = ALIAS) -> WebhookSecrets:
        # A fresh cache by default: each test counts its own KMS calls.
        return WebhookSecrets(self.table, self.kms, key_id, cache or PlaintextCache())

    def item(self, tenant: str) -> dict[str, Any]:
        found: dict[str, Any] = self.table.get_item(Key=layout.webhook_secret_key(tenant))["Item"]
        return found


@pytest.fixture
def env() -> Iterator[Env]:
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        session.client("dynamodb").create_table(
            TableName="secrets-test", BillingMode="PAY_PER_REQUEST", **layout.TABLE_KEYS
        )
        kms: KMSClient = session.client("kms")
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=ALIAS, TargetKeyId=key)
        decrypts: list[dict[str, Any]] = []
        kms.meta.events.register(
            "before-parameter-build.kms.Decrypt", lambda params, **_: decrypts.append(dict(params))
        )
        yield Env(session.resource("dynamodb").Table("secrets-test"), kms, decrypts)


def test_the_first_secret_is_a_standard_webhooks_secret_and_signs_alone(env: Env) -> None:
    store = env.store()
    issued = store.rotate("acme", T0, grace_seconds=3600)

    assert WHSEC.match(issued.secret), issued.secret
    assert len(base64.b64decode(issued.secret.removeprefix("whsec_"))) == 32
    assert issued.created_at == clock.iso(T0)
    assert issued.previous_valid_until is None  # nothing was rotated out
    assert store.signing("acme", T0) == [issued.secret]
    info = store.describe("acme", T0)
    assert info is not None
    assert info.to_api() == {"created_at": clock.iso(T0), "previous_valid_until": None}


def test_no_secret_means_none_described_and_nothing_to_sign(env: Env) -> None:
    store = env.store()
    assert store.describe("acme", T0) is None
    assert store.signing("acme", T0) == []
    assert env.decrypts == []


def test_only_ciphertext_is_stored_and_the_secret_is_in_no_repr(env: Env) -> None:
    issued = env.store().rotate("acme", T0, grace_seconds=0)
    item = env.item("acme")

    raw = issued.secret.encode()
    key = base64.b64decode(issued.secret.removeprefix("whsec_"))
    for value in item.values():
        stored = value.value if hasattr(value, "value") else str(value).encode()
        assert raw not in stored
        assert key not in stored
    assert issued.secret not in repr(issued)
    assert issued.secret not in repr(item)
    # Bound to its tenant: KMS itself says what it was encrypted for.
    env.kms.decrypt(CiphertextBlob=item["current"].value, EncryptionContext={"satchel:tenant": "acme"})


def test_during_the_grace_period_both_sign_current_first_then_only_the_new_one(env: Env) -> None:
    store = env.store()
    first = store.rotate("acme", T0, grace_seconds=0).secret
    later = T0 + timedelta(hours=5)
    second = store.rotate("acme", later, grace_seconds=600)

    until = later + timedelta(seconds=600)
    assert second.previous_valid_until == clock.iso(until)
    assert second.secret != first
    assert store.signing("acme", later) == [second.secret, first]
    assert store.signing("acme", until - timedelta(milliseconds=1)) == [second.secret, first]
    info = store.describe("acme", until - timedelta(milliseconds=1))
    assert info is not None
    assert info.previous_valid_until == clock.iso(until)

    assert store.signing("acme", until) == [second.secret]
    info = store.describe("acme", until)
    assert info is not None
    assert info.to_api() == {"created_at": clock.iso(later), "previous_valid_until": None}


def test_a_rotation_without_grace_ends_the_old_secret_at_once(env: Env) -> None:
    store = env.store()
    store.rotate("acme", T0, grace_seconds=0)
    second = store.rotate("acme", T0, grace_seconds=0)

    assert second.previous_valid_until == clock.iso(T0)
    assert store.signing("acme", T0) == [second.secret]
    assert "previous" not in env.item("acme")


def test_rotating_again_within_the_grace_keeps_at_most_two(env: Env) -> None:
    store = env.store()
    first = store.rotate("acme", T0, grace_seconds=0).secret
    second = store.rotate("acme", T0 + timedelta(seconds=1), grace_seconds=3600).secret
    third = store.rotate("acme", T0 + timedelta(seconds=2), grace_seconds=3600).secret

    assert store.signing("acme", T0 + timedelta(seconds=3)) == [third, second]
    assert first not in store.signing("acme", T0 + timedelta(seconds=3))


def test_tenants_have_their_own_secrets(env: Env) -> None:
    store = env.store()
    acme = store.rotate("acme", T0, grace_seconds=0).secret
    globex = store.rotate("globex", T0, grace_seconds=0).secret
    store.rotate("globex", T0, grace_seconds=0)

    assert acme != globex
    assert store.signing("acme", T0) == [acme]
    assert globex not in store.signing("globex", T0)


def test_each_ciphertext_is_decrypted_once_but_the_record_is_read_every_time(env: Env) -> None:
    store = env.store()
    first = store.rotate("acme", T0, grace_seconds=60).secret
    for _ in range(3):
        assert store.signing("acme", T0) == [first]
    assert len(env.decrypts) == 1

    # Another store of the same process (a new Runtime) shares the cache, and still sees a
    # rotation made through a third one at once.
    cache = PlaintextCache()
    reader = env.store(cache)
    assert reader.signing("acme", T0) == [first]
    second = env.store().rotate("acme", T0, grace_seconds=60).secret
    assert env.store(cache).signing("acme", T0) == [second, first]
    # The old secret was in the cache: only the new one needed KMS.
    assert len(env.decrypts) == 3  # the first store, the reader, the new secret
    assert all(call["EncryptionContext"] == {"satchel:tenant": "acme"} for call in env.decrypts)
    assert all(call["KeyId"] == ALIAS for call in env.decrypts)


def test_a_ciphertext_moved_to_another_tenant_does_not_decrypt(env: Env) -> None:
    store = env.store()
    acme = store.rotate("acme", T0, grace_seconds=0).secret
    store.rotate("globex", T0, grace_seconds=0)
    assert store.signing("acme", T0) == [acme]  # decrypted, and cached, for acme

    env.table.update_item(
        Key=layout.webhook_secret_key("globex"),
        UpdateExpression="SET #current = :acme",
        ExpressionAttributeNames={"#current": "current"},
        ExpressionAttributeValues={":acme": env.item("acme")["current"]},
    )
    with pytest.raises(WebhookSecretUnreadable) as refused:
        store.signing("globex", T0)
    assert refused.value.status == 500
    assert acme not in refused.value.message


def test_a_tampered_ciphertext_does_not_decrypt(env: Env) -> None:
    store = env.store()
    store.rotate("acme", T0, grace_seconds=0)
    tampered = bytearray(env.item("acme")["current"].value)
    tampered[-1] ^= 0x01
    env.table.update_item(
        Key=layout.webhook_secret_key("acme"),
        UpdateExpression="SET #current = :tampered",
        ExpressionAttributeNames={"#current": "current"},
        ExpressionAttributeValues={":tampered": bytes(tampered)},
    )
    with pytest.raises(WebhookSecretUnreadable):
        store.signing("acme", T0)


def test_decrypting_is_pinned_to_the_configured_key(env: Env) -> None:
    """A ciphertext of another key (one whose policy would let it decrypt) is refused: the
    store names its key on Decrypt. KMS answers IncorrectKeyException (WebhookSecretUnreadable);
    moto answers AccessDeniedException, which the store passes on as the ClientError it is."""
    other = env.kms.create_key()["KeyMetadata"]["KeyId"]
    env.store(key_id=other).rotate("acme", T0, grace_seconds=0)
    with pytest.raises(ClientError) as refused:
        env.store().signing("acme", T0)
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert env.decrypts[-1]["KeyId"] == ALIAS


class Racing:
    """The table, but another rotation of the same tenant lands between this rotation's read
    and its write, as a concurrent request would."""

    def __init__(self, table: Table, other: WebhookSecrets) -> None:
        self._table = table
        self._other = other
        self.winner: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def put_item(self, **kwargs: Any) -> Any:
        if self.winner is None:
            self.winner = self._other.rotate("acme", T0, grace_seconds=60).secret
        return self._table.put_item(**kwargs)


@pytest.mark.parametrize("existing", [False, True], ids=["first secret", "rotation"])
def test_of_two_racing_rotations_one_wins_and_the_other_is_refused(env: Env, existing: bool) -> None:
    if existing:
        env.store().rotate("acme", T0, grace_seconds=0)
    racing = Racing(env.table, env.store())
    loser = WebhookSecrets(racing, env.kms, ALIAS, PlaintextCache())  # type: ignore[arg-type]

    with pytest.raises(WebhookSecretConflict) as refused:
        loser.rotate("acme", T0, grace_seconds=60)
    assert refused.value.status == 409
    assert refused.value.code == "WebhookSecretConflict"
    assert env.store().signing("acme", T0)[0] == racing.winner


def test_without_a_key_configured_nothing_is_stored(env: Env) -> None:
    with pytest.raises(ConfigurationError, match="SATCHEL_KMS_KEY_ID"):
        env.store(key_id="").rotate("acme", T0, grace_seconds=0)
    assert env.store().describe("acme", T0) is None


class LostAnswer:
    """The table, but each rotation's write lands and its answer is lost: as a read timeout,
    or (`retried`) as botocore's retry of it, which then fails the rotation's condition."""

    def __init__(self, table: Table, retried: bool = False, lands: bool = True) -> None:
        self._table = table
        self._retried = retried
        self._lands = lands

    def get_item(self, **arguments: Any) -> Any:
        return self._table.get_item(**arguments)

    def put_item(self, **arguments: Any) -> Any:
        if self._lands:
            self._table.put_item(**arguments)
        if self._retried:
            return self._table.put_item(**arguments)  # ConditionalCheckFailedException
        raise ReadTimeoutError(endpoint_url="https://dynamodb")


@pytest.mark.parametrize("retried", [False, True])
def test_a_rotation_that_landed_though_its_answer_was_lost_is_answered(env: Env, retried: bool) -> None:
    """Never a 5xx (nor a 409) for a secret that now signs: nobody would know it."""
    first = env.store().rotate("acme", T0, grace_seconds=0).secret
    store = WebhookSecrets(cast(Any, LostAnswer(env.table, retried)), env.kms, ALIAS, PlaintextCache())

    issued = store.rotate("acme", T0, grace_seconds=600)

    assert env.store().signing("acme", T0) == [issued.secret, first]
    assert issued.previous_valid_until == clock.iso(T0 + timedelta(seconds=600))


def test_a_rotation_whose_write_did_not_land_fails_and_the_old_secret_signs_on(env: Env) -> None:
    first = env.store().rotate("acme", T0, grace_seconds=0).secret
    store = WebhookSecrets(cast(Any, LostAnswer(env.table, lands=False)), env.kms, ALIAS, PlaintextCache())

    with pytest.raises(ReadTimeoutError):
        store.rotate("acme", T0, grace_seconds=600)

    assert env.store().signing("acme", T0) == [first]
