"""The `compression_level`s a zip may ask for, apart from the deflate engine that runs them.

The zip type's params schema declares them, and the API that checks a request against it
must not load the engine (chalicelib/archive/deflate.py maps each level to a library and its
own level; docs/performance.md, "Cold start").
"""

from __future__ import annotations

LEVELS = (0, 1, 2, 3)
DEFAULT_LEVEL = 2
