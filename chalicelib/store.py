"""DynamoDB records: downloads and API keys, in one table.

Every state change is a conditional write naming the states it may start from, so a
terminal state is never overwritten (DONE -> EXPIRED is the only exit from one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.errors import DownloadNotFound, InvalidCursor, QuotaExceeded
from chalicelib.models import ACTIVE_STATES, Download, Principal, Progress, State

OWNER_INDEX = "by_owner"
DUE_INDEX = "by_due"
# The due index's partitions: work is spread over this many keys, so no one key runs hot.
_DUE_SHARDS = 4
_DOWNLOAD_SK = "DOWNLOAD"
_KEY_SK = "APIKEY"
_USER_SK = "USER"
_QUOTA_SK = "QUOTA"
_QUOTA_RETRY_AFTER_SECONDS = 30


class StateConflict(Exception):
    """A conditional write found the download in a state it may not move from."""

    def __init__(self, current: Download | None) -> None:
        super().__init__(f"download is {current.state if current else 'missing'}")
        self.current = current


def _is_conditional_failure(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def _cancelled_by_condition(error: ClientError, index: int) -> bool:
    """A transaction cancelled because its `index`-th item's condition failed."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return False
    reasons = error.response.get("CancellationReasons") or []
    return len(reasons) > index and reasons[index].get("Code") == "ConditionalCheckFailed"


def _due(download_id: str, when: datetime) -> dict[str, str]:
    return {
        "gsi2pk": f"DUE#{int(download_id[-4:], 16) % _DUE_SHARDS}",
        "gsi2sk": f"{clock.iso(when)}#{download_id}",
    }


