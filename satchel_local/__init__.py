"""Glue for running Satchel without AWS: the embedded emulator (moto), the real state
machine, and Lambda invocations dispatched in-process to the real handlers.

Used by `make run` and the tests; never deployed (it lives outside chalicelib/).
"""
