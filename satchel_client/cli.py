"""The `satchel` command: create, watch, fetch and manage Satchel downloads from a shell."""

from __future__ import annotations

import argparse
import itertools
import os
import re
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

from satchel_client import render
from satchel_client.auth import BearerAuth, SigV4Auth
from satchel_client.client import SatchelClient, version
from satchel_client.config import (
    ENV_API_KEY,
    ENV_API_URL,
    ENV_SIGV4,
    ENV_TOKEN,
    STATE_FILE_NAME,
    Connection,
    UsageError,
    resolve,
)
from satchel_client.errors import (
    ApiError,
    DownloadFailed,
    NetworkError,
    SatchelError,
    VerificationError,
    WaitTimeout,
)
from satchel_client.links import GetResult, LinkClient, LinkNotReady, link_url, target_for
from satchel_client.models import CANCELLED, EXPIRED, STATES, Download, FetchResult, SharedFile
from satchel_client.transfer import part_path, target_path
from satchel_client.ui import Ui


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # anything else: a local file that cannot be written, an answer that makes no sense
    USAGE = 2  # the command line is wrong, or does not say which API to call (argparse's code too)
    REFUSED = 3  # the API refused the request (a 4xx answer)
    ENDED = 4  # the download ended FAILED, CANCELLED or EXPIRED: there is no file to fetch
    UNAVAILABLE = 5  # no answer (connection, timeout) or the API failed (5xx), after retries
    CORRUPT = 6  # the fetched bytes did not match the download's sha256; they were removed
    TIMEOUT = 7  # --timeout passed while the download was still being built
    INTERRUPTED = 130  # Ctrl-C, as shells report it


EXIT_CODES = """exit codes:
  0    success
  1    another error (e.g. the output file cannot be written)
  2    usage: wrong arguments, or no API URL/key (--api-url/--api-key, $SATCHEL_API_URL/KEY, --as)
  3    the API refused the request (4xx): the message has its Code; for `get`, a link
       not found (404), gone (410: used up, expired, revoked) or not ready yet (425)
  4    the download ended FAILED, CANCELLED or EXPIRED
  5    the API could not be reached, or failed (5xx), after retries
  6    the fetched file did not match the download's sha256 (it was removed)
  7    --timeout passed while the download (or a link's file, `get --wait`) was being built
  130  interrupted (Ctrl-C); an interrupted fetch resumes when run again"""


class CommandError(Exception):
    """A failure as the command reports it: exit code, message, what to do, details for --json."""

    def __init__(self, exit_code: Exit, message: str, hint: str = "", **details: Any) -> None:
        super().__init__(message)
        self.exit_code, self.message, self.hint, self.details = exit_code, message, hint, details


Command = Callable[[SatchelClient, argparse.Namespace, Ui], None]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ui = Ui(json_output=args.json, quiet=args.quiet)
    try:
        _run(args, ui)
    except CommandError as failure:
        return _report(ui, failure)
    except KeyboardInterrupt:
        return _report(ui, CommandError(Exit.INTERRUPTED, "interrupted"))
    except (SatchelError, UsageError, OSError) as error:
        return _report(ui, classify(error))
    return Exit.OK


def _run(args: argparse.Namespace, ui: Ui) -> None:
    if args.command is cmd_get:  # a link is its own credential: no API URL or key needed
        cmd_get(args, ui)
        return
    connection = resolve(
        api_url=args.api_url,
        api_key=args.api_key,
        as_user=args.as_user,
        environ=os.environ,
        cwd=Path.cwd(),
        token=args.token,
        sigv4=bool(args.sigv4),
    )
    with client_for(connection, args.region) as client:
        args.command(client, args, ui)


def client_for(connection: Connection, region: str | None = None) -> SatchelClient:
    """A client signed in as the connection says: a key, a bearer token, or SigV4."""
    if connection.sigv4:
        try:
            return SatchelClient(connection.api_url, auth=SigV4Auth(region))
        except ValueError as error:
            raise UsageError(str(error)) from None
    if connection.token:
        return SatchelClient(connection.api_url, auth=BearerAuth(connection.token))
    return SatchelClient(connection.api_url, connection.api_key)


