"""The time budget a long step checks before each member (chalicelib/workflow/runs.py)."""

from __future__ import annotations

from chalicelib.core.settings import Settings
from chalicelib.s3.manifest import Entry
from chalicelib.workflow import runs
from satchel_local.lambdas import Context

SETTINGS = Settings(table="t", artifact_bucket="a", source_bucket="s", state_machine_arn="arn")


def test_the_budget_is_the_lambda_contexts_remaining_time_less_the_reserve() -> None:
    assert not runs.Budget.of(None, SETTINGS).low()  # a step called directly has no deadline
    assert not runs.Budget.of(Context("f", 900), SETTINGS).low()  # 900 s left, 120 s kept
    assert runs.Budget.of(Context("f", 60), SETTINGS).low()  # less than the reserve left
    remaining = Context("f", 900).get_remaining_time_in_millis()
    assert 899_000 < remaining <= 900_000  # counts down from the timeout, as Lambda's does


def test_a_run_takes_entries_until_the_budget_is_low_and_always_one() -> None:
    entries = [Entry(f"k{i}", 1, "e", f"k{i}") for i in range(5)]
    left = iter([10, 10, 0, 0, 0])  # milliseconds left as each next entry is asked for

    budgeted = runs._Budgeted(entries, runs.Budget(lambda: next(left), reserve_ms=5))
    assert [entry.key for entry in budgeted] == ["k0", "k1", "k2"]
    assert (budgeted.taken, budgeted.exhausted) == (3, False)

    short = runs._Budgeted(entries, runs.Budget(lambda: 0, reserve_ms=5))
    assert [entry.key for entry in short] == ["k0"]  # never none: every run makes progress

    ample = runs._Budgeted(entries[:2], runs.Budget(lambda: 10, reserve_ms=5))
    assert len(list(ample)) == 2
    assert ample.exhausted
