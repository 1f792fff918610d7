"""Zip throughput, memory and worker traffic against the local emulator.

    python -m bench.zips            (make bench)

moto runs in server mode (ThreadedMotoServer on 127.0.0.1, in this process), and every
build runs in a worker process of its own that talks to it over HTTP, as a Lambda talks to
S3: so the worker's peak RSS is its own (the emulator holds gigabytes of objects), and
the worker's client and the emulator's server do not share one interpreter lock. The
steps are the real ones (workflow.prepare here, workflow.build / digest in the worker);
only the state machine around them is left out, so its polling does not blur the timing.

Prints a table; the last line is one JSON object with the ratios the README reports.
"""

from __future__ import annotations

import argparse
import bisect
import compileall
import contextlib
import glob
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

    from chalicelib.runtime import Runtime

MIB = 1024 * 1024
GIB = 1024 * MIB
TENANT, USER = "bench", "runner"
LARGE_COUNT, LARGE_SIZE = 8, 128 * MIB  # store_vs_copy, worker_bytes_ratio: 1 GiB in 128 MiB objects
STREAM_SIZE = 8 * MIB  # rss: objects below the copy threshold, so every byte passes the worker
SMALL_FILES = 5_000
# The small-files case again with a modelled S3 round trip (not part of the JSON line).
MODELLED_FILES, MODELLED_ROUND_TRIP_MS = 1_000, 10
# files_cost_growth: zips of this many small files (the last against the first).
FILE_COUNTS = (1_000, 10_000, 100_000)
ROUND_TRIP_VARIABLE = "BENCH_ROUND_TRIP_MS"
WORKER_CORE_VARIABLE = "BENCH_WORKER_CORE"


# --- The corpus -----------------------------------------------------------------------------


def corpus(limit: int = 48 * MIB) -> bytes:
    """Real files of this machine, mixed: Python sources, shared libraries, package metadata."""
    patterns = [
        "/usr/lib/python3*/**/*.py",
        "/usr/lib/x86_64-linux-gnu/*.so*",
        f"{sys.prefix}/lib/python3*/site-packages/**/*.json",
    ]
    share = limit // len(patterns)
    parts = []
    for pattern in patterns:
        taken = bytearray()
        for path in sorted(glob.glob(pattern, recursive=True)):
            if os.path.isfile(path) and not os.path.islink(path) and len(taken) < share:
                with open(path, "rb") as file:
                    taken += file.read(share - len(taken))
        parts.append(bytes(taken))
    return b"".join(parts)


DEFLATE_RUNS = 5  # timed runs of each case (after one warm-up), the median taken


def _timed(run: Callable[[], int], runs: int = DEFLATE_RUNS) -> tuple[float, float, int]:
    """(median wall seconds, median CPU seconds of the whole process, output size) of `run`,
    after one untimed warm-up (libraries loaded, pool started, caches warm)."""
    run()
    walls, cpus, size = [], [], 0
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        size = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), size


def single_stream(data: bytes, module: Any, level: int) -> Callable[[], int]:
    """One compressor over all the data, fed 1 MiB at a time, in this thread: what a member
    cost before chunking, and zlib level 6 is the baseline."""

    def run() -> int:
        engine, size = module.compressobj(level, module.DEFLATED, -15), 0
        for start in range(0, len(data), MIB):
            size += len(engine.compress(data[start : start + MIB]))
        return size + len(engine.flush())

    return run


def chunked_stream(data: bytes, level: int, workers: int) -> Callable[[], int]:
    """The engine Satchel uses (chalicelib/archive/deflate.py), as the zip writer calls it."""
    from chalicelib.archive import deflate

    def run() -> int:
        engine = deflate.ChunkedDeflate(level, workers=workers)
        return sum(
            len(out) for out in engine.stream(data[start : start + MIB] for start in range(0, len(data), MIB))
        )

    return run