def _report(ui: Ui, failure: CommandError) -> int:
    ui.error(failure.message + (f"\n  {failure.hint}" if failure.hint else ""))
    if ui.json_output:
        error = {"exit_code": int(failure.exit_code), "message": failure.message, "hint": failure.hint}
        ui.result("", {"error": {**error, **failure.details}})
    return int(failure.exit_code)


# -- what each failure means to the person at the shell ---------------------------------


def classify(error: BaseException) -> CommandError:
    match error:
        case UsageError():
            return CommandError(Exit.USAGE, str(error))
        case DownloadFailed():
            details = {"state": error.state, "code": error.code, "download": error.download.raw}
            return CommandError(Exit.ENDED, str(error), _ended_hint(error.download), **details)
        case WaitTimeout():
            hint = f"it goes on: `satchel wait {error.download.id}` waits again"
            return CommandError(Exit.TIMEOUT, str(error), hint, download=error.download.raw)
        case VerificationError():
            hint = "the bytes were removed: run the same command again to fetch the file from the start"
            return CommandError(Exit.CORRUPT, str(error), hint)
        case NetworkError():
            hint = f"is the API running, at that URL? (--api-url or ${ENV_API_URL}; locally: `make run`)"
            return CommandError(Exit.UNAVAILABLE, str(error), hint)
        case ApiError() if error.is_refusal:
            return CommandError(
                Exit.REFUSED, f"refused: {error}", _refusal_hint(error), status=error.status, code=error.code
            )
        case ApiError():
            hint = "the request was retried; try again later"
            return CommandError(Exit.UNAVAILABLE, f"the API failed: {error}", hint, status=error.status)
        case OSError() if error.filename:
            return CommandError(
                Exit.ERROR, f"cannot write {error.filename}: {error.strerror}", "check -o's path"
            )
        case _:
            return CommandError(Exit.ERROR, str(error))


def _ended_hint(download: Download) -> str:
    if download.state == CANCELLED:
        return "it was cancelled; create it again to get a file"
    if download.state == EXPIRED:
        return "its file was deleted when it expired (or by `satchel cancel`); create it again"
    return f"nothing to fetch: fix the request and create a new download (`satchel status {download.id}`)"


_REFUSAL_HINTS = {
    "DownloadNotFound": "check the id: `satchel list` shows your downloads",
    "DownloadNotReady": "it is not built yet: `satchel wait ID` waits for it",
    "DownloadUnavailable": "it ended without a file: `satchel status ID` says why",
    "DownloadExpired": "its file has been deleted; create the download again",
    "SourceNotAllowed": "keys must lie in your tenant's scope, e.g. acme/reports/2024/q1.csv",
    "EmptyKeys": "name at least one key or --prefix, none of them empty",
    "DuplicateKeys": "name each key once",
    "TooManyKeys": "ask for fewer keys; a --prefix covers many objects at once",
    "IdempotencyKeyReused": "that --idempotency-key went with another request: choose a new one",
    "KeyNotFound": "check the id: `satchel keys list` shows your tenant's keys",
    "LinkNotFound": "no such link (or not yours)",
}


def _refusal_hint(error: ApiError) -> str:
    if error.code == "QuotaExceeded":
        wait = f"retry in {error.retry_after} s, or " if error.retry_after else ""
        return f"{wait}wait for one of your running downloads (`satchel list --state RUNNING`) or cancel one"
    if error.code in _REFUSAL_HINTS:
        return _REFUSAL_HINTS[error.code]
    if error.status in (401, 403):
        return (
            f"check the API key (--api-key, ${ENV_API_KEY} or --as NAME); "
            f"local keys change each time `make run` starts"
        )
    return ""


# -- the commands -------------------------------------------------------------------------


