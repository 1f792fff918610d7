"""A Python client and the `satchel` command for the Satchel download API."""