def deflate_engines(data: bytes) -> list[dict[str, Any]]:
    """Each engine on the same data: median wall time of DEFLATE_RUNS runs after a warm-up,
    CPU time, size. Single streams first (the libraries as they are), then the chunked engine
    at each level on one worker and on every core."""
    from isal import isal_zlib
    from zlib_ng import zlib_ng

    from chalicelib.archive import deflate

    cases: dict[str, Callable[[], int]] = {
        "zlib-6 (stdlib)": single_stream(data, zlib, 6),
        "zlib-1 (stdlib)": single_stream(data, zlib, 1),
        **{f"zlib-ng-{level}": single_stream(data, zlib_ng, level) for level in (1, 2, 3, 4, 5, 6)},
        **{f"isal-{level}": single_stream(data, isal_zlib, level) for level in (0, 1, 2, 3)},
    }
    cores = deflate.cores()
    for level in deflate.LEVELS:
        engine = deflate.ENGINES[level]
        for workers in sorted({1, cores}):
            name = f"chunked level {level} ({engine.library}-{engine.level}), {workers} thread(s)"
            cases[name] = chunked_stream(data, level, workers)
    results = []
    for name, run in cases.items():
        wall, cpu, size = _timed(run)
        results.append({"engine": name, "seconds": wall, "cpu": cpu, "size": size})
    return results


RATIO_RUNS = 11  # timed runs of each side of the JSON line's deflate ratio (after a warm-up)


def deflate_ratio(data: bytes) -> dict[str, float]:
    """The JSON line's two deflate keys: the chunked engine at the default level on every core
    against one zlib level 6 stream, on the same corpus, one warm-up each, then RATIO_RUNS
    runs of each in alternation (so that a busy spell of the shared machine falls on both
    alike), the fastest run of each side taken: what each costs when nothing else is running,
    which is what the ratio compares. (A median would measure the other processes' load: it
    halves the engine's two threads' share of the cores and not zlib-6's one thread's.)"""
    from chalicelib.archive import deflate

    base = single_stream(data, zlib, 6)
    chosen = chunked_stream(data, deflate.DEFAULT_LEVEL, deflate.cores())
    base(), chosen()  # warm-up: the libraries loaded, the pool's threads started
    walls: dict[str, list[float]] = {"base": [], "chosen": []}
    sizes = {}
    for _ in range(RATIO_RUNS):
        for label, run in (("base", base), ("chosen", chosen)):
            started = time.perf_counter()
            sizes[label] = run()
            walls[label].append(time.perf_counter() - started)
    return {
        "deflate_speedup": min(walls["base"]) / min(walls["chosen"]),
        "deflate_size_ratio": sizes["chosen"] / sizes["base"],
        "deflate_speedup_median": statistics.median(walls["base"]) / statistics.median(walls["chosen"]),
    }


# --- The emulator and the steps -------------------------------------------------------------


@dataclass
class Bench:
    endpoint: str
    environment: dict[str, str]
    source_bucket: str
    artifact_bucket: str

    def runtime(self) -> Runtime:
        from chalicelib.runtime import Runtime

        return Runtime.from_env()

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        """A download record as the API makes it, then the real Prepare step."""
        from chalicelib.core import clock
        from chalicelib.core.models import Download, State
        from chalicelib.workflow import steps as workflow

        runtime = self.runtime()
        download = Download(
            id=uuid.uuid4().hex,
            type="zip",
            params={"keys": [], "prefixes": [], "compression": "deflate", **params},
            filename="bench.zip",
            tenant=TENANT,
            user_id=USER,
            state=State.PENDING,
            created_at=clock.iso(clock.now()),
            retention_seconds=3600,
        )
        runtime.downloads.create(download, max_active=1_000_000)
        return dict(workflow.prepare(runtime, {"download_id": download.id}))

    def work(self, step: str, event: dict[str, Any], **settings: str) -> dict[str, Any]:
        """One step in a worker process of its own; its result, time, peak RSS and bytes read."""
        command = [sys.executable, "-m", "bench.zips", "--worker", step, json.dumps(event)]
        env = {**os.environ, **self.environment, **settings}
        finished = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
        return result

    def forget(self, key: str) -> None:
        """Free the emulator's memory: artifacts are not needed once measured."""
        self.runtime().s3.delete_object(Bucket=self.artifact_bucket, Key=key)


