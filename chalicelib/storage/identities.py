"""IAM callers mapped to principals: the table a stage on IAM sign-in (SATCHEL_AUTH_MODE=iam)
looks callers up in.

One record per IAM principal (`IAMPRINCIPAL#<arn>`, storage/layout.py), naming the tenant,
user and roles it acts as. The ARN is the normalised one (api/iam.py): a role, never a
session of it. Written by operators (`python -m scripts.keys map-iam`), read by the API handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.core.models import Principal
from chalicelib.storage import layout

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table


class IdentityStore:
    def __init__(self, table: Table) -> None:
        self._table = table

    def map(self, arn: str, principal: Principal) -> None:
        about = {"tenant": principal.tenant, "user_id": principal.user_id, "roles": sorted(principal.roles)}
        self._table.put_item(Item={**layout.iam_principal_key(arn), **about, "arn": arn})

    def unmap(self, arn: str) -> bool:
        answer = self._table.delete_item(Key=layout.iam_principal_key(arn), ReturnValues="ALL_OLD")
        return bool(answer.get("Attributes"))

    def principal_for(self, arn: str) -> Principal | None:
        found = self._table.get_item(Key=layout.iam_principal_key(arn))
        item: dict[str, Any] | None = found.get("Item")
        if not item:
            return None
        return Principal(item["tenant"], item["user_id"], frozenset(item.get("roles", [])))
