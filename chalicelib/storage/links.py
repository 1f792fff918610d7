"""Links: tokens that let anyone holding them fetch one download, a limited number of
times, until they expire or are revoked.

A token has 256 random bits and is stored only as its SHA-256. Reading a link spends
nothing; a *claim* spends one use by a conditional write, so two claims racing for the last
use get one URL and one 410. A claim opens a window in which its claimant, presenting the
claim id (128 random bits, stored as a prefix of its SHA-256 in the link's `claims` map with
the window's end), may claim again without spending a use. A link is never itself an S3
URL: each claim mints a fresh, short-lived presigned URL.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.core import clock
from chalicelib.core.errors import (
    DownloadUnavailable,
    Forbidden,
    InvalidParams,
    LinkGone,
    LinkNotFound,
    LinkNotReady,
)
from chalicelib.core.models import ACTIVE_STATES, Download, Principal, State, plain
from chalicelib.core.schemas import Schema
from chalicelib.storage import layout
from chalicelib.storage.audit import link_actor
from chalicelib.storage.keys import hash_secret
from chalicelib.storage.queries import query_pages

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, URL-safe base64 without padding
_CLAIM_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")  # 16 bytes, URL-safe base64 without padding
_CLAIM_HASH_CHARS = 32  # 128 bits of the claim id's SHA-256: as hard to guess as the id
# Expired claims struck from the map by one claim's write: the map stays small without a sweep.
_PRUNE_AT_MOST = 25

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "expires_in": {"type": "integer", "minimum": 1, "description": "Seconds the link stays valid."},
        "max_uses": {
            "type": "integer",
            "minimum": 1,
            "description": "How often it may be used; 1 = single-use.",
        },
    },
}


@dataclass(frozen=True)
class Link:
    token_hash: str
    download_id: str
    tenant: str
    user_id: str
    created_at: str
    expires_at: str
    max_uses: int
    uses: int = 0
    revoked: bool = False
    # Open claims: a prefix of the claim id's SHA-256 -> the end of its window (ISO).
    claims: dict[str, str] = field(default_factory=dict)

    @property
    def link_id(self) -> str:
        """The public name of the link (as in the audit trail): never usable as the token."""
        return link_actor(self.token_hash)

    def claim_open(self, claim_hash: str, now: str) -> bool:
        """Whether this claim's window is still open (and the link still alive)."""
        until = self.claims.get(claim_hash)
        return until is not None and until > now and not self.revoked and self.expires_at > now

    def refusal(self, now: str) -> str | None:
        """Why this link can no longer be used, or None."""
        if self.revoked:
            return "the link was revoked"
        if self.uses >= self.max_uses:
            return "the link has been used up"
        if self.expires_at <= now:
            return "the link has expired"
        return None


@dataclass(frozen=True)
class IssuedLink:
    """A new link as its creator sees it: the only time the token is shown."""

    token: str
    link: Link

    def to_api(self, base_url: str) -> dict[str, Any]:
        return {
            "url": f"{base_url}/links/{self.token}",
            "token": self.token,
            "expires_at": self.link.expires_at,
            "max_uses": self.link.max_uses,
        }


