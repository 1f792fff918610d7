"""`python -m satchel_client`: the `satchel` command, for when the console script is not on PATH."""

import sys

from satchel_client.cli import main

sys.exit(main())
