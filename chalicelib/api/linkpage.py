"""How a link answers over HTTP: the link page for browsers, JSON for everyone else, and the
claim's redirect or JSON.

The page is self-contained (inline CSS, no script, no external asset) under a strict
Content-Security-Policy, so a file name, which is user data, can do nothing but be shown:
every value is HTML-escaped. Preview bots read the Open Graph tags and never spend a use
(only the form's POST does).
"""

from __future__ import annotations

import html
from datetime import datetime
from email.utils import format_datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from chalice.app import Response

from chalicelib.api.http import SECURITY_HEADERS, problem_response, respond
from chalicelib.api.links import Claimed, Reading
from chalicelib.core import clock
from chalicelib.core.errors import LinkGone, LinkNotFound, LinkNotReady

COOKIE = "satchel_claim"
CLAIM_HEADER = "Satchel-Claim"
HTML = "text/html; charset=utf-8"

_STYLE = """
:root{color-scheme:light dark;--fg:#1b1b1f;--bg:#fafafa;--card:#fff;--muted:#4a4a55;
--accent:#0b57d0;--line:#d0d0d8}
@media (prefers-color-scheme:dark){:root{--fg:#ececf1;--bg:#17171b;--card:#222228;--muted:#b8b8c4;
--accent:#8ab4f8;--line:#3a3a44}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
main{max-width:36rem;margin:2rem auto;padding:1.5rem;background:var(--card);
border:1px solid var(--line);border-radius:12px}
h1{font-size:1.3rem;margin:0 0 1rem;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem;margin:0 0 1.5rem}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
code{font:.85rem/1.4 ui-monospace,Menlo,Consolas,monospace}
button{font:inherit;font-weight:600;color:#fff;background:#0b57d0;border:0;border-radius:8px;
padding:.75rem 1.5rem;cursor:pointer;width:100%}
button:hover{background:#0842a0}
button:focus-visible,a:focus-visible{outline:3px solid var(--accent);outline-offset:3px}
progress{width:100%;height:1rem}
.note{color:var(--muted);font-size:.9rem}
.code{color:var(--muted);font-size:.8rem}
@media (max-width:30rem){main{margin:0;border:0;
border-radius:0}dl{grid-template-columns:1fr}dd{margin-bottom:.5rem}}
"""


def wants_html(accept: str | None) -> bool:
    """Whether the Accept header lists HTML (a browser); `*/*` or none gets JSON."""
    for part in (accept or "").split(","):
        media, _, params = part.strip().partition(";")
        if media.strip().lower() in ("text/html", "application/xhtml+xml") and "q=0" not in params.replace(
            " ", ""
        ).split(";"):
            return True
    return False


def wants_json(accept: str | None) -> bool:
    return any(part.split(";")[0].strip().lower() == "application/json" for part in (accept or "").split(","))


def presented_claim(headers: Any) -> str | None:
    """The claim id the request presents: header Satchel-Claim (JSON clients) or the cookie."""
    if headers.get(CLAIM_HEADER):
        return str(headers.get(CLAIM_HEADER)).strip()
    try:
        cookie = SimpleCookie(headers.get("cookie") or "")
    except CookieError:
        return None
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel is not None else None


def http_date(iso: str) -> str:
    return format_datetime(clock.parse(iso), usegmt=True)


def answer(reading: Reading, accept: str | None, claim_url: str, *, head: bool = False) -> Response:
    """The answer to GET or HEAD: the page or JSON, with the state's status and headers."""
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    if reading.link is not None:
        headers["Sunset"] = http_date(reading.link.expires_at)
    status = 200
    if reading.refusal is not None:
        status = reading.refusal.status
        headers.update(reading.refusal.headers())
    if wants_html(accept):
        page = _page(reading, claim_url)
        headers.update(_page_headers(reading.file_origin))
        page_headers: dict[str, str | list[str]] = {**headers}
        return Response(body="" if head else page, status_code=status, headers=page_headers)
    if reading.refusal is not None:
        response = problem_response(reading.refusal.body(), status, headers)
    else:
        response = respond(reading.facts(claim_url), status, headers)
    if head:
        response.body = ""
    return response


def claimed(claim: Claimed, accept: str | None, claim_url: str, *, secure: bool) -> Response:
    """The claim's answer: 303 to the file for browsers and forms, 200 JSON for JSON clients;
    both set the claim cookie, JSON clients also get the claim id to send back."""
    now = clock.now()
    max_age = max(int((clock.parse(claim.claim_expires_at) - now).total_seconds()), 0)
    path = urlsplit(claim_url).path
    cookie = f"{COOKIE}={claim.claim_id}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    headers = {
        "Cache-Control": "no-store",
        "Sunset": http_date(claim.link.expires_at),
        "Set-Cookie": cookie + ("; Secure" if secure else ""),
    }
    if wants_json(accept):
        return respond(claim.to_api(), 200, headers)
    return Response(body="", status_code=303, headers={**headers, "Location": claim.url})


def _page_headers(file_origin: str | None) -> dict[str, str]:
    # A form's target is checked against form-action by some browsers after redirects too:
    # the 303 goes to the artifact bucket, so its origin is allowed beside 'self'.
    form_action = "'self'" + (f" {file_origin}" if file_origin else "")
    policy = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Type": HTML,
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        **SECURITY_HEADERS,
    }