class LinkStore:
    def __init__(self, table: Table) -> None:
        self._table = table

    @staticmethod
    def _key(token_hash: str) -> dict[str, str]:
        return layout.link_key(token_hash)

    def add(self, link: Link, ttl_epoch: int) -> None:
        self._table.put_item(
            Item={
                **self._key(link.token_hash),
                **layout.links_entry(link.download_id, link.created_at, link.token_hash),
                **asdict(link),
                layout.TTL: ttl_epoch,
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def of_download(self, download_id: str) -> list[Link]:
        """The download's links, oldest first (the ones TTL has not yet removed)."""
        query = {
            "IndexName": layout.OWNER_INDEX,
            "KeyConditionExpression": f"{layout.OWNER_PK} = :links",
            "ExpressionAttributeValues": {":links": layout.links_partition(download_id)},
        }
        return [_from_item(item) for page in query_pages(self._table, query) for item in page]

    def get(self, token_hash: str) -> Link | None:
        item = self._table.get_item(Key=self._key(token_hash), ConsistentRead=True).get("Item")
        return _from_item(item) if item else None

    def claim(self, link: Link, claim_hash: str, now: str, until: str) -> Link | None:
        """Spend one use for a new claim, if the link still allows one, and record the claim
        with the end of its window; None if it did not. One conditional write.

        Each call counts at most once, whatever botocore retries: the update records a
        random id of this use, and an attempt that finds its own id there (an earlier
        attempt succeeded but its answer was lost) is that use, not another. Claims of `link`
        (as read) whose window has closed are struck off in the same write.
        """
        use_id = secrets.token_hex(16)
        stale = [name for name, end in link.claims.items() if end <= now and name != claim_hash]
        names = {"#claim": claim_hash} | {f"#old{i}": name for i, name in enumerate(stale[:_PRUNE_AT_MOST])}
        update = "SET uses = uses + :one, last_use = :use, claims.#claim = :until"
        if len(names) > 1:
            update += " REMOVE " + ", ".join(f"claims.{name}" for name in names if name != "#claim")
        try:
            result = self._table.update_item(
                Key=self._key(link.token_hash),
                UpdateExpression=update,
                ConditionExpression=(
                    "attribute_exists(pk) AND uses < max_uses AND revoked = :no AND expires_at > :now"
                    " AND (attribute_not_exists(last_use) OR last_use <> :use)"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":one": 1,
                    ":no": False,
                    ":now": now,
                    ":use": use_id,
                    ":until": until,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code == "ValidationException" and not self._has_claims(link.token_hash):
                # A link issued before claims existed has no map to add to: give it one, once.
                self._add_claims_map(link.token_hash)
                return self.claim(link, claim_hash, now, until)
            if code != "ConditionalCheckFailedException":
                raise
            item = self._table.get_item(Key=self._key(link.token_hash), ConsistentRead=True).get("Item")
            return _from_item(item) if item and item.get("last_use") == use_id else None
        return _from_item(result["Attributes"])

    def _has_claims(self, token_hash: str) -> bool:
        item = self._table.get_item(Key=self._key(token_hash), ConsistentRead=True).get("Item")
        return item is None or "claims" in item

    def _add_claims_map(self, token_hash: str) -> None:
        self._table.update_item(
            Key=self._key(token_hash),
            UpdateExpression="SET claims = if_not_exists(claims, :empty)",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":empty": {}},
        )

    def revoke(self, token_hash: str) -> None:
        """Mark the link revoked; LinkNotFound if it is gone (TTL may delete it at any time,
        and an unconditional update would then create a stub record with nothing but `revoked`)."""
        try:
            self._table.update_item(
                Key=self._key(token_hash),
                UpdateExpression="SET revoked = :yes",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":yes": True},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise LinkNotFound("no such link") from None
            raise


def _from_item(item: dict[str, Any]) -> Link:
    return Link(**{name: value for name, value in plain(item).items() if name in Link.__dataclass_fields__})


_SCHEMAS = {root: Schema(REQUEST_SCHEMA, root=root) for root in ("", "link")}


def check_request(body: Any, *, max_ttl: int, max_uses: int, root: str = "") -> dict[str, int]:
    """{expires_in?, max_uses?}, on its own (root '') or inside POST /downloads (root 'link')."""
    _SCHEMAS[root].check(body)
    prefix = f"{root}/" if root else ""
    if body.get("expires_in", 1) > max_ttl:
        raise InvalidParams(
            f"{prefix}expires_in must be at most {max_ttl} seconds", path=f"{prefix}expires_in"
        )
    if body.get("max_uses", 1) > max_uses:
        raise InvalidParams(f"{prefix}max_uses must be at most {max_uses}", path=f"{prefix}max_uses")
    return dict(body)


def issue(store: LinkStore, download: Download, *, expires_in: int, max_uses: int) -> IssuedLink:
    """A new link to `download`; it never outlives the download's artifact."""
    if download.state in (State.FAILED, State.CANCELLED, State.EXPIRED):
        raise DownloadUnavailable(
            f"download state is {download.state.value}: it has no file to link to", state=download.state.value
        )
    now = clock.now()
    expires = clock.later(expires_in, now)
    if download.expires_at and clock.parse(download.expires_at) < expires:
        expires = clock.parse(download.expires_at)
    token = secrets.token_urlsafe(32)
    link = Link(
        token_hash=hash_secret(token),
        download_id=download.id,
        tenant=download.tenant,
        user_id=download.user_id,
        created_at=clock.iso(now),
        expires_at=clock.iso(expires),
        max_uses=max_uses,
    )
    # DynamoDB's TTL removes the record a day after the link can last be used.
    store.add(link, ttl_epoch=int(expires.timestamp()) + 86_400)
    return IssuedLink(token, link)


def find(store: LinkStore, token: str) -> Link:
    link = store.get(hash_secret(token)) if _TOKEN.match(token) else None
    if link is None:
        raise LinkNotFound("no such link")
    return link


def find_owned(store: LinkStore, principal: Principal, token: str) -> Link:
    """The link, if the caller may manage it: its creator, or their tenant's admin."""
    link = find(store, token)
    if link.tenant != principal.tenant:
        raise LinkNotFound("no such link")
    if link.user_id != principal.user_id and not principal.is_admin:
        raise Forbidden("this link belongs to another user")
    return link


def new_claim_id() -> str:
    return secrets.token_urlsafe(16)


def claim_hash(claim_id: str) -> str | None:
    """What the link record keeps of a claim id; None for anything that is not one."""
    return hash_secret(claim_id)[:_CLAIM_HASH_CHARS] if _CLAIM_ID.match(claim_id) else None


def check_usable(
    link: Link, download: Download | None, now: str, retry_after: int, *, spend: bool
) -> Download:
    """The download behind `link` if it can be handed out now, or why not. `spend`: whether
    the caller needs a use left (a new claim); a reader or an open claim does not."""
    if link.revoked or link.expires_at <= now or (spend and link.uses >= link.max_uses):
        raise LinkGone(link.refusal(now) or "the link can no longer be used", reason=_reason(link, now))
    if download is None or download.state in (State.FAILED, State.CANCELLED, State.EXPIRED):
        state = download.state.value if download else "deleted"
        raise LinkGone(f"the download is {state}", state=state, reason="download_gone")
    if download.state in ACTIVE_STATES:
        raise LinkNotReady(
            "the download is not ready yet; retry later",
            retry_after=retry_after,
            state=download.state.value,
            progress=asdict(download.progress),
        )
    if download.expires_at and download.expires_at <= now:
        raise LinkGone("the download has expired", state=State.EXPIRED.value, reason="download_gone")
    return download


def _reason(link: Link, now: str) -> str:
    if link.revoked:
        return "revoked"
    if link.expires_at <= now:
        return "expired"
    return "used_up"


def redeem(store: LinkStore, link: Link, claim: str, now: str, until: str) -> Link:
    """Spend one use of `link` for the new claim `claim` (a claim hash), or LinkGone."""
    used = store.claim(link, claim, now, until)
    if used is None:  # lost the race for the last use, or revoked/expired meanwhile
        latest = store.get(link.token_hash) or link
        raise LinkGone(latest.refusal(now) or "the link can no longer be used", reason=_reason(latest, now))
    return used
