"""IAM sign-in: API Gateway has checked the caller's SigV4 signature (AWS_IAM authorization);
this maps the IAM principal it names to a Satchel principal.

The caller is `requestContext.identity.userArn`, normalised so that one mapping covers every
session of a role:
- `arn:<partition>:sts::<account>:assumed-role/<role>/<session>` ->
  `arn:<partition>:iam::<account>:role/<role>` (an assumed-role ARN carries no role path, so
  a role is mapped by its name: map `role/<name>`, even for a role made under a path);
- an IAM user (`arn:<partition>:iam::<account>:user/<path/><name>`) and the account root
  are kept as they are; other callers (federated users, for one) are kept as they are too.

The mapping is a table (storage/identities.py), so a new integrator needs no deployment. A
caller with no mapping is refused 403 `UnmappedPrincipal`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from chalicelib.core.errors import UnmappedPrincipal
from chalicelib.core.models import Principal
from chalicelib.storage.identities import IdentityStore

log = logging.getLogger(__name__)
_ASSUMED_ROLE = re.compile(
    r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]{1,64})/[\w+=,.@-]{1,64}$"
)
_IAM_ARN = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:[\w+=,.@/-]{1,512}$")


def normalise(arn: str) -> str | None:
    """The ARN a mapping is made for; None for what is not an IAM principal's ARN."""
    assumed = _ASSUMED_ROLE.match(arn)
    if assumed:
        partition, account, role = assumed.groups()
        return f"arn:{partition}:iam::{account}:role/{role}"
    return arn if _IAM_ARN.match(arn) else None


def caller_arn(context: Mapping[str, Any]) -> str | None:
    """The IAM caller of a request API Gateway authorized with AWS_IAM (its requestContext)."""
    identity = context.get("identity") or {}
    arn = identity.get("userArn")
    return arn if isinstance(arn, str) and arn else None


def principal_of(identities: IdentityStore, context: Mapping[str, Any]) -> Principal:
    arn = caller_arn(context)
    normalised = normalise(arn) if arn else None
    if normalised is None:
        raise UnmappedPrincipal("the request was not signed by an IAM principal")
    principal = identities.principal_for(normalised)
    if principal is None:
        # The ARN goes to the log only: answers carry no account ids.
        log.warning("refused an unmapped IAM principal: %s", normalised)
        raise UnmappedPrincipal("this IAM principal is not mapped to a Satchel user")
    return principal
