"""Racing requests for a link's last use: exactly one redirect, every other request 410.

moto's DynamoDB does not evaluate a condition and its write atomically across threads
(FIELD-NOTES.md); real DynamoDB does. The race is therefore run against a table whose
writes are serialised, as DynamoDB's are per item, while the reads stay concurrent.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from chalicelib.api import links
from chalicelib.core import clients
from chalicelib.core.errors import LinkGone
from chalicelib.runtime import Runtime
from chalicelib.storage.links import LinkStore
from tests.support.serialised import SerialisedWrites
from tests.support.stack import Satchel

THREADS = 8
LINKS = 25


def race(runtime: Runtime, token: str) -> list[str]:
    barrier = threading.Barrier(THREADS)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            links.follow(runtime, token)
        except LinkGone:
            return "410"
        return "302"

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(attempt, range(THREADS)))


def test_racing_for_the_last_use_gives_exactly_one_redirect(satchel: Satchel) -> None:
    satchel.put_source("acme/race.txt", b"only one of you gets this")
    download_id = satchel.create({"keys": ["acme/race.txt"]}).json["id"]
    assert satchel.wait(download_id)["state"] == "DONE"
    base = Runtime.from_env()
    runtime = replace(base, links=LinkStore(SerialisedWrites(clients.table(base.settings.table))))

    for max_uses in (1, 3):
        for _ in range(LINKS):
            reply = satchel.call("POST", f"/downloads/{download_id}/links", body={"max_uses": max_uses})
            outcomes = race(runtime, reply.json["token"])
            assert sorted(outcomes) == ["302"] * max_uses + ["410"] * (THREADS - max_uses)
