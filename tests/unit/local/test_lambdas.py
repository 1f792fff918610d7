"""The local stack's Lambda dispatch runs invocations of one function at once, on threads of one
process, as Lambda never does: a handler's first call must be safe on two threads at once."""

from __future__ import annotations

import json
import sys
import threading
from types import TracebackType
from typing import Any

import pytest
from chalice.app import Chalice

from satchel_local import lambdas

# The function under test, set by each test (`run_handler` imports it by name, as Lambda does).
HANDLER: Any = None


class _Gate(str):
    """A middleware's event type whose first comparison waits until the test opens it. Chalice
    compares each registration's event type as its generator of middleware is iterated, so
    the first call building a handler's chain stays inside that generator meanwhile."""

    __hash__ = str.__hash__

    def __init__(self, _: str) -> None:
        self.inside = threading.Event()
        self.open = threading.Event()

    def __eq__(self, other: object) -> bool:
        if not self.inside.is_set():
            self.inside.set()
            assert self.open.wait(30), "the test never opened the gate"
        return str.__eq__(self, other)


class _Watched:
    """The dispatch's lock, telling the test when the second call has come to it."""

    def __init__(self, arrived: threading.Event) -> None:
        self._lock = threading.Lock()
        self._arrived = arrived

    def __enter__(self) -> bool:
        if threading.current_thread().name == "second":
            self._arrived.set()
        return self._lock.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._lock.__exit__(kind, error, trace)


def test_two_first_calls_at_once_each_run_through_the_whole_middleware_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = Chalice("race")
    gate = _Gate("all")
    ran: list[str] = []

    def middleware(event: Any, get_response: Any) -> Any:
        ran.append(threading.current_thread().name)
        return get_response(event)

    app.register_middleware(middleware, gate)

    @app.lambda_function(name="first")
    def first(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"answered": threading.current_thread().name}

    arrived = threading.Event()
    monkeypatch.setattr(sys.modules[__name__], "HANDLER", first)
    monkeypatch.setattr(lambdas, "_listing", _Watched(arrived))
    answers: dict[str, tuple[bytes, bool]] = {}

    def call() -> None:
        name = threading.current_thread().name
        answers[name] = lambdas.run_handler(f"{__name__}.HANDLER", "first", b"{}", 30)
        arrived.set()  # the second call ended without waiting for the first

    one = threading.Thread(target=call, name="one")
    one.start()
    assert gate.inside.wait(30)  # the first call is building its chain
    second = threading.Thread(target=call, name="second")
    second.start()
    assert arrived.wait(30)  # waiting for the first call to list the chain, or (the race) ended
    gate.open.set()
    for thread in (one, second):
        thread.join(30)

    for name in ("one", "second"):
        payload, failed = answers[name]
        assert not failed, json.loads(payload)
        assert json.loads(payload) == {"answered": name}
    assert sorted(ran) == ["one", "second"]  # neither ran without the middleware
    lambdas.run_handler(f"{__name__}.HANDLER", "first", b"{}", 30)
    assert len(ran) == 3  # nor does any later call
