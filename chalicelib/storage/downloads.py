"""DynamoDB records of downloads (their keys: storage/layout.py).

Every state change is a conditional write naming the states it may start from, so a
terminal state is never overwritten (DONE -> EXPIRED is the only exit from one).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from chalicelib.core import clock
from chalicelib.core.errors import DownloadNotFound, InvalidCursor, QuotaExceeded
from chalicelib.core.models import ACTIVE_STATES, Download, Progress, State
from chalicelib.storage import layout
from chalicelib.storage.queries import query_pages

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef, UpdateTypeDef

_QUOTA_RETRY_AFTER_SECONDS = 30
# Moving a download in the due index; the values are named after the attributes (_values).
_SET_DUE = f"SET {layout.DUE_PK} = :{layout.DUE_PK}, {layout.DUE_SK} = :{layout.DUE_SK}"
# The due index entry is still the one that was read (Due.slot).
_SAME_SLOT = f"{layout.DUE_SK} = :slot"
# Work still owed after a committed transition (the sweep's follow-up: chalicelib/triggers/cleanup.py).
_EFFECTS = "pending_effects"
# While work is owed, the download is due again this soon: the next sweep finishes what a
# crashed or failed one left. Whoever moves the due time first owns the work until then.
EFFECTS_LEASE = timedelta(minutes=2)


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


def _values(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {f":{name}": value for name, value in fields.items()}


def _due_item(item: dict[str, Any]) -> Due:
    return Due(Download.from_item(item), frozenset(item.get(_EFFECTS, ())), str(item[layout.DUE_SK]))


@dataclass(frozen=True)
class Lifetimes:
    """How long a download may run, and how long its record is kept once it has finished."""

    build_deadline_seconds: int = 2 * 3600
    record_retention_seconds: int = 30 * 24 * 3600
    # How long before its expiry a DONE download no one fetched is warned of; 0: never.
    expiring_unused_seconds: int = 0


@dataclass(frozen=True)
class Due:
    """A download the sweep must look at, with what is still owed after its last transition."""

    download: Download
    effects: frozenset[str]
    # The due index's sort key as read: a claim succeeds only if no one has moved it since.
    slot: str


class DownloadStore:
    """Download records. Each also sits in the `by_due` index under the time when cleanup
    must next look at it: the build deadline while it is active, its expiry while DONE, the
    end of its retention once finished. One query then finds every piece of overdue work.
    """

    def __init__(
        self, table: Table, lifetimes: Lifetimes | None = None, max_active_per_tenant: int | None = None
    ) -> None:
        self._table = table
        self._client = table.meta.client  # the resource's client: plain Python values
        self._lifetimes = lifetimes or Lifetimes()
        # None: the tenant's active downloads are counted, not limited.
        self._max_active_per_tenant = max_active_per_tenant

    def _count_active(self, key: dict[str, str], limit: int | None) -> TransactWriteItemTypeDef:
        """The transaction item adding one active download to a counter, within `limit`."""
        values = {":zero": 0, ":one": 1}
        update: UpdateTypeDef = {
            "TableName": self._table.name,
            "Key": key,
            "UpdateExpression": "SET active = if_not_exists(active, :zero) + :one",
            "ExpressionAttributeValues": values,
        }
        if limit is not None:
            update["ConditionExpression"] = "attribute_not_exists(active) OR active < :limit"
            values[":limit"] = limit
        return {"Update": update}

    def _free_active(self, key: dict[str, str]) -> TransactWriteItemTypeDef:
        return {
            "Update": {
                "TableName": self._table.name,
                "Key": key,
                "UpdateExpression": "ADD active :minus_one",
                "ExpressionAttributeValues": {":minus_one": -1},
            }
        }

    def create(self, download: Download, max_active: int) -> None:
        """Store a new PENDING download, counting it against its owner's and its tenant's
        active downloads.

        The counts and the record are written in one transaction, so the limits hold however
        many requests race; QuotaExceeded when the owner already has `max_active`, or the
        tenant its own limit.
        """
        deadline = clock.parse(download.created_at) + timedelta(
            seconds=self._lifetimes.build_deadline_seconds
        )
        item = {
            **layout.download_key(download.id),
            **download.to_item(),
            **layout.owner_entry(download.tenant, download.user_id, download.created_at, download.id),
            **layout.due_entry(download.id, deadline),
        }
        tenant_limit = self._max_active_per_tenant
        try:
            self._client.transact_write_items(
                TransactItems=[
                    self._count_active(layout.quota_key(download.tenant, download.user_id), max_active),
                    self._count_active(layout.tenant_quota_key(download.tenant), tenant_limit),
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
                    scope="user",
                ) from None
            if _cancelled_by_condition(error, 1):
                raise QuotaExceeded(
                    f"your tenant has {tenant_limit} downloads pending or running; wait for one to finish",
                    retry_after=_QUOTA_RETRY_AFTER_SECONDS,
                    limit=tenant_limit,
                    scope="tenant",
                ) from None
            raise

    def active_count(self, tenant: str, user_id: str) -> int:
        found = self._table.get_item(Key=layout.quota_key(tenant, user_id), ConsistentRead=True)
        item: dict[str, Any] | None = found.get("Item")
        return int(item["active"]) if item else 0

    def tenant_active_count(self, tenant: str) -> int:
        found = self._table.get_item(Key=layout.tenant_quota_key(tenant), ConsistentRead=True)
        item: dict[str, Any] | None = found.get("Item")
        return int(item["active"]) if item else 0

    def get(self, download_id: str) -> Download | None:
        item = self._table.get_item(Key=layout.download_key(download_id), ConsistentRead=True).get("Item")
        return Download.from_item(item) if item else None

    def require(self, download_id: str) -> Download:
        """The download, for a step of its workflow: DownloadNotFound if it is gone."""
        download = self.get(download_id)
        if download is None:
            raise DownloadNotFound(f"download {download_id} does not exist")
        return download

    def transition(
        self,
        download_id: str,
        allowed_from: Iterable[State],
        to: State,
        *,
        effects: Collection[str] = (),
        **fields: Any,
    ) -> Download:
        """Move a download to `to` if it is in one of `allowed_from`; raise StateConflict if not.

        Leaving the active states frees one of the owner's and one of the tenant's quota
        slots in the same transaction. `effects` names the work still owed once the move is
        committed: it is recorded with the move, and the download stays due within
        EFFECTS_LEASE until `effect_done` has struck off every one.
        """
        sources = list(allowed_from)
        due = self._next_due(download_id, to, fields)
        if effects:
            if to in ACTIVE_STATES:
                raise ValueError("only a move out of the active states can owe follow-up work")
            due.update(layout.due_entry(download_id, clock.now() + EFFECTS_LEASE))
            due[_EFFECTS] = set(effects)
        update = self._transition_update(download_id, sources, to, {**fields, **due})
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
                    # The arguments of the update_item above (the code's own), plus the table.
                    {"Update": cast("UpdateTypeDef", {"TableName": self._table.name, **update})},
                    self._free_active(layout.quota_key(owner.tenant, owner.user_id)),
                    self._free_active(layout.tenant_quota_key(owner.tenant)),
                ]
            )
        except ClientError as error:
            if _is_conditional_failure(error) or _cancelled_by_condition(error, 0):
                raise StateConflict(self.get(download_id)) from None
            raise
        moved = self.get(download_id)
        assert moved is not None
        return moved

    def claim(self, found: Due, now: datetime, effects: Collection[str] | None = None) -> Due | None:
        """Take on the work owed for a download found due: `effects` when given (new work),
        else what its record still owes. None if another sweep moved it first."""
        values: dict[str, Any] = {
            ":slot": found.slot,
            **_values(layout.due_entry(found.download.id, now + EFFECTS_LEASE)),
        }
        expression = _SET_DUE
        if effects is not None:
            expression += f", {_EFFECTS} = :effects"
            values[":effects"] = set(effects)
        try:
            result = self._table.update_item(
                Key=layout.download_key(found.download.id),
                UpdateExpression=expression,
                ConditionExpression=_SAME_SLOT,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return None
            raise
        return _due_item(result["Attributes"])

    def claim_unused_warning(
        self, found: Due, now: datetime, effects: Collection[str], warn_at: datetime
    ) -> Due | None:
        """Take on warning that a DONE download is expiring unfetched: the owed `effects`
        and `expiring_unused_at` (the warning's time) in one write, made only if it is still
        unfetched, unwarned, and where it was found. None if not (fetched, or another sweep)."""
        try:
            result = self._table.update_item(
                Key=layout.download_key(found.download.id),
                UpdateExpression=f"{_SET_DUE}, {_EFFECTS} = :effects, expiring_unused_at = :warn_at",
                ConditionExpression=f"{_SAME_SLOT} AND attribute_not_exists(first_fetched_at)"
                " AND attribute_not_exists(expiring_unused_at)",
                ExpressionAttributeValues={
                    ":slot": found.slot,
                    ":effects": set(effects),
                    ":warn_at": clock.iso(warn_at),
                    **_values(layout.due_entry(found.download.id, now + EFFECTS_LEASE)),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return None
            raise
        return _due_item(result["Attributes"])

    def record_fetched(self, download_id: str, when: datetime) -> None:
        """Note that the download's file or URL was handed out: the first time only, one
        write that never brings a purged record back."""
        try:
            self._table.update_item(
                Key=layout.download_key(download_id),
                UpdateExpression="SET first_fetched_at = if_not_exists(first_fetched_at, :when)",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":when": clock.iso(when)},
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    def refile(self, found: Due, when: datetime) -> None:
        """File a download found due too early under `when`, so it stops taking a share of
        every sweep (an index entry edited or written under a skewed clock). No-op if
        another sweep has moved it meanwhile."""
        due = layout.due_entry(found.download.id, when)
        try:
            self._table.update_item(
                Key=layout.download_key(found.download.id),
                UpdateExpression=_SET_DUE,
                ConditionExpression=_SAME_SLOT,
                ExpressionAttributeValues={":slot": found.slot, **_values(due)},
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    def effect_done(self, download: Download, effect: str, *, last: bool) -> None:
        """Strike `effect` off the work owed; after the last one, the download is due when
        its state says (expiry, end of retention), no longer within the lease.

        The last strike clears the owed set and resets the due time only if the record is
        still as the caller saw it: in `download.state`, owing `effect` alone. A transition
        that came in meanwhile (a delete during a cancel's follow-up) records its own owed
        work, which must not be wiped: then only `effect` is struck off, and the download
        stays due for the next sweep to finish the rest."""
        if last and self._strike_last(download, effect):
            return
        self._update_existing(
            download.id,
            UpdateExpression=f"DELETE {_EFFECTS} :effect",
            ExpressionAttributeValues={":effect": {effect}},
        )

    def _strike_last(self, download: Download, effect: str) -> bool:
        fields = {"expires_at": download.expires_at} if download.state is State.DONE else {}
        # Fetched or warned of already: no warning is due, only its expiry.
        settled = bool(download.first_fetched_at or download.expiring_unused_at)
        due = self._next_due(download.id, download.state, fields, settled=settled)
        try:
            self._table.update_item(
                Key=layout.download_key(download.id),
                UpdateExpression=f"REMOVE {_EFFECTS} SET " + ", ".join(f"#{name} = :{name}" for name in due),
                ConditionExpression=(
                    f"#state = :was AND size({_EFFECTS}) = :one AND contains({_EFFECTS}, :effect)"
                ),
                # `ttl` and `state` are reserved words
                ExpressionAttributeNames={"#state": "state", **{f"#{name}": name for name in due}},
                ExpressionAttributeValues={
                    ":was": download.state.value,
                    ":one": 1,
                    ":effect": effect,
                    **_values(due),
                },
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            return False
        return True

    def _update_existing(self, download_id: str, **update: Any) -> None:
        try:
            # Never an update that would bring a purged record back as a stub.
            self._table.update_item(
                Key=layout.download_key(download_id), ConditionExpression="attribute_exists(pk)", **update
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    def unused_warning_at(self, expires: datetime, settled: bool = False) -> datetime | None:
        """When a DONE download expiring at `expires` is warned of as unused: None if the
        warning is off, or `settled` (it was fetched or warned of already)."""
        lead = self._lifetimes.expiring_unused_seconds
        if lead <= 0 or settled:
            return None
        return expires - timedelta(seconds=lead)

    def _next_due(
        self, download_id: str, to: State, fields: dict[str, Any], *, settled: bool = False
    ) -> dict[str, Any]:
        """The index entry (and the TTL backstop) for a download entering `to`."""
        if to in ACTIVE_STATES:
            return {}  # the build deadline set at creation still holds
        now = clock.now()
        retention = timedelta(seconds=self._lifetimes.record_retention_seconds)
        if to is State.DONE:
            expires = clock.parse(fields["expires_at"])
            warn_at = self.unused_warning_at(expires, settled)
            # Due first when its warning is, if that is still ahead; its expiry after.
            due = warn_at if warn_at is not None and warn_at > now else expires
            backstop = expires + retention
        else:
            due = now + retention
            backstop = due
        # DynamoDB's TTL deletes the record a day after cleanup should have, if it has not.
        ttl = int((backstop + timedelta(days=1)).timestamp())
        return {**layout.due_entry(download_id, due), layout.TTL: ttl}

    def due(self, now: datetime, limit: int) -> list[Due]:
        """Downloads whose due time has passed, at most `limit`, oldest first per shard.

        The shards are read round robin, a page of at most a fair share from each in turn,
        so a backlog in one shard does not starve the others.
        """
        share = max(1, -(-limit // layout.DUE_SHARDS))
        readers = [self._due_pages(shard, now, share) for shard in range(layout.DUE_SHARDS)]
        found: list[Due] = []
        while readers and len(found) < limit:
            for reader in list(readers):
                page = next(reader, None)
                if page is None:
                    readers.remove(reader)
                    continue
                found.extend(_due_item(item) for item in page[: limit - len(found)])
                if len(found) >= limit:
                    break
        return found

    def _due_pages(self, shard: int, now: datetime, page_size: int) -> Iterator[list[dict[str, Any]]]:
        query = {
            "IndexName": layout.DUE_INDEX,
            "KeyConditionExpression": f"{layout.DUE_PK} = :shard AND {layout.DUE_SK} < :now",
            "ExpressionAttributeValues": {":shard": layout.due_partition(shard), ":now": clock.iso(now)},
            "Limit": page_size,
        }
        return query_pages(self._table, query)

    def delete(self, download_id: str, states: Iterable[State]) -> bool:
        """Remove a finished download's record, if it is still in one of `states`."""
        allowed = list(states)
        try:
            self._table.delete_item(
                Key=layout.download_key(download_id),
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
            "Key": layout.download_key(download_id),
            "UpdateExpression": expression,
            "ConditionExpression": f"attribute_exists(pk) AND {condition}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def record_progress(self, download_id: str, progress: Progress) -> bool:
        """Write progress while RUNNING. False means the download left RUNNING (cancelled)."""
        try:
            self._table.update_item(
                Key=layout.download_key(download_id),
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
                Key=layout.download_key(download_id),
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
                Key=layout.download_key(download_id),
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
        owner = layout.owner_partition(tenant, user_id)
        start: dict[str, Any] | None = _decode_cursor(cursor, owner) if cursor else None
        found: list[Download] = []
        while len(found) < limit:
            query: dict[str, Any] = {
                "IndexName": layout.OWNER_INDEX,
                "KeyConditionExpression": f"{layout.OWNER_PK} = :owner",
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
            {**layout.download_key(last.id), **layout.owner_entry(tenant, user_id, last.created_at, last.id)}
        )


def _encode_cursor(key: Mapping[str, str]) -> str:
    payload = json.dumps({"k": key[layout.OWNER_SK], "i": key[layout.PK]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, owner: str) -> dict[str, str]:
    """Rebuild the start key from the cursor; the owner always comes from the caller."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        sort_key, pk = data["k"], data["i"]
        if not (isinstance(sort_key, str) and isinstance(pk, str) and layout.download_id_of(pk) is not None):
            raise ValueError("cursor fields")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this API returned") from None
    return {layout.PK: pk, layout.SK: layout.DOWNLOAD_SK, layout.OWNER_PK: owner, layout.OWNER_SK: sort_key}