def query_pages(table: Any, arguments: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Every page of a query (up to 1 MB each), following LastEvaluatedKey."""
    arguments = dict(arguments)
    while True:
        page = table.query(**arguments)
        yield page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def query_count(table: Any, arguments: dict[str, Any]) -> int:
    """How many items a query matches (after its filter), without reading them out."""
    arguments = {**arguments, "Select": "COUNT"}
    total = 0
    while True:
        page = table.query(**arguments)
        total += int(page.get("Count", 0))
        if "LastEvaluatedKey" not in page:
            return total
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Lifetimes:
    """How long a download may run, and how long its record is kept once it has finished."""

    build_deadline_seconds: int = 2 * 3600
    record_retention_seconds: int = 30 * 24 * 3600


class DownloadStore:
    """Download records. Each also sits in the `by_due` index under the time when cleanup
    must next look at it: the build deadline while it is active, its expiry while DONE, the
    end of its retention once finished. One query then finds every piece of overdue work.
    """

    def __init__(self, table: Any, lifetimes: Lifetimes | None = None) -> None:
        self._table = table
        self._client = table.meta.client  # the resource's client: plain Python values
        self._lifetimes = lifetimes or Lifetimes()

    @staticmethod
    def _key(download_id: str) -> dict[str, str]:
        return {"pk": f"DOWNLOAD#{download_id}", "sk": _DOWNLOAD_SK}

    @staticmethod
    def _owner(tenant: str, user_id: str) -> str:
        return f"OWNER#{tenant}#{user_id}"

    @staticmethod
    def _quota_key(tenant: str, user_id: str) -> dict[str, str]:
        return {"pk": f"QUOTA#{tenant}#{user_id}", "sk": _QUOTA_SK}

    def create(self, download: Download, max_active: int) -> None:
        """Store a new PENDING download, counting it against its owner's active downloads.

        The count and the record are written in one transaction, so the limit holds however
        many requests race; QuotaExceeded when the owner already has `max_active`.
        """
        deadline = clock.parse(download.created_at) + timedelta(
            seconds=self._lifetimes.build_deadline_seconds
        )
        item = {
            **self._key(download.id),
            **download.to_item(),
            "gsi1pk": self._owner(download.tenant, download.user_id),
            "gsi1sk": f"{download.created_at}#{download.id}",
            **_due(download.id, deadline),
        }
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table.name,
                            "Key": self._quota_key(download.tenant, download.user_id),
                            "UpdateExpression": "SET active = if_not_exists(active, :zero) + :one",
                            "ConditionExpression": "attribute_not_exists(active) OR active < :limit",
                            "ExpressionAttributeValues": {":zero": 0, ":one": 1, ":limit": max_active},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table.name,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except ClientError as error:
            if _cancelled_by_condition(error, 0):
                raise QuotaExceeded(
                    f"you have {max_active} downloads pending or running; wait for one to finish",
                    retry_after=_QUOTA_RETRY_AFTER_SECONDS,
                    limit=max_active,
                ) from None
            raise

    def active_count(self, tenant: str, user_id: str) -> int:
        item = self._table.get_item(Key=self._quota_key(tenant, user_id), ConsistentRead=True).get("Item")
        return int(item["active"]) if item else 0

    def get(self, download_id: str) -> Download | None:
        item = self._table.get_item(Key=self._key(download_id), ConsistentRead=True).get("Item")
        return Download.from_item(item) if item else None

    def require(self, download_id: str) -> Download:
        """The download, for a step of its workflow: DownloadNotFound if it is gone."""
        download = self.get(download_id)
        if download is None:
            raise DownloadNotFound(f"download {download_id} does not exist")
        return download

    def transition(
        self, download_id: str, allowed_from: Iterable[State], to: State, **fields: Any
    ) -> Download:
        """Move a download to `to` if it is in one of `allowed_from`; raise StateConflict if not.

        Leaving the active states frees one of the owner's quota slots in the same transaction.
        """
        sources = list(allowed_from)
        update = self._transition_update(
            download_id, sources, to, {**fields, **self._next_due(download_id, to, fields)}
        )
        frees_slot = to not in ACTIVE_STATES and set(sources) <= ACTIVE_STATES
        try:
            if not frees_slot:
                result = self._table.update_item(**update, ReturnValues="ALL_NEW")
                return Download.from_item(result["Attributes"])
            owner = self.get(download_id)
            if owner is None:
                raise StateConflict(None)
            self._client.transact_write_items(
                TransactItems=[
                    {"Update": {"TableName": self._table.name, **update}},
                    {
                        "Update": {
                            "TableName": self._table.name,
                            "Key": self._quota_key(owner.tenant, owner.user_id),
                            "UpdateExpression": "ADD active :minus_one",
                            "ExpressionAttributeValues": {":minus_one": -1},
                        }
                    },
                ]
            )
        except ClientError as error:
            if _is_conditional_failure(error) or _cancelled_by_condition(error, 0):
                raise StateConflict(self.get(download_id)) from None
            raise
        moved = self.get(download_id)
        assert moved is not None
        return moved

    def _next_due(self, download_id: str, to: State, fields: dict[str, Any]) -> dict[str, Any]:
        """The index entry (and the TTL backstop) for a download entering `to`."""
        if to in ACTIVE_STATES:
            return {}  # the build deadline set at creation still holds
        now = clock.now()
        retention = timedelta(seconds=self._lifetimes.record_retention_seconds)
        if to is State.DONE:
            due = clock.parse(fields["expires_at"])
            backstop = due + retention
        else:
            due = now + retention
            backstop = due
        # DynamoDB's TTL deletes the record a day after cleanup should have, if it has not.
        return {**_due(download_id, due), "ttl": int((backstop + timedelta(days=1)).timestamp())}

    def due(self, now: datetime, limit: int) -> list[Download]:
        """Downloads whose due time has passed, oldest first per shard, at most `limit`."""
        found: list[Download] = []
        for shard in range(_DUE_SHARDS):
            query = {
                "IndexName": DUE_INDEX,
                "KeyConditionExpression": "gsi2pk = :shard AND gsi2sk < :now",
                "ExpressionAttributeValues": {":shard": f"DUE#{shard}", ":now": clock.iso(now)},
                "Limit": limit,
            }
            for page in query_pages(self._table, query):
                found.extend(Download.from_item(item) for item in page)
                if len(found) >= limit:
                    return found[:limit]
        return found

    def delete(self, download_id: str, states: Iterable[State]) -> bool:
        """Remove a finished download's record, if it is still in one of `states`."""
        allowed = list(states)
        try:
            self._table.delete_item(
                Key=self._key(download_id),
                ConditionExpression="#state IN (" + ", ".join(f":s{i}" for i in range(len(allowed))) + ")",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={f":s{i}": state.value for i, state in enumerate(allowed)},
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def _transition_update(
        self, download_id: str, sources: list[State], to: State, fields: dict[str, Any]
    ) -> dict[str, Any]:
        names = {"#state": "state"}
        values: dict[str, Any] = {":to": to.value}
        sets = ["#state = :to"]
        removes = []
        for index, (name, value) in enumerate(fields.items()):
            names[f"#f{index}"] = name
            if value is None:
                removes.append(f"#f{index}")
            else:
                values[f":f{index}"] = value
                sets.append(f"#f{index} = :f{index}")
        for index, state in enumerate(sources):
            values[f":s{index}"] = state.value
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        condition = "#state IN (" + ", ".join(f":s{i}" for i in range(len(sources))) + ")"
        return {
            "Key": self._key(download_id),
            "UpdateExpression": expression,
            "ConditionExpression": f"attribute_exists(pk) AND {condition}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def record_progress(self, download_id: str, progress: Progress) -> bool:
        """Write progress while RUNNING. False means the download left RUNNING (cancelled)."""
        try:
            self._table.update_item(
                Key=self._key(download_id),
                UpdateExpression="SET progress = :p",
                ConditionExpression="#state = :running",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":p": asdict(progress), ":running": State.RUNNING.value},
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def record_skipped(self, download_id: str, keys: list[str]) -> bool:
        """Set the keys a build left out while RUNNING. False means it left RUNNING (cancelled)."""
        try:
            self._table.update_item(
                Key=self._key(download_id),
                UpdateExpression="SET skipped = :k",
                ConditionExpression="#state = :running",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":k": keys, ":running": State.RUNNING.value},
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def add_progress(self, download_id: str, files: int, bytes_: int) -> bool:
        """Add to the done counters while RUNNING (parallel segments share one record).

        False means the download left RUNNING (cancelled).
        """
        try:
            self._table.update_item(
                Key=self._key(download_id),
                UpdateExpression="SET progress.files_done = progress.files_done + :f, "
                "progress.bytes_done = progress.bytes_done + :b",
                ConditionExpression="#state = :running",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":f": files, ":b": bytes_, ":running": State.RUNNING.value},
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def list_owned(
        self, tenant: str, user_id: str, *, state: State | None, limit: int, cursor: str | None
    ) -> tuple[list[Download], str | None]:
        """The owner's downloads, newest first, `limit` at a time."""
        owner = self._owner(tenant, user_id)
        start = _decode_cursor(cursor, owner) if cursor else None
        found: list[Download] = []
        while len(found) < limit:
            query: dict[str, Any] = {
                "IndexName": OWNER_INDEX,
                "KeyConditionExpression": "gsi1pk = :owner",
                "ExpressionAttributeValues": {":owner": owner},
                "ScanIndexForward": False,
                "Limit": limit - len(found),
            }
            if state is not None:
                query["FilterExpression"] = "#state = :state"
                query["ExpressionAttributeNames"] = {"#state": "state"}
                query["ExpressionAttributeValues"][":state"] = state.value
            if start:
                query["ExclusiveStartKey"] = start
            page = self._table.query(**query)
            found.extend(Download.from_item(item) for item in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return found, None
        last = found[-1]
        return found, _encode_cursor(
            {**self._key(last.id), "gsi1pk": owner, "gsi1sk": f"{last.created_at}#{last.id}"}
        )


def _encode_cursor(key: Mapping[str, str]) -> str:
    payload = json.dumps({"k": key["gsi1sk"], "i": key["pk"]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, owner: str) -> dict[str, str]:
    """Rebuild the start key from the cursor; the owner always comes from the caller."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        sort_key, pk = data["k"], data["i"]
        if not (isinstance(sort_key, str) and isinstance(pk, str) and pk.startswith("DOWNLOAD#")):
            raise ValueError("cursor fields")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this API returned") from None
    return {"pk": pk, "sk": _DOWNLOAD_SK, "gsi1pk": owner, "gsi1sk": sort_key}


class KeyStore:
    """API keys, stored by their SHA-256: a leaked table does not leak usable keys."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def principal_for(self, api_key: str) -> Principal | None:
        item = self._table.get_item(Key={"pk": f"APIKEY#{hash_secret(api_key)}", "sk": _KEY_SK}).get("Item")
        if not item or item.get("disabled"):
            return None
        return Principal(item["tenant"], item["user_id"], frozenset(item.get("roles", [])))

    def add(self, api_key: str, principal: Principal) -> None:
        """Store a key for `principal`, and the principal itself (events act as it by name)."""
        about = {"tenant": principal.tenant, "user_id": principal.user_id, "roles": sorted(principal.roles)}
        self._table.put_item(Item={"pk": f"APIKEY#{hash_secret(api_key)}", "sk": _KEY_SK, **about})
        self._table.put_item(Item={**self._user_key(principal.tenant, principal.user_id), **about})

    @staticmethod
    def _user_key(tenant: str, user_id: str) -> dict[str, str]:
        return {"pk": f"USER#{tenant}#{user_id}", "sk": _USER_SK}

    def principal_named(self, tenant: str, user_id: str) -> Principal | None:
        """The principal of a user who holds a key in `tenant`, None if there is none."""
        item = self._table.get_item(Key=self._user_key(tenant, user_id), ConsistentRead=True).get("Item")
        if not item or item.get("disabled"):
            return None
        return Principal(item["tenant"], item["user_id"], frozenset(item.get("roles", [])))
