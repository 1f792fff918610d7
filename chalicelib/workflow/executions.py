"""Step Functions control: start a download's workflow, tell whether it runs, stop it.

Each execution is named for its download, so a start whose answer was lost is found again
by its name, and the API (create, cancel) and the cleanup sweep (timeouts) stop it by that
name without recording its ARN anywhere.
"""

from __future__ import annotations

import json
import logging

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.runtime import Runtime

log = logging.getLogger(__name__)


def execution_arn(state_machine_arn: str, download_id: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{download_id}"


def start(runtime: Runtime, download_id: str) -> None:
    """Start the download's workflow, named for the download.

    Returns when it runs, even if the answer to the start was lost; re-raises the client's
    error when it surely did not start, or when whether it did cannot be told (unknown counts
    as not started: the caller marks the download FAILED, which is safe either way).
    """
    try:
        runtime.stepfunctions.start_execution(
            stateMachineArn=runtime.settings.state_machine_arn,
            name=download_id,
            input=json.dumps({"download_id": download_id}),
        )
        return
    except ClientError as error:
        if error.response["Error"]["Code"] == "ExecutionAlreadyExists":
            return  # botocore's retry of a start whose answer was lost: the name is ours alone
        failure: Exception = error
        # A 5xx may come after the execution was started; a 4xx (throttling too) did not start it.
        ambiguous = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500
    except BotoCoreError as error:  # no answer: connection lost or timed out, maybe after the start
        failure, ambiguous = error, True
    log.warning("could not start the workflow of %s", download_id, exc_info=failure)
    if ambiguous and exists(runtime, download_id):
        return
    raise failure


def exists(runtime: Runtime, download_id: str) -> bool:
    """Whether the download's execution was started; False when that cannot be told."""
    arn = execution_arn(runtime.settings.state_machine_arn, download_id)
    try:
        runtime.stepfunctions.describe_execution(executionArn=arn)
    except Exception:  # noqa: BLE001 - unknown counts as not started: see start
        log.warning("could not tell whether %s started", download_id, exc_info=True)
        return False
    return True


def stop(runtime: Runtime, download_id: str, error: str, cause: str) -> None:
    """Stop a download's workflow, best effort: its new state is already recorded."""
    arn = execution_arn(runtime.settings.state_machine_arn, download_id)
    try:
        runtime.stepfunctions.stop_execution(executionArn=arn, error=error, cause=cause)
    except Exception:  # noqa: BLE001 - best effort: the state change is already recorded
        # Finished, not started yet, or the call failed: the build notices the download has
        # left RUNNING through its next progress write and stops by itself either way.
        log.warning("could not stop the execution of %s", download_id, exc_info=True)
