"""Callbacks: checking the URL a download's creator gave, and one HTTP POST to it.

The URL is someone else's input reaching out from inside the account, so it is checked
twice, at creation and at each delivery attempt (DNS may change in between): https only,
port 443 (or the configured ports), and every address its host resolves to must be a
public one. No loopback, private, link-local (the metadata service), multicast or reserved
address, no IPv6 relay prefix (6to4, Teredo, NAT64) and no IPv4-mapped or -compatible
address embedding one of those, unless loopback is allowed (the local stage, where the
receiver runs on the same machine over http, on any port).
The request is sent to the address that was checked, so a second DNS answer cannot
redirect it.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.httpsession import where as ca_bundle

from chalicelib.core.errors import InvalidCallbackUrl

log = logging.getLogger(__name__)

_MAX_URL = 2048
# The most of a receiver's answer that is read: its status is all that counts.
MAX_ANSWER_BYTES = 4096


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked address the request goes to


def _refuse(url: str, reason: str) -> InvalidCallbackUrl:
    return InvalidCallbackUrl(f"callback_url is not allowed: {reason}", path="callback_url", url=url[:200])


# IPv6 prefixes that carry traffic on to an IPv4 address a relay or gateway picks from the
# address itself (6to4, Teredo, NAT64 well-known and local-use): the address check cannot
# vouch for where such a packet ends up, so they are refused whatever they embed.
_RELAYED = tuple(
    ipaddress.IPv6Network(prefix) for prefix in ("2002::/16", "2001::/32", "64:ff9b::/96", "64:ff9b:1::/48")
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d, still routed by some stacks
DEFAULT_PORTS: tuple[int, ...] = (443,)


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            address = address.ipv4_mapped
        elif any(address in network for network in _RELAYED):
            return False
        elif address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: nor ::1
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.is_loopback:
        return allow_loopback
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_link_local)


def check(url: str, allow_loopback: bool, ports: Collection[int] = DEFAULT_PORTS) -> Target:
    """The URL's target if it may be called, else InvalidCallbackUrl saying why. `ports` are
    the ports an https receiver may listen on; a loopback one (where allowed) may use any."""
    if len(url) > _MAX_URL:
        raise _refuse(url, f"longer than {_MAX_URL} characters")
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise _refuse(url, "credentials in the URL")
    if not parts.hostname:
        raise _refuse(url, "no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _refuse(url, "bad port") from None
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _refuse(url, f"cannot resolve {parts.hostname}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not all(_address_allowed(address, allow_loopback) for address in addresses):
        raise _refuse(url, f"{parts.hostname} resolves to a private, loopback or reserved address")
    loopback = all(address.is_loopback for address in addresses)
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback and allow_loopback):
        raise _refuse(url, "it must be https")
    if port not in ports and not (loopback and allow_loopback):
        allowed = ", ".join(str(number) for number in sorted(ports))
        raise _refuse(url, f"port {port} is not allowed (allowed: {allowed})")
    path = parts.path or "/"
    return Target(
        parts.scheme,
        parts.hostname,
        port,
        path + (f"?{parts.query}" if parts.query else ""),
        str(addresses[0]),
    )


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the receiver's status, or why there was none."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Watchdog:
    """Shuts the attempt's socket down when its wall-clock budget is spent.

    A socket timeout (and urllib3's or http.client's, which are socket timeouts) bounds each
    read, not the attempt: a receiver that sends one byte every few seconds keeps a request
    open for ever, each read well within its timeout. Shutting the socket down from another
    thread ends any read or write blocked on it at once, so the attempt ends at its deadline
    whatever the receiver does."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.fired = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socket = sock
            if self.fired:
                self._shut(sock)

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def _cut(self) -> None:
        with self._lock:
            self.fired = True
            if self._socket is not None:
                self._shut(self._socket)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def post(target: Target, body: bytes, headers: dict[str, str], budget_seconds: float) -> Answer:
    """POST `body` to the checked address, within `budget_seconds` of wall-clock time for
    connect, TLS, request, status line, headers and at most MAX_ANSWER_BYTES of the answer's
    body (the rest is never read). Redirects are not followed."""
    deadline = time.monotonic() + budget_seconds
    watchdog = _Watchdog(budget_seconds)
    watchdog.start()
    connection: http.client.HTTPConnection | None = None
    sock: socket.socket | None = None
    try:
        raw = sock = socket.create_connection((target.address, target.port), timeout=budget_seconds)
        watchdog.watch(raw)
        if target.scheme == "https":
            context = ssl.create_default_context(cafile=ca_bundle())
            raw.settimeout(max(0.01, deadline - time.monotonic()))
            sock = context.wrap_socket(raw, server_hostname=target.host)
            watchdog.watch(sock)
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        connection = http.client.HTTPConnection(target.host, target.port)
        connection.sock = sock  # the connected (and checked) socket: no second DNS lookup
        connection.request("POST", target.path, body=body, headers={**headers, "Host": host_header})
        response = connection.getresponse()
        response.read(MAX_ANSWER_BYTES)  # at most this much: a huge answer is never read
        status = int(response.status)
    except (OSError, http.client.HTTPException) as failure:
        # A socket timeout is set to what is left of the budget: it is the budget running out.
        if watchdog.fired or isinstance(failure, TimeoutError):
            return Answer(None, f"no answer within {budget_seconds:g} s")
        return Answer(None, f"{type(failure).__name__}: {failure}"[:300])
    finally:
        watchdog.cancel()
        if connection is not None:
            connection.close()
        elif sock is not None:  # failed before the connection took it over (TLS, say)
            sock.close()
    if watchdog.fired:
        # A cut socket reads as the end of the answer: http.client may then have parsed a
        # status from a half-sent one. Whatever came, it did not come within the budget.
        return Answer(None, f"no answer within {budget_seconds:g} s")
    return Answer(status)