def cmd_zip(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    if not args.keys and not args.prefix:
        raise UsageError("name at least one KEY or --prefix, e.g. `satchel zip acme/reports/2024/q1.csv`")
    download = client.create_zip(
        args.keys,
        args.prefix,
        compression=args.compression,
        filename=args.filename,
        expires_in=args.expires_in,
        idempotency_key=args.idempotency_key,
        archive_format=args.format,
        manifest=args.manifest or None,
        on_missing="skip" if args.skip_missing else None,
    )
    ui.notice(f"created download {download.id}")
    fetched: FetchResult | None = None
    if args.wait or args.output:
        download = _wait(client, download.id, args.timeout, ui)
    if args.output:
        fetched = _fetch(client, download, args.output, args.limit_rate, ui)
    file = {"file": fetched.to_json()} if fetched else {}
    ui.result(download.id, {**download.raw, **file})


def cmd_status(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    download = client.get(args.id)
    ui.result(render.download(download), download.raw)


def cmd_wait(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    download = _wait(client, args.id, args.timeout, ui)
    ui.result(render.download(download), download.raw)


def cmd_fetch(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    download = client.get(args.id)
    if not download.finished and not args.no_wait:
        download = _wait(client, download.id, args.timeout, ui)
    result = _fetch(client, download, args.output, args.limit_rate, ui)
    ui.result(str(result.path), {"download_id": download.id, **result.to_json()})


def cmd_list(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    found = client.list(state=args.state)
    items = list(itertools.islice(found, args.limit) if args.limit else found)
    if not items:
        ui.notice("no downloads" + (f" in state {args.state}" if args.state else ""))
    ui.result(render.table(items) if items else "", [item.raw for item in items])


def cmd_cancel(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    cancelled = client.cancel(args.id)
    if cancelled is None:
        ui.result(f"deleted the file of {args.id}; it is EXPIRED now", {"id": args.id, "action": "deleted"})
    else:
        ui.result(f"cancelled {args.id}", {"id": args.id, "action": "cancelled", "download": cancelled.raw})


def cmd_link(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    link = client.create_link(args.id, expires_in=args.expires_in, max_uses=args.max_uses)
    ui.notice(render.link(link))
    ui.result(link.url, link.raw)


def cmd_types(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    kinds = client.types()
    ui.result(render.types(kinds), [kind.raw for kind in kinds])


def cmd_keys_list(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    keys = client.list_keys()
    if not keys:
        ui.notice("no keys")
    ui.result(render.keys(keys) if keys else "", list(keys))


def cmd_keys_create(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    issued = client.create_key(args.user, roles=args.role, expires_in=args.expires_in)
    ui.notice(f"key {issued['id']} for {issued['tenant']}/{issued['user_id']}: shown once, store it now")
    ui.result(issued["api_key"], issued)


def cmd_keys_rotate(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    issued = client.rotate_key(args.id, expires_in=args.expires_in, grace_seconds=args.grace)
    old = f"key {args.id} works for {args.grace} s more" if args.grace else f"key {args.id} is disabled"
    ui.notice(f"{old}; its successor {issued['id']} is shown once, store it now")
    ui.result(issued["api_key"], issued)


def cmd_keys_disable(client: SatchelClient, args: argparse.Namespace, ui: Ui) -> None:
    record = client.disable_key(args.id)
    ui.result(f"disabled key {record['id']} ({record['prefix']}…)", record)


def cmd_get(args: argparse.Namespace, ui: Ui) -> None:
    try:
        url = link_url(args.link)
    except ValueError as error:
        raise UsageError(str(error)) from None
    saving: list[Path] = []  # where the file goes, once the link has said its name
    with LinkClient() as links, ui.fetching("") as bar:

        def show(shared: SharedFile) -> None:
            saving.append(target_for(shared, args.output))
            bar.describe(saving[-1].name)
            ui.notice(render.shared_file(shared))

        def waiting(not_ready: LinkNotReady) -> None:
            ui.notice(render.not_ready(not_ready.body, not_ready.retry_after))

        try:
            got = links.get(
                url,
                args.output,
                wait=args.wait,
                timeout=args.timeout,
                observer=bar,
                rate_limit=args.limit_rate,
                on_wait=waiting,
                on_file=show,
            )
        except LinkNotReady as not_ready:
            raise _not_ready(not_ready, args) from None
        except ApiError as error:
            raise _link_refused(error) from None
        except VerificationError as error:
            hint = (
                "the bytes were removed: run the same command again (within the claim window no use is spent)"
            )
            raise CommandError(Exit.CORRUPT, str(error), hint) from None
        except KeyboardInterrupt:
            raise CommandError(Exit.INTERRUPTED, "interrupted", _link_resume_hint(saving)) from None
        except NetworkError as error:
            raise CommandError(Exit.UNAVAILABLE, str(error), _link_resume_hint(saving)) from error
    ui.notice(render.fetched(got.fetched) + _use_note(got))
    ui.result(str(got.fetched.path), got.to_json())


def _use_note(got: GetResult) -> str:
    if got.reclaimed:
        return "; resumed within the claim window, no further use spent"
    return f"; claimed use {got.use}" if got.use else "; nothing claimed"


def _not_ready(not_ready: LinkNotReady, args: argparse.Namespace) -> CommandError:
    after = not_ready.retry_after
    if args.wait:
        hint = "it goes on: run the same command again (with --wait, and a longer --timeout) to wait more"
        return CommandError(Exit.TIMEOUT, str(not_ready), hint, retry_after=after)
    when = f"retry after {after} s" if after else "retry later"
    hint = f"{when}, or add --wait to wait for it (nothing was claimed)"
    return CommandError(
        Exit.REFUSED, str(not_ready), hint, status=425, code="LinkNotReady", retry_after=after
    )


_LINK_HINTS = {
    "LinkNotFound": "check the link: copy it whole (a link that was never issued is not found)",
    "LinkGone": "it is used up, expired or revoked, or its file was deleted: ask its owner for a new link",
}


def _link_refused(error: ApiError) -> CommandError:
    if not error.is_refusal:
        hint = "the request was retried; try again later"
        return CommandError(Exit.UNAVAILABLE, f"the API failed: {error}", hint, status=error.status)
    hint = _LINK_HINTS.get(error.code, "")
    return CommandError(Exit.REFUSED, f"refused: {error}", hint, status=error.status, code=error.code)


_CORRUPT_HINT = (
    "the bytes were removed: run the same command again (within the claim window, no use is spent)"
)


def _link_resume_hint(saving: list[Path]) -> str:
    kept = _kept(part_path(saving[-1])) if saving else 0
    if not kept:
        return "nothing was saved; run the same command again"
    return (
        f"{kept} bytes are kept in {part_path(saving[-1])}: run the same command again to resume "
        "from there (within the claim window, no further use is spent)"
    )


def _wait(client: SatchelClient, download_id: str, timeout: float | None, ui: Ui) -> Download:
    try:
        with ui.waiting(download_id) as show:
            download = client.wait(download_id, timeout=timeout, on_update=show)
    except KeyboardInterrupt:
        hint = (
            f"the download goes on: `satchel wait {download_id}` waits again, "
            f"`satchel cancel {download_id}` stops it"
        )
        raise CommandError(Exit.INTERRUPTED, "stopped waiting", hint) from None
    ui.notice(f"download {download.id} is {download.state}: {render.progress(download)}")
    return download


def _fetch(
    client: SatchelClient, download: Download, output: str | None, rate: int | None, ui: Ui
) -> FetchResult:
    target = target_path(download, output)
    part = part_path(target)
    try:
        with ui.fetching(target.name) as bar:
            result = client.fetch(download.id, target, observer=bar, rate_limit=rate)
    except KeyboardInterrupt:
        raise CommandError(Exit.INTERRUPTED, "interrupted", _resume_hint(part)) from None
    except NetworkError as error:
        if not _kept(part):
            raise
        raise CommandError(Exit.UNAVAILABLE, str(error), _resume_hint(part)) from error
    ui.notice(render.fetched(result))
    return result


def _kept(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _resume_hint(part: Path) -> str:
    kept = _kept(part)
    if not kept:
        return "nothing was saved; run the same command again"
    return f"{kept} bytes are kept in {part}: run the same command again to resume from there"


# -- the command line ---------------------------------------------------------------------


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


_RATE = re.compile(r"(\d+)([kmg]?)", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _rate(text: str) -> int:
    match = _RATE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a rate in bytes a second (e.g. 500K, 2M): {text!r}")
    return int(match.group(1)) * _RATE_UNITS[match.group(2).lower()]


def _common_options(*, after_command: bool, connection: bool = True) -> argparse.ArgumentParser:
    # Accepted before and after the command (`satchel --as alice list`, `satchel list --as alice`).
    # After it, the defaults are SUPPRESS, so that a subcommand does not reset what was given
    # before it; and a separate parser, because parents share their action objects.
    default = argparse.SUPPRESS if after_command else None
    common = argparse.ArgumentParser(add_help=False, argument_default=default)
    if connection:  # `get` needs none: a link is its own credential
        _connection_options(common)
    output = common.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print results as JSON on stdout, for scripts")
    output.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or messages; errors only"
    )
    return common


def _connection_options(common: argparse.ArgumentParser) -> None:
    connection = common.add_argument_group("connection")
    connection.add_argument("--api-url", metavar="URL", help=f"the API's base URL (default: ${ENV_API_URL})")
    connection.add_argument("--api-key", metavar="KEY", help=f"your API key (default: ${ENV_API_KEY})")
    connection.add_argument(
        "--token",
        metavar="JWT",
        help=f"an OIDC token, on a stage that signs in with OIDC (default: ${ENV_TOKEN})",
    )
    connection.add_argument(
        "--sigv4",
        action="store_true",
        help=f"sign with your AWS credentials, on a stage that signs in with IAM (default: ${ENV_SIGV4})",
    )
    connection.add_argument("--region", metavar="REGION", help="the API's AWS region, for --sigv4")
    connection.add_argument(
        "--as",
        dest="as_user",
        metavar="NAME",
        help=f"call the local stack (`make run`) as its user NAME, e.g. alice; from {STATE_FILE_NAME}",
    )


def _wait_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--timeout", type=_seconds, metavar="S", help="give up waiting after S seconds (exit 7)"
    )
    return options


def _fetch_options(output_help: str) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-o", "--output", metavar="PATH", help=output_help)
    options.add_argument(
        "--limit-rate", type=_rate, metavar="RATE", help="fetch at most RATE bytes a second (500K, 2M)"
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(after_command=True)
    parser = argparse.ArgumentParser(
        prog="satchel",
        description="Create, watch and fetch Satchel downloads.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(after_command=False)],
    )
    parser.add_argument("--version", action="version", version=f"satchel {version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def add(
        name: str, command: Command, help: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=[common, *parents])
        sub.set_defaults(command=command)
        return sub

    _add_zip(add("zip", cmd_zip, "zip source objects, by key or prefix", _wait_options(), _zip_output()))
    add("status", cmd_status, "show a download").add_argument("id")
    add("wait", cmd_wait, "wait for a download to finish, with its progress", _wait_options()).add_argument(
        "id"
    )
    fetch = add(
        "fetch",
        cmd_fetch,
        "save a download's file, resuming an interrupted fetch, and verify its sha256",
        _wait_options(),
        _fetch_options("where to save it (default: the download's filename, here); a directory: in it"),
    )
    fetch.add_argument("id")
    fetch.add_argument("--no-wait", action="store_true", help="refuse (exit 3) if it is not built yet")
    _add_list(add("list", cmd_list, "list your downloads, newest first"))
    add("cancel", cmd_cancel, "cancel a running download, or delete a finished one's file").add_argument("id")
    _add_link(add("link", cmd_link, "make a link to a download that works without an API key"))
    get = commands.add_parser(
        "get",
        help="claim a shared link and save its file, resuming an interrupted get, verified (no API key)",
        description=(
            "Claim a link (one use; a resume within the claim window spends none), save its file and "
            "verify its sha256. The link's page is only read first: reading never spends a use."
        ),
        parents=[
            _common_options(after_command=True, connection=False),
            _wait_options(),
            _fetch_options("where to save it (default: the link's file name, here); a directory: in it"),
        ],
    )
    get.set_defaults(command=cmd_get)
    get.add_argument("link", metavar="LINK", help="the link, e.g. https://satchel.example.com/links/TOKEN")
    get.add_argument("--wait", action="store_true", help="wait while its file is being built (425)")
    add("types", cmd_types, "list the download types and their parameters")
    _add_keys(commands.add_parser("keys", help="your tenant's API keys (tenant admins)"), common)
    return parser


def _add_keys(keys: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    actions = keys.add_subparsers(title="actions", metavar="ACTION", required=True)

    def add(name: str, command: Command, help: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help, description=help, parents=[common])
        sub.set_defaults(command=command)
        return sub

    add("list", cmd_keys_list, "list the tenant's keys: id, prefix, user, roles, dates (never the keys)")
    create = add("create", cmd_keys_create, "issue a key, printed once")
    create.add_argument("--user", metavar="USER", help="whose key (default: yours)")
    create.add_argument("--role", action="append", default=[], metavar="ROLE", help="a role (repeatable)")
    create.add_argument("--expires-in", type=_positive_int, metavar="S", help="the key expires in S seconds")
    rotate = add("rotate", cmd_keys_rotate, "issue a successor for the same user and roles; disable this one")
    rotate.add_argument("id")
    rotate.add_argument(
        "--expires-in", type=_positive_int, metavar="S", help="the new key expires in S seconds"
    )
    rotate.add_argument(
        "--grace",
        type=_positive_int,
        metavar="S",
        help="the old key works S seconds more (a week at most)",
    )
    add(
        "disable", cmd_keys_disable, "disable a key (refused within the authorizer's cache time)"
    ).add_argument("id")


def _zip_output() -> argparse.ArgumentParser:
    return _fetch_options("wait, then save the zip at PATH (verified)")


def _add_zip(zip_parser: argparse.ArgumentParser) -> None:
    zip_parser.add_argument(
        "keys", nargs="*", metavar="KEY", help="an object key, e.g. acme/reports/2024/q1.csv"
    )
    zip_parser.add_argument(
        "--prefix", action="append", default=[], metavar="P", help="every object under P (repeatable)"
    )
    zip_parser.add_argument("--filename", metavar="F", help="the zip's file name")
    compression = zip_parser.add_mutually_exclusive_group()
    compression.add_argument(
        "--deflate",
        dest="compression",
        action="store_const",
        const="deflate",
        help="compress the entries (the service's default)",
    )
    compression.add_argument(
        "--store",
        dest="compression",
        action="store_const",
        const="store",
        help="store the entries uncompressed (faster; for data that is compressed already)",
    )
    zip_parser.add_argument(
        "--format", choices=["zip", "tar", "tar.gz"], help="the archive's format (the service's default: zip)"
    )
    zip_parser.add_argument(
        "--manifest", action="store_true", help="add SHA256SUMS at the root (sha256sum -c checks it)"
    )
    zip_parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out sources that do not exist, listed in MISSING.txt, instead of failing",
    )
    zip_parser.add_argument("--expires-in", type=_positive_int, metavar="S", help="keep the zip S seconds")
    zip_parser.add_argument(
        "--idempotency-key",
        metavar="K",
        help="run the command again with the same K to get the same download (default: a new one)",
    )
    zip_parser.add_argument("--wait", action="store_true", help="wait until it is built, with its progress")


def _add_list(list_parser: argparse.ArgumentParser) -> None:
    list_parser.add_argument("--state", type=str.upper, choices=STATES, help="only downloads in this state")
    list_parser.add_argument("--limit", type=_positive_int, metavar="N", help="at most N downloads")


def _add_link(link_parser: argparse.ArgumentParser) -> None:
    link_parser.add_argument("id")
    link_parser.add_argument(
        "--max-uses", type=_positive_int, metavar="N", help="N uses at most (1: single-use)"
    )
    link_parser.add_argument("--expires-in", type=_positive_int, metavar="S", help="valid for S seconds")
