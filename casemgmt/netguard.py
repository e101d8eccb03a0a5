"""Addresses the service sends to on an administrator's behalf: webhook URLs and email addresses.

A webhook contact makes this server open an HTTP connection to a URL an administrator typed in.
Unchecked, that is server-side request forgery: the admin (or anyone holding an admin token) makes
the server talk to its own loopback services, the cloud metadata endpoint at 169.254.169.254 or
hosts of the internal network, and reads the outcome from the outbox. So a webhook target must be
an http(s) URL without user information whose host is, or resolves only to, globally routable
unicast addresses. Numeric spellings of IPv4 addresses that resolvers accept (``2130706433``,
``0x7f000001``, ``0177.0.0.1``, ``127.1``) are refused outright; IPv4 addresses wrapped in IPv6
(``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``) are judged by the IPv4 address inside.

The check runs twice: when the contact is saved (a clear 422) and at every delivery, where the name
is resolved once, every address it resolves to is checked, and the connection goes to a checked
address (:func:`resolve_target`), so a DNS answer that changes between check and connect (DNS
rebinding) gains nothing.

``allow_private_networks`` (``CASEMGMT_WEBHOOK_ALLOW_PRIVATE_NETWORKS``) admits loopback, RFC 1918,
CGNAT and unique-local addresses for tests and closed networks; link-local, multicast, broadcast,
unspecified, documentation and reserved addresses stay refused even then.

An email contact is exactly one bare address (RFC 5322 addr-spec in dot-atom form): no lists, no
display names or angle brackets, no spaces or line breaks that could smuggle in another header.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(ValueError):
    """The address may not be used; ``str()`` says why, for the administrator who entered it."""


@dataclass(frozen=True)
class OutboundPolicy:
    """What the operator configured for webhooks (from settings)."""

    signing_secret_configured: bool = False
    allow_private_networks: bool = False


# --- IP addresses ------------------------------------------------------------------------------

_net = ipaddress.ip_network

# Never a webhook target, whatever the configuration.
_ALWAYS_REFUSED_V4 = [
    (_net("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_net("169.254.0.0/16"), "a link-local address"),
    (_net("192.0.0.0/24"), "a reserved (IETF protocol) address"),
    (_net("192.0.2.0/24"), "a documentation address"),
    (_net("192.88.99.0/24"), "a reserved (6to4 relay) address"),
    (_net("198.18.0.0/15"), "a reserved (benchmarking) address"),
    (_net("198.51.100.0/24"), "a documentation address"),
    (_net("203.0.113.0/24"), "a documentation address"),
    (_net("224.0.0.0/4"), "a multicast address"),
    (_net("240.0.0.0/4"), "a reserved or broadcast address"),
]
# Refused unless private networks are allowed.
_PRIVATE_V4 = [
    (_net("127.0.0.0/8"), "a loopback address"),
    (_net("10.0.0.0/8"), "a private network address"),
    (_net("172.16.0.0/12"), "a private network address"),
    (_net("192.168.0.0/16"), "a private network address"),
    (_net("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
]
_PRIVATE_V6 = [
    (_net("::1/128"), "a loopback address"),
    (_net("fc00::/7"), "a unique-local (private network) address"),
]
_GLOBAL_UNICAST_V6 = _net("2000::/3")
_ALWAYS_REFUSED_V6 = [
    (_net("2001::/23"), "a reserved (IETF protocol or Teredo) address"),
    (_net("2001:db8::/32"), "a documentation address"),
    (_net("2002::/16"), "a 6to4 address"),
    (_net("3fff::/20"), "a documentation address"),
]
_NAT64 = _net("64:ff9b::/96")


def refusal_reason(ip: IPAddress, allow_private_networks: bool = False) -> str | None:
    """Why ``ip`` is no webhook target, or ``None`` if it may be connected to."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return refusal_reason(ip.ipv4_mapped, allow_private_networks)
        if ip in _NAT64:
            return refusal_reason(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), allow_private_networks)
        if ip.scope_id:
            return "a scoped (link-local) address"
        for net, why in _PRIVATE_V6:
            if ip in net:
                return None if allow_private_networks else why
        if ip not in _GLOBAL_UNICAST_V6:
            if ip.is_multicast:
                return "a multicast address"
            if ip.is_link_local:
                return "a link-local address"
            if ip.is_unspecified:
                return "the unspecified address"
            return "a reserved address"
        for net, why in _ALWAYS_REFUSED_V6:
            if ip in net:
                return why
        return None
    for net, why in _ALWAYS_REFUSED_V4:
        if ip in net:
            return why
    for net, why in _PRIVATE_V4:
        if ip in net:
            return None if allow_private_networks else why
    return None


