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


def test_after_a_stop_inside_a_member_the_next_run_pulls_the_entry_after_it() -> None:
    # Entries 4.. pulled: 4 and 5 done, stopped inside 6: the next run starts at 7.
    assert runs._next_entry(4, records=2, resumed=False) == 7
    # Stopped inside 4 itself, the run's first: the next run goes on with it, then 5.
    assert runs._next_entry(4, records=0, resumed=False) == 5
    # Went on with a member carried from the last run (recorded first), ended it and 4, and
    # stopped inside 5.
    assert runs._next_entry(4, records=2, resumed=True) == 6
    # The carried member stopped again: no entry was pulled.
    assert runs._next_entry(4, records=0, resumed=True) == 4
