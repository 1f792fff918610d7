"""The stack's Tracing parameter switches X-Ray on or off for every function of the packaged template."""

from __future__ import annotations

from chalicelib.core.settings import ENV_TRACING
from tests.support.stack_template import Resolver, functions, packaged


def test_the_stacks_tracing_parameter_switches_every_function() -> None:
    template = packaged().cloudformation
    for value, mode in (("false", "PassThrough"), ("true", "Active")):
        resolver = Resolver(template, {}, {"Tracing": value})
        for handler, logical_id in functions(template).items():
            properties = template["Resources"][logical_id]["Properties"]
            assert resolver.resolve(properties["TracingConfig"]) == {"Mode": mode}, handler
            assert resolver.resolve(properties["Environment"]["Variables"])[ENV_TRACING] == value, handler
