"""Export throughput: rows per second and peak memory, by format and compression.

    python -m bench.exports [--rows 1000000]

Each case runs in its own process (so its peak RSS is its own) over the same rows: pages of
1,000 DynamoDB-shaped rows of 8 columns (Decimal amounts, strings, a boolean), encoded by
the export path's own functions. Prints a table; the last line is the table as JSON.
Candidates that the export path does not use (stdlib json, zlib level 6, isal) are measured
beside it, because they are what it was chosen against.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from chalicelib.downloadtypes import rowformats

COLUMNS = ["id", "date", "merchant", "amount", "currency", "status", "card_last4", "refunded"]
PAGE = 1000


def page() -> list[dict[str, Any]]:
    return [
        {
            "tenant": "acme",
            "id": f"txn-{index:09d}",
            "date": f"2024-{index % 12 + 1:02d}-{index % 28 + 1:02d}T10:{index % 60:02d}:00Z",
            "merchant": ["Corner Café", 'The "Best" Shop', "Books, etc.", "Grocer"][index % 4],
            "amount": Decimal(f"{index % 5000}.{index % 100:02d}"),
            "currency": "EUR",
            "status": ["settled", "pending", "refunded"][index % 3],
            "card_last4": f"{index % 10000:04d}",
            "refunded": index % 3 == 2,
        }
        for index in range(PAGE)
    ]


def stdlib_ndjson(pages: Iterable[list[dict[str, Any]]], columns: list[str]) -> Iterator[tuple[bytes, int]]:
    for rows in pages:
        records = (
            json.dumps({c: rowformats.plain_value(row.get(c)) for c in columns}, ensure_ascii=False) + "\n"
            for row in rows
        )
        yield "".join(records).encode("utf-8"), len(rows)


def compressor(name: str) -> Any:
    if name == "isal-1":
        from isal import isal_zlib

        return isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    level = int(name.split("-")[1])
    return zlib.compressobj(level, zlib.DEFLATED, 31)


def run_case(encoder: str, compression: str, rows: int) -> dict[str, Any]:
    sample = page()
    pages = (sample for _ in range(rows // PAGE))
    if encoder == "ndjson-stdlib":
        chunks = stdlib_ndjson(pages, COLUMNS)
    else:
        chunks = rowformats.encode(pages, COLUMNS, encoder)
    packer = None if compression == "none" else compressor(compression)
    size = 0
    started = time.perf_counter()
    for data, _ in chunks:
        size += len(packer.compress(data)) if packer else len(data)
    if packer:
        size += len(packer.flush())
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "encoder": encoder,
        "compression": compression,
        "rows_per_s": round(rows / elapsed),
        "mb": round(size / 1e6, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


CASES = [
    (encoder, compression)
    for encoder in ("csv", "ndjson", "ndjson-stdlib", "json")
    for compression in ("none", "zlib-1", "zlib-6", "isal-1")
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--case", nargs=2, metavar=("ENCODER", "COMPRESSION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1], args.rows)))
        return
    results = []
    print(f"{'encoder':<14} {'compression':<11} {'rows/s':>10} {'MB out':>8} {'peak RSS MiB':>13}")
    for encoder, compression in CASES:
        command = [
            sys.executable,
            "-m",
            "bench.exports",
            "--rows",
            str(args.rows),
            "--case",
            encoder,
            compression,
        ]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        results.append(result)
        print(
            f"{encoder:<14} {compression:<11} {result['rows_per_s']:>10,} {result['mb']:>8} "
            f"{result['peak_rss_mib']:>13}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
