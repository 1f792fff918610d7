"""Racing claims for a link's last use: exactly one URL, every other claim 410.

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
from chalicelib.storage.audit import link_actor
from chalicelib.storage.keys import hash_secret
from chalicelib.storage.links import LinkStore
from tests.support.serialised import SerialisedWrites
from tests.support.stack import Satchel

THREADS = 8
LINKS = 25


def race(runtime: Runtime, token: str) -> list[str]:
    barrier = threading.Barrier(THREADS)

    def attempt(_: int) -> str:
        barrier.wait()
        claimed = links.claim(runtime, token, None)  # each a new claimant: no claim id
        if isinstance(claimed, links.Reading):
            assert isinstance(claimed.refusal, LinkGone), claimed.refusal
            return "410"
        return "claimed"

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(attempt, range(THREADS)))


def test_racing_claims_for_the_last_use_give_exactly_one_url(satchel: Satchel) -> None:
    satchel.put_source("acme/race.txt", b"only one of you gets this")
    download_id = satchel.create({"keys": ["acme/race.txt"]}).json["id"]
    assert satchel.wait(download_id)["state"] == "DONE"
    base = Runtime.from_env()
    runtime = replace(base, links=LinkStore(SerialisedWrites(clients.table(base.settings.table)).typed))

    for max_uses in (1, 3):
        for _ in range(LINKS):
            reply = satchel.call("POST", f"/downloads/{download_id}/links", body={"max_uses": max_uses})
            outcomes = race(runtime, reply.json["token"])
            assert sorted(outcomes) == ["410"] * (THREADS - max_uses) + ["claimed"] * max_uses
            listed = satchel.call("GET", f"/downloads/{download_id}/links").json["items"]
            link_id = link_actor(hash_secret(reply.json["token"]))
            assert [item["uses"] for item in listed if item["link_id"] == link_id] == [max_uses]


def test_two_claimants_racing_for_a_single_use_link_one_wins(satchel: Satchel) -> None:
    """A person and a second claimant (after previews that spent nothing) at the same moment."""
    satchel.put_source("acme/race2.txt", b"one of two")
    download_id = satchel.create({"keys": ["acme/race2.txt"]}).json["id"]
    assert satchel.wait(download_id)["state"] == "DONE"
    base = Runtime.from_env()
    runtime = replace(base, links=LinkStore(SerialisedWrites(clients.table(base.settings.table)).typed))
    for _ in range(LINKS):
        token = satchel.call("POST", f"/downloads/{download_id}/links", body={"max_uses": 1}).json["token"]
        assert links.read(runtime, token).refusal is None  # the preview: nothing spent
        barrier = threading.Barrier(2)

        def attempt(_: int, token: str = token, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            return isinstance(links.claim(runtime, token, None), links.Claimed)

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(attempt, range(2))) == [False, True]
