"""Manage any tenant's sign-in on a deployed stack, straight in its table (an operator's tool;
tenant admins use `satchel keys`, which goes through the API):

    python -m scripts.keys --stack satchel-prod create --tenant acme --user alice [--admin] [--expires-in S]
    python -m scripts.keys --stack satchel-prod list --tenant acme
    python -m scripts.keys --stack satchel-prod rotate --tenant acme KEY_ID [--expires-in S] [--grace S]
    python -m scripts.keys --stack satchel-prod disable --tenant acme KEY_ID
    python -m scripts.keys --stack satchel-prod map-iam ROLE_ARN --tenant acme --user etl [--admin]
    python -m scripts.keys --stack satchel-prod unmap-iam ROLE_ARN
    python -m scripts.keys --stack satchel-prod index-legacy

`index-legacy` (once, after upgrading) gives keys made before keys had ids their id, so they
can be listed, rotated and disabled like the others. `rotate --grace S` leaves the old key
working S seconds more (at most a week, as through the API), for its holders to switch over;
without it the old key is disabled at once.

A key is printed once, alone on stdout, and stored only as its SHA-256. `map-iam` maps an IAM
role or user to a principal for a stage that signs in with IAM (an assumed-role session ARN
is accepted and mapped as its role). Uses your AWS credentials: dynamodb:PutItem,
UpdateItem, Query (the by_owner index), DeleteItem (unmap-iam) and Scan (index-legacy) on the
table, and
cloudformation:DescribeStacks with --stack.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import boto3

from chalicelib.api import iam
from chalicelib.api.keys import MAX_GRACE_SECONDS
from chalicelib.core import clock
from chalicelib.core.models import Principal
from chalicelib.storage.identities import IdentityStore
from chalicelib.storage.keys import KeyRecord, KeyStore
from scripts.add_api_key import principal_id, table_of_stack

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_dynamodb.service_resource import Table


def _roles(args: argparse.Namespace) -> frozenset[str]:
    return frozenset(args.role) | ({Principal.ADMIN_ROLE} if args.admin else frozenset())


def _expires_at(args: argparse.Namespace) -> str | None:
    return clock.iso(clock.later(args.expires_in)) if args.expires_in else None


def _show(record: KeyRecord) -> str:
    state = "disabled" if record.disabled else "active"
    roles = ",".join(sorted(record.principal.roles)) or "-"
    return (
        f"{record.key_id}  {record.prefix}…  {record.principal.tenant}/{record.principal.user_id}  {roles}  "
        f"created {record.created_at}  expires {record.expires_at or 'never'}  "
        f"last used {record.last_used_at or 'never'}  {state}"
    )


def _find(keys: KeyStore, args: argparse.Namespace) -> KeyRecord:
    record = keys.find(args.tenant, args.key_id)
    if record is None:
        raise SystemExit(f"no key {args.key_id} in tenant {args.tenant} (`list --tenant {args.tenant}`)")
    return record


def run(table: Table, args: argparse.Namespace) -> int:
    keys, identities = KeyStore(table), IdentityStore(table)
    match args.action:
        case "create":
            issued = keys.issue(Principal(args.tenant, args.user, _roles(args)), expires_at=_expires_at(args))
            print(f"key {issued.record.key_id}: shown once, store it now", file=sys.stderr)
            print(issued.api_key)
        case "list":
            for record in keys.list(args.tenant):
                print(_show(record))
        case "rotate":
            if not 0 <= args.grace <= MAX_GRACE_SECONDS:
                raise SystemExit(f"--grace must be from 0 to {MAX_GRACE_SECONDS} seconds")
            old = _find(keys, args)
            issued = keys.rotate(old, expires_at=_expires_at(args), grace_seconds=args.grace)
            fate = f"works {args.grace} s more" if args.grace else "disabled"
            print(f"key {args.key_id} {fate}; its successor {issued.record.key_id}:", file=sys.stderr)
            print(issued.api_key)
        case "disable":
            print(_show(keys.disable(_find(keys, args))))
        case "index-legacy":
            print(f"indexed {keys.index_unlisted()} key(s)")
        case "map-iam" | "unmap-iam":
            arn = iam.normalise(args.arn)
            if arn is None:
                raise SystemExit(f"{args.arn!r} is not an IAM role, user or session ARN")
            if args.action == "unmap-iam":
                if not identities.unmap(arn):
                    raise SystemExit(f"{arn} was not mapped")
                print(f"unmapped {arn}")
            else:
                identities.map(arn, Principal(args.tenant, args.user, _roles(args)))
                print(f"mapped {arn} to {args.tenant}/{args.user}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="the CloudFormation stack (make deploy's STACK, satchel-<stage>)")
    where.add_argument("--table", help="the DynamoDB table itself")
    parser.add_argument("--region", help="the stack's region (default: your AWS configuration's)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def tenant(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--tenant", required=True, type=principal_id, help="the tenant")
        return sub

    def principal(sub: argparse.ArgumentParser) -> None:
        tenant(sub).add_argument("--user", required=True, type=principal_id, help="the user's id")
        sub.add_argument("--role", action="append", default=[], type=principal_id, help="a role (repeatable)")
        sub.add_argument("--admin", action="store_true", help="the tenant admin role")

    def lifetime(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--expires-in", type=int, metavar="S", help="the key expires in S seconds")

    create = actions.add_parser("create", help="issue a key (printed once)")
    principal(create)
    lifetime(create)
    tenant(actions.add_parser("list", help="the tenant's keys, never the keys themselves"))
    rotate = tenant(actions.add_parser("rotate", help="issue a successor, disable the key"))
    rotate.add_argument("key_id")
    lifetime(rotate)
    rotate.add_argument(
        "--grace",
        type=int,
        default=0,
        metavar="S",
        help="the old key works S seconds more (default: disabled now)",
    )
    tenant(actions.add_parser("disable", help="disable a key")).add_argument("key_id")
    mapping = actions.add_parser("map-iam", help="map an IAM role or user to a principal (IAM stages)")
    mapping.add_argument("arn")
    principal(mapping)
    actions.add_parser("unmap-iam", help="remove an IAM mapping").add_argument("arn")
    actions.add_parser("index-legacy", help="list keys made before keys had ids (once, after upgrading)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    name = args.table or table_of_stack(session.client("cloudformation"), args.stack)
    return run(session.resource("dynamodb").Table(name), args)


if __name__ == "__main__":
    sys.exit(main())