# --- URLs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookURL:
    """A parsed webhook URL: where to connect and what to ask for."""

    scheme: str
    host: str  # lower-case ASCII name without trailing dot, or an IP address without brackets
    port: int
    target: str  # path and query, as sent in the request line
    literal: IPAddress | None  # the host, when it is an IP address

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if isinstance(self.literal, ipaddress.IPv6Address) else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_DOTTED_QUAD = re.compile(r"^(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}$")
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def parse_webhook_url(url: str) -> WebhookURL:
    """Parse and check the form of a webhook URL (not yet where its name resolves to)."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise RefusedAddress("a URL must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RefusedAddress("not a valid http(s) URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise RefusedAddress("only http and https URLs can be webhooks")
    if "@" in parts.netloc:
        raise RefusedAddress("user information (user:password@) is not allowed in a webhook URL")
    raw_host = parts.hostname
    if not raw_host:
        raise RefusedAddress("the URL names no host")
    literal: IPAddress | None
    if parts.netloc.startswith("["):
        try:
            literal = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise RefusedAddress("not a valid IPv6 address in brackets") from None
        host = str(literal)
    else:
        host = raw_host.rstrip(".")
        labels = host.split(".")
        if _NUMERIC_LABEL.match(labels[-1]):
            if not _DOTTED_QUAD.match(host):
                raise RefusedAddress("an IPv4 address must be written as four decimal numbers "
                                     "(a.b.c.d, without leading zeros)")
            literal = ipaddress.IPv4Address(host)
        else:
            literal = None
            try:
                host = host.encode("idna").decode("ascii").lower()
            except UnicodeError:
                raise RefusedAddress("the host is not a valid domain name") from None
            if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
                raise RefusedAddress("the host is not a valid domain name")
            if host == "localhost" or host.endswith(".localhost"):
                raise RefusedAddress("the host names this server (localhost)")
    if port == 0:
        raise RefusedAddress("port 0 cannot be connected to")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return WebhookURL(scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80),
                      target=target, literal=literal)


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (raises ``OSError`` when it does not resolve)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in out:
            out.append(ip)
    return out


def _check_all(addresses: list[IPAddress], allow_private_networks: bool) -> None:
    for ip in addresses:
        why = refusal_reason(ip, allow_private_networks)
        if why is not None:
            raise RefusedAddress(f"the host is or resolves to {why}; webhooks may only go to "
                                 "public internet addresses")


def check_webhook_url(url: str, allow_private_networks: bool = False) -> str:
    """The URL, if it may be saved as a webhook contact; :class:`RefusedAddress` otherwise.

    A name that does not resolve now is accepted (DNS may be unreachable from here, or the
    receiver set up later); delivery checks it again."""
    parsed = parse_webhook_url(url)
    if parsed.literal is not None:
        _check_all([parsed.literal], allow_private_networks)
        return url
    try:
        addresses = resolve_host(parsed.host, parsed.port)
    except (OSError, UnicodeError):
        return url
    _check_all(addresses, allow_private_networks)
    return url


def resolve_target(url: str, allow_private_networks: bool = False) -> tuple[WebhookURL, list[IPAddress]]:
    """For delivery: the parsed URL and the checked addresses to connect to, resolved once.

    Raises :class:`RefusedAddress` for a URL or address that is not allowed and ``OSError`` when
    the name does not resolve."""
    parsed = parse_webhook_url(url)
    if parsed.literal is not None:
        addresses = [parsed.literal]
    else:
        try:
            addresses = resolve_host(parsed.host, parsed.port)
        except UnicodeError as exc:
            raise OSError(str(exc)) from exc
        if not addresses:
            raise OSError(f"{parsed.host} resolves to no address")
    _check_all(addresses, allow_private_networks)
    return parsed, addresses


# --- email addresses ---------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")


def check_email_address(address: str) -> str:
    """``address`` if it is exactly one bare email address; :class:`RefusedAddress` otherwise."""
    if any(c in address for c in "\r\n"):
        raise RefusedAddress("an email address must not contain line breaks")
    if any(c.isspace() for c in address):
        raise RefusedAddress("an email address must not contain spaces")
    if any(c in address for c in ",;"):
        raise RefusedAddress("exactly one email address, not a list")
    if any(c in address for c in "<>\"()"):
        raise RefusedAddress("the bare address only (name@example.org), without a display name, "
                             "quotes or angle brackets")
    if address.count("@") != 1:
        raise RefusedAddress("an email address has exactly one @")
    local, _, domain = address.partition("@")
    if (len(address) > 254 or len(local) > 64 or not _ADDR_SPEC.fullmatch(address)
            or domain.rsplit(".", 1)[-1].isdigit()):
        raise RefusedAddress("not an email address (name@example.org)")
    return address
