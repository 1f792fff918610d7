"""Start three downloads without the API, as `make run` delivers them: an SQS message to the
requests queue, an event on the request bus, and a request manifest dropped into alice's
folder of the source bucket, requests/<tenant>/<user>/.

    .venv/bin/python docs/examples/send_requests.py     # from the repository root
"""

import json
from pathlib import Path

import boto3

local = json.loads(Path(".satchel-local.json").read_text())
aws = {
    "endpoint_url": local["aws_endpoint"],
    "region_name": local["region"],
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
}
request = {"type": "zip", "params": {"prefixes": ["acme/reports/"]}, "filename": "queued.zip"}
# The local stack binds the emulator's one sender to the demo tenants (SATCHEL_QUEUE_SENDERS).
boto3.client("sqs", **aws).send_message(
    QueueUrl=local["requests_queue_url"],
    MessageBody=json.dumps({"tenant": "acme", "user_id": "alice", "request": request}),
)
# On the request bus, never the default one; the source names the tenant it acts within.
boto3.client("events", **aws).put_events(
    Entries=[
        {
            "EventBusName": local["request_bus"],
            "Source": "satchel.requests.acme",
            "DetailType": "Satchel Download Requested",
            "Detail": json.dumps({"user_id": "alice", "request": {**request, "filename": "evented.zip"}}),
        }
    ]
)
# The same request as a manifest in alice's folder: it acts for her and no one else.
manifest = {"request": {**request, "filename": "dropped.zip"}}
boto3.client("s3", **aws).put_object(
    Bucket=local["source_bucket"], Key="requests/acme/alice/reports.json", Body=json.dumps(manifest)
)
