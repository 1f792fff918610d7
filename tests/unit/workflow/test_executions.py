"""An execution is named for its download (workflow/executions.py): its ARN follows from the
state machine's, so a lost answer to StartExecution can be looked up by name."""

from __future__ import annotations

from chalicelib.workflow import executions


def test_the_execution_arn_is_the_state_machines_with_the_download_as_its_name() -> None:
    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:satchel-prod-download"
    assert executions.execution_arn(machine, "ab" * 16) == (
        "arn:aws:states:eu-west-1:123456789012:execution:satchel-prod-download:" + "ab" * 16
    )
