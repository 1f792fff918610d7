"""Callbacks: a signed HTTP POST to the URL a download's creator gave, when it finishes.

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

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from botocore.httpsession import where as ca_bundle

from chalicelib.core.errors import InvalidCallbackUrl

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Satchel-Signature"
TIMESTAMP_HEADER = "Satchel-Timestamp"
EVENT_HEADER = "Satchel-Event-Id"
_MAX_URL = 2048
# Redirects are not followed (a redirect could lead anywhere, past the address check), and a
# client error will not change on its own; but 408 and 429 are worth another try.
_PERMANENT = range(300, 500)
_RETRYABLE_4XX = {408, 429}


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


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 over "<timestamp>.<body>": the receiver recomputes it."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    status: int | None
    error: str | None = None


def _post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> int:
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    options: dict[str, Any] = {"timeout": urllib3.Timeout(timeout), "retries": False, "maxsize": 1}
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            server_hostname=target.host,
            assert_hostname=target.host,
            ca_certs=ca_bundle(),
            **options,
        )
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, **options)
    with pool:
        response = pool.urlopen(
            "POST", target.path, body=body, headers={**headers, "Host": host_header}, redirect=False
        )
        return int(response.status)


def deliver(
    url: str,
    payload: dict[str, Any],
    secret: str,
    *,
    allow_loopback: bool,
    ports: Collection[int] = DEFAULT_PORTS,
    attempts: int,
    timeout_seconds: float,
    backoff_ms: int,
    event_id: str | None = None,
) -> Delivery:
    """POST `payload`, retrying timeouts, 5xx, 408 and 429 with exponential backoff.

    `event_id` (the Satchel-Event-Id header, by which a receiver drops a repeat) defaults to
    a state change's "<download id>.<state>"."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
    event_id = event_id or f"{payload['id']}.{payload['state']}"
    status: int | None = None
    error: str | None = None
    for attempt in range(1, attempts + 1):
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Satchel-Callback/1",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            EVENT_HEADER: event_id,
        }
        try:
            status, error = _post(check(url, allow_loopback, ports), body, headers, timeout_seconds), None
        except InvalidCallbackUrl as refused:
            return Delivery(False, attempt, None, refused.message)
        except urllib3.exceptions.HTTPError as failure:
            status, error = None, f"{type(failure).__name__}: {failure}"
        if status is not None and 200 <= status < 300:
            return Delivery(True, attempt, status)
        if status in _PERMANENT and status not in _RETRYABLE_4XX:
            return Delivery(False, attempt, status, f"HTTP {status}")
        if attempt < attempts:
            time.sleep(backoff_ms / 1000 * 2 ** (attempt - 1))
    log.warning("callback to %s failed after %d attempts: %s", url, attempts, error or f"HTTP {status}")
    return Delivery(False, attempts, status, error or f"HTTP {status}")
