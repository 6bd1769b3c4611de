"""Where an upstream may send this registry: its redirect targets and token realms.

An upstream's answers can point anywhere (a `Location`, a `WWW-Authenticate` realm). Left
alone, a hostile or compromised upstream could make the registry fetch an internal URL —
the cloud metadata service, a database's HTTP port — and hand the answer to a client
(server-side request forgery). So a target whose address is in a special range is refused,
unless the configured upstream itself is in that same kind of range (a private registry
redirecting to a private storage host) or `[global] allowed_redirect_networks` lists it.

| kind of range     | networks                                                       |
|-------------------|----------------------------------------------------------------|
| cloud metadata    | 169.254.169.254, 169.254.170.2, fd00:ec2::254, 100.100.100.200 |
|                   | (never implied by the upstream's own range: only when listed)  |
| loopback          | 127.0.0.0/8, ::1                                               |
| link-local        | 169.254.0.0/16, fe80::/10                                      |
| private           | 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7            |
| shared (CGNAT)    | 100.64.0.0/10                                                  |
| unspecified       | 0.0.0.0/8, ::                                                  |
| multicast/reserved| 224.0.0.0/4, 240.0.0.0/4, ff00::/8                             |

An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is judged as the IPv4 address. A
hostname is resolved and every address it resolves to must pass; the connection then goes to
exactly those addresses (`AddressPins`, read by the connector's resolver), never to a second
lookup that a hostile name server could answer differently (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..lru import LruCache
from .errors import TargetRefused, UpstreamDown

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = "cloud metadata"
_RANGES: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = tuple(
    (kind, tuple(ipaddress.ip_network(text) for text in networks))
    for kind, networks in (
        (
            METADATA,
            ("169.254.169.254/32", "169.254.170.2/32", "fd00:ec2::254/128", "100.100.100.200/32"),
        ),
        ("loopback", ("127.0.0.0/8", "::1/128")),
        ("link-local", ("169.254.0.0/16", "fe80::/10")),
        ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
        ("shared (CGNAT)", ("100.64.0.0/10",)),
        ("unspecified", ("0.0.0.0/8", "::/128")),
        ("multicast or reserved", ("224.0.0.0/4", "240.0.0.0/4", "ff00::/8")),
    )
)


def _plain(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def range_of(address: IPAddress) -> str | None:
    """The kind of special range `address` is in, or None for a public address."""
    address = _plain(address)
    for kind, networks in _RANGES:
        if any(address in network for network in networks if network.version == address.version):
            return kind
    return None


def refusal(
    target: IPAddress, upstream: Iterable[IPAddress], allowed: Iterable[IPNetwork] = ()
) -> str | None:
    """Why a redirect or realm at `target` is refused for an upstream at the `upstream`
    addresses, or None when it may be followed."""
    target = _plain(target)
    if any(target in network for network in allowed if network.version == target.version):
        return None
    kind = range_of(target)
    if kind is None:
        return None
    if kind != METADATA and any(range_of(address) == kind for address in upstream):
        return None
    return f"{target} is a {kind} address"


class AddressPins:
    """The addresses the guard approved for each redirect or realm host, for the
    connections that follow its check (bounded; a pin lasts `ttl_secs`, and every check
    renews it)."""

    def __init__(self, ttl_secs: float = 60.0, max_hosts: int = 1024):
        self._ttl = ttl_secs
        self._pins: LruCache[tuple[IPAddress, ...]] = LruCache(max_hosts * 300)

    def pin(self, host: str, addresses: Iterable[IPAddress]) -> None:
        self._pins.put(host.lower(), tuple(addresses), weight=100, ttl=self._ttl)

    def get(self, host: str) -> tuple[IPAddress, ...] | None:
        return self._pins.get(host.lower())


class TargetGuard:
    """Checks the URLs one upstream points to before they are requested."""

    def __init__(
        self,
        upstream_host: str,
        allowed: tuple[IPNetwork, ...],
        resolve_timeout_secs: float,
        pins: AddressPins,
    ):
        self.upstream_host = upstream_host  # the configured URL's host, without the port
        self.allowed = allowed
        self._timeout = resolve_timeout_secs
        self._pins = pins

    async def check(self, url: str, what: str) -> None:
        """Raise TargetRefused when `url` (a redirect target or a realm) must not be
        requested; UpstreamDown when its host cannot be resolved."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetRefused(self.upstream_host, f"{what} is not an http(s) URL")
        if parts.hostname == self.upstream_host:
            return  # the configured upstream itself
        targets = await self._addresses(parts.hostname)
        upstream: list[IPAddress] | None = None
        for address in targets:
            if range_of(address) is None:
                continue  # public: followed, whatever the upstream's own range
            if upstream is None:  # looked up only when a special range needs comparing
                upstream = await self._addresses(self.upstream_host)
            reason = refusal(address, upstream, self.allowed)
            if reason is not None:
                log.warning(
                    "upstream %s: %s to %s refused: %s (server-side request forgery guard)",
                    self.upstream_host,
                    what,
                    parts.hostname,
                    reason,
                )
                raise TargetRefused(
                    self.upstream_host,
                    f"{what} to {parts.hostname} refused: {reason} "
                    "(see [global] allowed_redirect_networks)",
                )
        self._pins.pin(parts.hostname, targets)

    async def _addresses(self, host: str) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as error:
            raise UpstreamDown(self.upstream_host, f"cannot resolve {host}: {error!r}") from error
        # Strip an IPv6 zone ("fe80::1%eth0") before parsing.
        return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
