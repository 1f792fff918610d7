"""Give a user an API key on a deployed stack: `python -m scripts.add_api_key --stack satchel-prod
--tenant acme --user alice [--admin]`.

The key is printed once and stored only as its SHA-256, in the stack's table (found from
the stack's `TableName` output, or named with --table). Uses your AWS credentials; it needs
dynamodb:PutItem on the table (and cloudformation:DescribeStacks with --stack).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import TYPE_CHECKING

import boto3

from chalicelib.core.models import Principal
from chalicelib.core.names import PRINCIPAL_ID_PATTERN, is_principal_id
from chalicelib.storage.keys import KeyStore

if TYPE_CHECKING:  # stubs only (requirements-dev.txt)
    from mypy_boto3_cloudformation.client import CloudFormationClient
    from mypy_boto3_dynamodb.service_resource import DynamoDBServiceResource


def table_of_stack(cloudformation: CloudFormationClient, stack: str) -> str:
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    for output in described.get("Outputs", []):
        if output["OutputKey"] == "TableName":
            name: str = output["OutputValue"]
            return name
    raise SystemExit(f"stack {stack} has no TableName output: is it a Satchel stack?")


def principal_id(value: str) -> str:
    """An argparse type: refused here, the id would never match what events and keys name."""
    if not is_principal_id(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid id: ids match {PRINCIPAL_ID_PATTERN}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="the CloudFormation stack (make deploy's STACK, satchel-<stage>)")
    where.add_argument("--table", help="the DynamoDB table itself")
    parser.add_argument(
        "--tenant",
        required=True,
        type=principal_id,
        help="the user's tenant: their sources are s3://<bucket>/<tenant>/",
    )
    parser.add_argument("--user", required=True, type=principal_id, help="the user's id within the tenant")
    parser.add_argument(
        "--admin", action="store_true", help="the tenant admin role: sees the tenant's downloads"
    )
    parser.add_argument("--region", help="the stack's region (default: your AWS configuration's)")
    args = parser.parse_args(argv)

    session = boto3.session.Session(region_name=args.region)
    table = args.table or table_of_stack(session.client("cloudformation"), args.stack)
    roles = frozenset({Principal.ADMIN_ROLE}) if args.admin else frozenset()
    api_key = secrets.token_urlsafe(32)
    resource: DynamoDBServiceResource = session.resource("dynamodb")
    KeyStore(resource.Table(table)).add(api_key, Principal(args.tenant, args.user, roles))
    print(api_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
