"""Start two downloads without the API, as `make run` delivers them: an SQS message to the
requests queue, and a request manifest dropped into the source bucket under requests/<tenant>/.

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
boto3.client("sqs", **aws).send_message(
    QueueUrl=local["requests_queue_url"],
    MessageBody=json.dumps({"tenant": "acme", "user_id": "alice", "request": request}),
)
# The same request as a manifest, dropped into the source bucket under requests/<tenant>/.
manifest = {"user_id": "alice", "request": {**request, "filename": "dropped.zip"}}
boto3.client("s3", **aws).put_object(
    Bucket=local["source_bucket"], Key="requests/acme/reports.json", Body=json.dumps(manifest)
)
