"""The unit tier runs without the emulator: a test here that asks for the stack, or starts
moto however it does, fails at once and says it belongs in tests/stack/."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from moto.core.models import MockAWS

MISFILED = "a unit test may not use the emulator ({what}): move it to tests/stack/"


def _refuse(what: str) -> NoReturn:
    pytest.fail(MISFILED.format(what=what), pytrace=False)


# The stack's fixtures (tests/support/stack.py), overridden for this directory.
@pytest.fixture
def stack() -> NoReturn:
    _refuse("the `stack` fixture")


@pytest.fixture
def satchel() -> NoReturn:
    _refuse("the `satchel` fixture")


@pytest.fixture
def s3() -> NoReturn:
    _refuse("the `s3` fixture")


@pytest.fixture(autouse=True)
def no_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """mock_aws, as a decorator or a context manager, starts through MockAWS.start."""

    def start(self: MockAWS, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("moto's mock_aws")

    monkeypatch.setattr(MockAWS, "start", start)