def _page(reading: Reading, claim_url: str) -> str:
    refusal = reading.refusal
    if refusal is None:
        return _ready(reading, claim_url)
    if isinstance(refusal, LinkNotReady):
        return _not_ready(reading, refusal)
    if isinstance(refusal, LinkGone):
        return _shell(
            "This link can no longer be used",
            refusal.code,
            f"<p>{_e(_gone_sentence(refusal))}</p>"
            "<p class=note>Ask the person who sent it for a new link.</p>",
        )
    if isinstance(refusal, LinkNotFound):
        return _shell(
            "Link not found",
            refusal.code,
            "<p>There is no download behind this link. Check that it was copied whole.</p>",
        )
    return _shell("This link cannot be used now", refusal.code, f"<p>{_e(refusal.message)}</p>")


def _gone_sentence(refusal: LinkGone) -> str:
    reason = refusal.details.get("reason")
    return {
        "used_up": "It has been used as many times as it allows.",
        "expired": "It has expired.",
        "revoked": "It was revoked by its owner.",
        "download_gone": "The file it pointed to is no longer available.",
    }.get(str(reason), refusal.message)


def _ready(reading: Reading, claim_url: str) -> str:
    link, download = reading.link, reading.download
    assert link is not None
    assert download is not None
    assert download.artifact is not None
    artifact = download.artifact
    uses_left = max(link.max_uses - link.uses, 0)
    if reading.claim_open:
        uses = "You may download it again for a while without using up the link."
    else:
        uses = f"{uses_left} of {link.max_uses}"
    expires = clock.parse(link.expires_at)
    description = f"{human_size(artifact.size)}, {artifact.content_type}; link expires {_absolute(expires)}"
    action = urlsplit(claim_url).path
    body = (
        "<dl>"
        f"<dt>Size</dt><dd>{_e(size_text(artifact.size))}</dd>"
        f"<dt>Type</dt><dd>{_e(artifact.content_type)}</dd>"
        f"<dt>SHA-256</dt><dd><code id=sha256>{_e(artifact.sha256)}</code></dd>"
        f'<dt>Expires</dt><dd><time datetime="{_e(link.expires_at)}">{_e(_absolute(expires))}</time>'
        f" ({_e(relative(expires, clock.now()))})</dd>"
        f"<dt>Uses left</dt><dd id=uses-left>{_e(uses)}</dd>"
        "</dl>"
        f'<form method="post" action="{_e(action)}">'
        '<button type="submit" id="download">Download</button></form>'
        "<p class=note>Downloading uses the link once; retrying or resuming soon after does not.</p>"
    )
    return _shell(download.filename, None, body, og=(download.filename, description))


def _not_ready(reading: Reading, refusal: LinkNotReady) -> str:
    progress: dict[str, int] = refusal.details.get("progress") or {}
    done, total = progress.get("bytes_done", 0), progress.get("bytes_total", 0)
    if total:
        meter = (
            f"<label for=progress>Built {_e(human_size(done))} of {_e(human_size(total))}</label>"
            f'<progress id=progress max="{total}" value="{done}"></progress>'
        )
    else:
        meter = "<p>The file is being prepared.</p>"
    name = reading.download.filename if reading.download else "Your download"
    return _shell(
        f"{name} is not ready yet",
        refusal.code,
        f"{meter}<p class=note>This page refreshes itself every {_seconds(refusal.retry_after)}.</p>",
        refresh=refusal.retry_after,
    )


def _shell(
    title: str,
    code: str | None,
    body: str,
    *,
    og: tuple[str, str] | None = None,
    refresh: int | None = None,
) -> str:
    meta = [
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="robots" content="noindex, nofollow">',
        '<meta property="og:type" content="website">',
        f'<meta property="og:title" content="{_e(og[0] if og else title)}">',
    ]
    if og:
        meta.append(f'<meta property="og:description" content="{_e(og[1])}">')
    if refresh is not None:
        meta.append(f'<meta http-equiv="refresh" content="{refresh}">')
    if code:
        meta.append(f'<meta name="satchel-code" content="{_e(code)}">')
    footer = f"<p class=code>Code: <code id=code>{_e(code)}</code></p>" if code else ""
    return (
        '<!DOCTYPE html><html lang="en"><head>'
        + "".join(meta)
        + f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        + f"<body><main><h1>{_e(title)}</h1>{body}{footer}</main></body></html>"
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _absolute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _seconds(count: int) -> str:
    return "second" if count == 1 else f"{count} seconds"


def size_text(size: int) -> str:
    """The size as a person reads it, with the exact bytes when the unit rounds them."""
    human = human_size(size)
    return human if human.endswith(" bytes") else f"{human} ({size:,} bytes)"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def relative(moment: datetime, now: datetime) -> str:
    seconds = int((moment - now).total_seconds())
    if seconds <= 0:
        return "now"
    for unit, length in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"in {count} {unit}{'s' if count != 1 else ''}"
    return f"in {seconds} second{'s' if seconds != 1 else ''}"
