"""What a caller may be told about a failure: a domain error's own words, else a generic
message with a reference (core/disclosure.py)."""

from __future__ import annotations

import logging

import pytest

from chalicelib.core import disclosure
from chalicelib.core.models import ErrorInfo


@pytest.mark.parametrize("code", ["SourceMissing", "Cancelled", "MaxContentSizeExceeded", "LinkGone"])
def test_a_domain_errors_code_and_message_are_shown_as_they_are(code: str) -> None:
    error = ErrorInfo(code, "the source acme/a.txt is missing")
    assert disclosure.is_domain(code)
    assert disclosure.shown_error(error, "d1") is error


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    "code",
    ["States.TaskFailed", "ClientError", "AccessDeniedException", "KeyError", "SatchelError.x", "", "Any"],
)
def test_anything_else_is_generic_and_names_the_download_never_the_detail(code: str) -> None:
    detail = "arn:aws:iam::123456789012:role/satchel-prod-build is not authorized"
    # A handler of its own: once a handler has run, Powertools' logging stops propagation.
    handler = Kept()
    logger = logging.getLogger(disclosure.__name__)
    logger.addHandler(handler)
    try:
        shown = disclosure.shown_error(ErrorInfo(code, detail), "d1")
    finally:
        logger.removeHandler(handler)
    assert not disclosure.is_domain(code)
    assert shown.code == disclosure.INTERNAL_ERROR
    assert "d1" in shown.message
    assert "123456789012" not in shown.message
    assert [detail in record.getMessage() for record in handler.records] == [True]  # kept, in the log only


def test_references_are_new_each_time() -> None:
    references = {disclosure.new_reference() for _ in range(100)}
    assert len(references) == 100
    assert all(len(reference) == 16 for reference in references)