def _cache_moto_modules() -> None:
    """moto's server asks, twice per request, whether the Host names one of its services by
    listing its package folder and stat-ing each of its ~180 entries (about 40% of the
    emulator's CPU per small GetObject, measured with cProfile): a cost of the emulator's,
    not S3's, and it shares this machine's two cores with the worker being measured. The
    folder does not change while the process runs, so its listing is taken once."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)


def _snapshot_moto_listings() -> None:
    """moto lists a page of keys by scanning and sorting every key under the prefix, on each
    page: n keys cost it about n² / 1,000, which at 100,000 keys is most of Prepare's time in
    the files curve (S3 lists a page in constant time). Here a listing without a delimiter
    sorts the prefix's key names once, on its first page, and each later page (moto's
    continuation token names the last key given) starts from there by bisection; the
    keys themselves are still looked up in the bucket, so deleted ones are skipped."""
    from moto.s3.models import FakeDeleteMarker, S3Backend

    original = S3Backend.list_objects_v2
    sorted_names: dict[tuple[int, str], list[str]] = {}

    def list_objects_v2(self: Any, **request: Any) -> Any:
        bucket, prefix = request["bucket"], request["prefix"] or ""
        if request["delimiter"] or request["start_after"] or not request["max_keys"]:
            return original(self, **request)
        listing = (id(bucket), prefix)
        token = request["continuation_token"]
        if not token or listing not in sorted_names:
            sorted_names[listing] = sorted(name for name, _ in bucket.keys.items() if name.startswith(prefix))
        names = sorted_names[listing]
        index = bisect.bisect_right(names, self._pagination_tokens[token]) if token else 0
        page: list[Any] = []
        while index < len(names) and len(page) <= request["max_keys"]:
            key = bucket.keys.get(names[index])
            if key is not None and not isinstance(key, FakeDeleteMarker):
                page.append(key)
            index += 1
        return self._truncate_result(page, request["max_keys"])

    setattr(S3Backend, "list_objects_v2", list_objects_v2)  # noqa: B010 (mypy: no method assignment)


def _function_environment(function: str) -> dict[str, str]:
    """The environment variables the deployed stage gives one function of its own."""
    with open(os.path.join(".chalice", "config.json")) as config:
        functions = json.load(config)["stages"]["prod"]["lambda_functions"]
    return dict(functions[function].get("environment_variables", {}))


def start_emulator() -> tuple[Any, Bench]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise

    from chalicelib.core import clients
    from satchel_local import server
    from satchel_local.stack import provision

    _cache_moto_modules()
    _snapshot_moto_listings()
    moto = ThreadedMotoServer(ip_address=server.LOOPBACK, port=0, verbose=False)
    moto.start()
    port = moto.get_host_and_port()[1]
    server.point_aws_at_emulator(port)
    server.configure_moto(port)
    clients.reset()
    stack = provision("bench")
    environment = {
        **stack.environment(),
        **{name: os.environ[name] for name in os.environ if name.startswith("AWS_") or name == "MOTO_PORT"},
    }
    # The worker starts with what .chalice/config.json gives the Build function as deployed
    # (glibc's allocator settings among them: read as a process starts, so set here).
    environment.update(_function_environment("build"))
    # One worker is what is measured here: no parallel segments (the tests exercise those).
    one_worker = {"SATCHEL_PARALLEL_MIN_BYTES": str(64 * GIB), "SATCHEL_PARALLEL_MIN_FILES": str(10**9)}
    os.environ.update({**stack.environment(), **one_worker})
    environment.update(one_worker)
    return moto, Bench(
        os.environ["AWS_ENDPOINT_URL"], environment, stack.source_bucket, stack.artifact_bucket
    )


def _pin_threads(cores: set[int]) -> None:
    """Every thread of this process (the emulator's among them) on `cores`; the threads they
    start later inherit it."""
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a request's thread that has ended
            os.sched_setaffinity(int(task), cores)


@contextlib.contextmanager
def split_cores() -> Iterator[int | None]:
    """The core a worker is to run on, the emulator running on the others meanwhile (None,
    and nothing pinned, on a machine of one core).

    This is the small-files cases' model of AWS. The deployed Build function has 1,024 MB,
    less than one vCPU, and S3 serves its requests on machines of its own. Left to the
    scheduler, the emulator's CPU per GET would take from the worker's core, which S3's
    does not; and both processes' threads would move between both cores, each process's
    interpreter lock passing from core to core, which costs each side about a quarter more
    CPU per file here (measured with both processes' CPU clocks).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        yield None
        return
    _pin_threads(set(cores[1:]))
    try:
        yield cores[0]
    finally:
        _pin_threads(set(cores))


def seed(bench: Bench, objects: Iterator[tuple[str, bytes]], workers: int = 8) -> None:
    s3 = bench.runtime().s3
    with ThreadPoolExecutor(workers) as pool:
        for future in [
            pool.submit(s3.put_object, Bucket=bench.source_bucket, Key=key, Body=body)
            for key, body in objects
        ]:
            future.result()


def varied(data: bytes, size: int, seed_: int) -> bytes:
    """`size` bytes of the corpus from a different place each time (no two objects alike)."""
    start = (seed_ * 7_919_113) % max(len(data) - 1, 1)
    doubled = data + data
    out = bytearray()
    while len(out) < size:
        out += doubled[start : start + size - len(out)]
        start = 0
    return bytes(out)


# --- Worker side ----------------------------------------------------------------------------


def _count_reads() -> Callable[[], int]:
    """Bytes of every S3 response body this process reads, counted below Satchel's code."""
    from botocore.response import StreamingBody

    total = 0
    original = StreamingBody.read

    def read(self: Any, amt: int | None = None) -> bytes:
        nonlocal total
        data: bytes = original(self, amt)
        total += len(data)
        return data

    StreamingBody.read = read
    return lambda: total


def peak_rss_mib() -> float:
    """This process's own peak RSS. (Not ru_maxrss: Linux carries it over from the parent
    across fork and exec, and the parent here holds the emulator's gigabytes.)"""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def plain_copy(runtime: Runtime, event: dict[str, Any]) -> dict[str, Any]:
    """The baseline: each source GetObject'ed and streamed into one multipart upload."""
    from chalicelib.s3 import layout, manifest, sources
    from chalicelib.s3.multipart import MultipartWriter

    settings = runtime.settings
    key = f"{layout.temporary_prefix(event['download_id'])}plain-copy"
    writer = MultipartWriter(runtime.s3, settings.artifact_bucket, key, settings.part_size, "application/zip")
    for entry in manifest.read(runtime.s3, settings.artifact_bucket, event["manifest_key"]):
        body = sources.open_object(runtime.s3, settings.source_bucket, entry.key, entry.etag)["Body"]
        for chunk in sources.stream(body, settings.read_chunk_bytes):
            writer.write(chunk)
    writer.complete()
    return {"artifact_key": key, "size": writer.size}


def worker(step: str, event: dict[str, Any]) -> None:
    from chalicelib.runtime import Runtime
    from chalicelib.workflow import digest
    from chalicelib.workflow import steps as workflow

    core = os.environ.get(WORKER_CORE_VARIABLE)
    if core:  # before any thread starts: they inherit it (split_cores)
        os.sched_setaffinity(0, {int(core)})
    read = _count_reads()
    runtime = Runtime.from_env()
    round_trip_ms = float(os.environ.get(ROUND_TRIP_VARIABLE) or 0)
    if round_trip_ms:
        # S3's network wait, which the emulator on loopback does not have: each request
        # sleeps in its own thread before it is sent, so concurrent requests overlap it.
        runtime.s3.meta.events.register("before-send.s3", lambda **_: time.sleep(round_trip_ms / 1000))
    # Each step takes its own payload (a TypedDict) and answers one.
    steps: dict[str, Callable[[Runtime, Any], Mapping[str, Any]]] = {
        "build": workflow.build,
        "digest": digest.digest,
        "copy": plain_copy,
    }
    started, cpu = time.perf_counter(), time.process_time()
    result = steps[step](runtime, event)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    measured = {"seconds": elapsed, "cpu": cpu, "peak_rss_mib": peak_rss_mib(), "bytes_read": read()}
    print(json.dumps({**result, **measured}))


# --- The cases ------------------------------------------------------------------------------


Row = tuple[str, str, str]


def store_and_copy(bench: Bench, rows: list[Row]) -> dict[str, float]:
    data = corpus(16 * MIB)
    seed(
        bench,
        ((f"{TENANT}/large/{i}.bin", varied(data, LARGE_SIZE, i)) for i in range(LARGE_COUNT)),
        workers=2,
    )
    prepared = bench.prepare({"prefixes": [f"{TENANT}/large/"], "compression": "store"})
    total = prepared["totals"]["bytes_total"]
    copy = bench.work("copy", prepared)
    bench.forget(copy["artifact_key"])
    built = bench.work("build", prepared)
    digested = bench.work("digest", built)
    bench.forget(built["artifact_key"])
    copy_rate = total / copy["seconds"]
    store_rate = total / (built["seconds"] + digested["seconds"])
    rows += [
        ("plain copy, GetObject -> multipart (1 GiB, 8 x 128 MiB)", f"{copy_rate / 1e6:,.0f} MB/s", ""),
        ("store zip, server-side build", f"{total / built['seconds'] / 1e6:,.0f} MB/s", "UploadPartCopy"),
        ("store zip, build + Digest (sha256 read-back)", f"{store_rate / 1e6:,.0f} MB/s", ""),
        ("  worker bytes read by the build / archive", f"{built['bytes_read'] / built['size']:.3f}", ""),
        ("  Digest bytes read / archive", f"{digested['bytes_read'] / built['size']:.3f}", "own step"),
    ]
    return {
        "store_vs_copy": store_rate / copy_rate,
        "worker_bytes_ratio": built["bytes_read"] / built["size"],
    }


def parts_sources(bench: Bench, rows: list[Row]) -> dict[str, float]:
    """Sources uploaded in parts, as `aws s3 cp` and boto3's upload_file make them above 8 MiB.

    moto answers their CRC32 unmarked (no ChecksumType, a composite value) and lists no parts,
    so no CRC-32 can be taken from S3: a member below the copy threshold is held in memory,
    one above it is read in a first pass. `bytes_read` counts every read of the worker, first
    passes included (real S3 lists the part checksums, which are combined: no first pass).
    """
    from boto3.s3.transfer import TransferConfig

    data = corpus(16 * MIB)
    s3 = bench.runtime().s3
    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
    objects = [(f"{TENANT}/parts/large-{i}.bin", 64 * MIB) for i in range(2)]
    objects += [(f"{TENANT}/parts/medium-{i}.bin", 12 * MIB) for i in range(4)]
    for index, (key, size) in enumerate(objects):
        s3.upload_fileobj(
            io.BytesIO(varied(data, size, 100 + index)),
            bench.source_bucket,
            key,
            ExtraArgs={"ChecksumAlgorithm": "CRC32"},
            Config=config,
        )
    prepared = bench.prepare({"prefixes": [f"{TENANT}/parts/"], "compression": "store"})
    built = bench.work("build", prepared)
    bench.forget(built["artifact_key"])
    ratio = built["bytes_read"] / built["size"]
    rows.append(
        (
            "  sources uploaded in parts (2 x 64 + 4 x 12 MiB): worker bytes / archive",
            f"{ratio:.3f}",
            "first pass",
        )
    )
    return {"worker_bytes_ratio_parts": ratio}


def memory(bench: Bench, rows: list[Row]) -> dict[str, float]:
    """Peak RSS of a build whose every byte passes through the worker: 200 MiB, then 2 GiB."""
    data = corpus(16 * MIB)
    count = 2 * GIB // STREAM_SIZE
    seed(bench, ((f"{TENANT}/stream/{i:04d}.dat", varied(data, STREAM_SIZE, i)) for i in range(count)))
    keys = [f"{TENANT}/stream/{i:04d}.dat" for i in range(count)]
    peaks = {}
    for label, chosen in (("200 MiB", keys[: count // 10 + 1]), ("2 GiB", keys)):
        prepared = bench.prepare({"keys": chosen, "compression": "store"})
        built = bench.work("build", prepared)
        bench.forget(built["artifact_key"])
        peaks[label] = built["peak_rss_mib"]
        rate = prepared["totals"]["bytes_total"] / built["seconds"]
        rows.append(
            (
                f"store zip streamed, {label} archive",
                f"{rate / 1e6:,.0f} MB/s",
                f"peak RSS {built['peak_rss_mib']:.0f} MiB",
            )
        )
    return {"rss_growth": peaks["2 GiB"] / peaks["200 MiB"], "rss_peak_mib": peaks["2 GiB"]}


def small_files(bench: Bench, rows: list[Row]) -> dict[str, float]:
    """Small files fetched one at a time and with the deployed concurrency, against the
    emulator as it is and with a modelled S3 round trip; the worker and the emulator each on
    cores of their own (`split_cores`)."""
    data = corpus(8 * MIB)
    seed(
        bench,
        ((f"{TENANT}/small/{i:05d}.txt", varied(data, 2_000 + i % 3_000, i)) for i in range(SMALL_FILES)),
    )
    # The emulator's own CPU per GET bounds what overlapping requests can gain here; with a
    # round trip like S3's, the wait they overlap is the network's, as in AWS.
    seed(
        bench,
        (
            (f"{TENANT}/modelled/{i:05d}.txt", varied(data, 2_000 + i % 3_000, i))
            for i in range(MODELLED_FILES)
        ),
    )
    rates: dict[str, float] = {}
    modelled: dict[str, float] = {}
    with split_cores() as core:
        pinned = {WORKER_CORE_VARIABLE: str(core)} if core is not None else {}
        where = "one core: not pinned" if core is None else f"worker on core {core}, emulator on the others"
        for label, workers in (("serial", "1"), ("concurrent", "")):
            prepared = bench.prepare({"prefixes": [f"{TENANT}/small/"]})
            settings = {**pinned, **({"SATCHEL_FETCH_CONCURRENCY": workers} if workers else {})}
            built = bench.work("build", prepared, **settings)
            bench.forget(built["artifact_key"])
            rates[label] = SMALL_FILES / built["seconds"]
            rate = f"{rates[label]:,.0f} files/s"
            rows.append((f"{SMALL_FILES:,} small files, deflate, {label}", rate, where))
        for label, workers in (("serial", "1"), ("concurrent", "")):
            prepared = bench.prepare({"prefixes": [f"{TENANT}/modelled/"]})
            settings = {**pinned, ROUND_TRIP_VARIABLE: str(MODELLED_ROUND_TRIP_MS)}
            if workers:
                settings["SATCHEL_FETCH_CONCURRENCY"] = workers
            built = bench.work("build", prepared, **settings)
            bench.forget(built["artifact_key"])
            modelled[label] = MODELLED_FILES / built["seconds"]
            rows.append(
                (
                    f"{MODELLED_FILES:,} small files, {label}, {MODELLED_ROUND_TRIP_MS} ms round trip",
                    f"{modelled[label]:,.0f} files/s",
                    "modelled latency" if workers else f"x{modelled['concurrent'] / modelled['serial']:.2f}",
                )
            )
    return {
        "small_files_speedup": rates["concurrent"] / rates["serial"],
        "small_files_speedup_modelled": modelled["concurrent"] / modelled["serial"],
    }


def files_curve(bench: Bench, rows: list[Row], counts: tuple[int, ...] = FILE_COUNTS) -> dict[str, float]:
    """Zips of `counts` small files (2-5 KB, deflated): the cost per file (Prepare, then
    Build in its worker) and the worker's peak RSS at each size. Each size is seeded under a
    prefix of its own; the objects of a size are freed once it is measured."""
    data = corpus(8 * MIB)
    s3 = bench.runtime().s3
    # Above the default cap (the limit is checked by Prepare, in this process).
    os.environ["SATCHEL_MAX_FILES"] = str(10 * max(counts))
    costs, peaks = {}, {}
    for count in counts:
        prefix = f"{TENANT}/curve-{count}/"
        seed(bench, ((f"{prefix}{i:06d}.txt", varied(data, 2_000 + i % 3_000, i)) for i in range(count)))
        started = time.perf_counter()
        prepared = bench.prepare({"prefixes": [prefix]})
        prepare_seconds = time.perf_counter() - started
        if prepared["totals"]["files_total"] != count:  # the emulator's listing (above) lost a key
            raise RuntimeError(f"Prepare listed {prepared['totals']['files_total']} files, not {count}")
        built = bench.work("build", prepared, SATCHEL_MAX_FILES=os.environ["SATCHEL_MAX_FILES"])
        bench.forget(built["artifact_key"])
        costs[count] = (prepare_seconds + built["seconds"]) / count
        peaks[count] = built["peak_rss_mib"]
        row = (
            f"zip of {count:,} small files: Prepare + Build per file",
            f"{costs[count] * 1e6:,.0f} µs",
            f"Prepare {prepare_seconds / count * 1e6:,.0f} + Build {built['seconds'] / count * 1e6:,.0f} µs; "
            f"Build worker peak RSS {peaks[count]:.0f} MiB; load {os.getloadavg()[0]:.1f}",
        )
        rows.append(row)
        print(*row, sep="  ", file=sys.stderr, flush=True)  # a long case: each size as it ends
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bench.source_bucket, Prefix=prefix):
            keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bench.source_bucket, Delete={"Objects": keys})
    first, last = min(counts), max(counts)
    return {"files_cost_growth": costs[last] / costs[first], "files_rss_growth": peaks[last] / peaks[first]}


def deflate_speed(rows: list[Row]) -> dict[str, float]:
    from chalicelib.archive import deflate

    data = corpus()
    load_before = os.getloadavg()[0]
    results = {item["engine"]: item for item in deflate_engines(data)}
    base = results["zlib-6 (stdlib)"]
    default = f"chunked level {deflate.DEFAULT_LEVEL} "
    for name, item in results.items():
        rate = len(data) / item["seconds"]
        rows.append(
            (
                f"deflate {name}{' (default)' if name.startswith(default) else ''}",
                f"{rate / 1e6:,.0f} MB/s",
                f"x{base['seconds'] / item['seconds']:.2f} speed "
                f"(x{base['cpu'] / item['cpu']:.2f} per core), size x{item['size'] / base['size']:.3f}, "
                f"{item['cpu'] / item['seconds']:.1f} cores busy",
            )
        )
    ratio = deflate_ratio(data)
    rows += [
        (f"  ({len(data) / MIB:.0f} MiB mixed corpus; median of {DEFLATE_RUNS} after a warm-up)", "", ""),
        (
            f"deflate, default level on every core vs zlib-6, alternately, best of {RATIO_RUNS}",
            f"x{ratio['deflate_speedup']:.2f}",
            f"size x{ratio['deflate_size_ratio']:.3f}, {deflate.cores()} cores; "
            f"medians x{ratio['deflate_speedup_median']:.2f}",
        ),
        (
            "  load average (1 min) before / after the deflate cases",
            f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
            "other processes share the cores",
        ),
    ]
    return ratio


def compile_the_package() -> None:
    """Bytecode for app.py and chalicelib/, as the deployment package ships it.

    scripts/package.py compiles every module into the package (Lambda's code directory is
    read-only, so a function could never cache it). Without this, a module whose cached
    bytecode is stale, or was never written (this machine sets PYTHONDONTWRITEBYTECODE), is
    compiled from source in every sample: a cost no function pays, and one the chalice + boto3
    baseline, compiled when pip installed it, never pays either. The same goes for a worker's
    build, whose modules are imported as it first runs them, within its timed step.
    """
    root = os.getcwd()
    compileall.compile_file(os.path.join(root, "app.py"), quiet=1)
    compileall.compile_dir(os.path.join(root, "chalicelib"), quiet=1)


def import_time(statement: str) -> float:
    """Median wall time of a fresh interpreter running `statement`, less the bare interpreter's."""

    def run(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())
        return time.perf_counter() - started

    samples = [run(statement) - run("pass") for _ in range(7)]
    return statistics.median(samples)


# A function's cold start: `import app` (the wiring only), then what its first call imports,
# boto3 included (clients are built on first use). app.py's handlers import their modules
# in their bodies; these are those of the heaviest first calls (tests/unit/test_cold_start.py
# holds what each entry point loads).
FIRST_CALLS = {
    "the API, creating a zip": (
        "from chalicelib.runtime import Runtime; from chalicelib.api import auth, downloads; "
        "from chalicelib.storage import idempotency; from chalicelib import downloadtypes; "
        "downloadtypes.get('zip')"
    ),
    "Build, a deflated zip": (
        "from chalicelib.runtime import Runtime; from chalicelib.workflow import steps, segments; "
        "from chalicelib.workflow.runs import Budget; from chalicelib import downloadtypes; "
        "downloadtypes.get('zip'); from chalicelib.downloadtypes import archive; import zlib_ng.zlib_ng"
    ),
    "Digest": (
        "from chalicelib.runtime import Runtime; from chalicelib.workflow import digest; import rehashes"
    ),
}


def cold_start(rows: list[Row]) -> dict[str, float]:
    compile_the_package()
    base = import_time("import chalice.app, boto3")
    app = import_time("import app")
    rows += [
        ("import chalice + boto3", f"{base * 1000:,.0f} ms", ""),
        ("import app", f"{app * 1000:,.0f} ms", "the wiring only: no boto3, no store, no download type"),
    ]
    firsts = {}
    for function, imports in FIRST_CALLS.items():
        firsts[function] = import_time(f"import app, boto3; {imports}")
        rows.append((f"  import app, then {function}'s first call", f"{firsts[function] * 1000:,.0f} ms", ""))
    return {"import_ratio": max(firsts.values()) / base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("STEP", "EVENT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--only",
        choices=["deflate", "files", "small"],
        help="only the deflate cases, the files curve or the small files",
    )
    parser.add_argument(
        "--files",
        default=",".join(str(count) for count in FILE_COUNTS),
        help="file counts of the files_cost_growth curve, comma-separated (the last against the first)",
    )
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], json.loads(args.worker[1]))
        return
    # The workers' steps import their modules as they first run, inside the timed build.
    compile_the_package()
    rows: list[Row] = []
    results: dict[str, float] = {}
    counts = tuple(int(count) for count in args.files.split(","))
    if args.only in (None, "deflate"):
        results |= deflate_speed(rows)
    if args.only is None:
        results |= cold_start(rows)
    if args.only in (None, "files", "small"):
        moto, bench = start_emulator()
        try:
            if args.only is None:
                results |= store_and_copy(bench, rows)
                results |= parts_sources(bench, rows)
            if args.only in (None, "small"):
                results |= small_files(bench, rows)
            if args.only is None:
                results |= memory(bench, rows)
            if args.only in (None, "files"):
                results |= files_curve(bench, rows, counts)
        finally:
            moto.stop()
    width = max(len(row[0]) for row in rows)
    out = io.StringIO()
    for what, figure, note in rows:
        out.write(f"{what:<{width}}  {figure:>14}  {note}\n")
    print(out.getvalue(), end="")
    keys = [
        "store_vs_copy",
        "deflate_speedup",
        "deflate_size_ratio",
        "rss_growth",
        "rss_peak_mib",
        "worker_bytes_ratio",
        "small_files_speedup",
        "small_files_speedup_modelled",
        "files_cost_growth",
        "files_rss_growth",
        "import_ratio",
    ]
    print(json.dumps({key: round(results[key], 3) for key in keys if key in results}))


if __name__ == "__main__":
    main()
