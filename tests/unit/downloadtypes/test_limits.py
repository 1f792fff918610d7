"""Limits: Prepare raises the first limit a plan breaks; a dry run collects each once."""

from __future__ import annotations

import itertools

import pytest

from chalicelib.core.errors import MaxContentSizeExceeded, TooManyFiles
from chalicelib.downloadtypes import base
from chalicelib.downloadtypes.base import Limits


def test_by_default_the_first_broken_limit_is_raised() -> None:
    limits = Limits()
    with pytest.raises(TooManyFiles):
        limits.exceeded(TooManyFiles("too many"))
    assert limits.broken == []


def test_a_dry_run_collects_each_code_once_in_the_order_met() -> None:
    limits = Limits(collect=True)
    limits.exceeded(MaxContentSizeExceeded("first", max_bytes=1))
    limits.exceeded(TooManyFiles("files"))
    limits.exceeded(MaxContentSizeExceeded("again", max_bytes=1))
    assert [error.code for error in limits.broken] == ["MaxContentSizeExceeded", "TooManyFiles"]
    assert limits.broken[0].message == "first"
    assert limits.any_broken


def test_the_budget_ends_the_count_and_marks_the_plan_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count()
    monkeypatch.setattr(base, "_monotonic", lambda: float(next(ticks)))
    limits = Limits(collect=True, budget_seconds=3)  # deadline: 0 + 3
    assert [limits.out_of_time() for _ in range(4)] == [False, False, True, True]
    assert limits.complete is False


def test_without_a_budget_there_is_no_deadline() -> None:
    limits = Limits()
    assert not limits.out_of_time()
    assert limits.complete
