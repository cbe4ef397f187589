"""Breaker keys: one spelling per host, for the keys of requests and for policy patterns.

A key is the URL's host, plus ``:port`` when the port is not the scheme's default; never
userinfo, path, query or fragment. Both halves of the library spell a host through
`canonical_host`: the key of a request (`url_key`) and the pattern of a policy
(`normalize_pattern`). Two spellings of one host are what let a policy miss its host,
so there is only one place that decides:

- lower case, internationalised names in their ASCII (punycode) form, as httpx's
  ``URL.raw_host`` gives them (``xn--bcher-kva.example``);
- no trailing (root) dot: ``payments.internal.`` is ``payments.internal``;
- an IPv6 address bracketed and compressed (``[2001:db8::1]``), an IPv4-mapped one
  with its IPv4 part dotted (``[::ffff:127.0.0.1]``, as RFC 5952 recommends and as
  Python 3.13's `ipaddress` prints it; 3.10 to 3.12 print ``::ffff:7f00:1``).

Keys are read from duck-typed URL objects (``url.scheme``, ``url.raw_host``,
``url.port``), so the same code serves any URL type with httpx's attributes.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

import httpx

from ._config import ConfigTypeError

__all__ = [
    "DEFAULT_PORTS",
    "HTTPX_URL",
    "URLLike",
    "bare_host",
    "canonical_host",
    "default_key",
    "key_for_url",
    "normalize_pattern",
    "url_key",
]

DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
"""Ports a key leaves out, by scheme: the ones httpx's URL (after WHATWG) treats as
default. httpx's `URL.port` is already None for these; the table is for URL types
that report the port as written."""


def _httpx_url_parts_readable() -> bool:
    """Whether `httpx.URL` keeps its parsed parts where the fast paths here read them.

    httpx's `URL.raw_host` and `URL.port` are properties over a private named tuple
    (`_uri_reference`), and `raw_host` encodes the host anew at every call: reading the
    tuple's fields costs a third as much (the registry's URL cache reads host and port by
    position, 2 and 3). If an httpx release moves them, the public properties are used
    instead (slower, never wrong).
    """
    try:
        ref = httpx.URL("http://Example.COM:8080/")._uri_reference
        other = httpx.URL("https://example.com:443/")._uri_reference
        return (ref.scheme, ref.host, ref.port, other.port, ref[2], ref[3], other[3]) == (
            "http",
            "example.com",
            8080,
            None,
            "example.com",
            8080,
            None,
        )
    except Exception:  # noqa: BLE001 (any failure means: use the public properties)
        return False


HTTPX_URL: type[httpx.URL] | None = httpx.URL if _httpx_url_parts_readable() else None
"""`httpx.URL`, or None when its parts cannot be read directly: ``type(url) is
HTTPX_URL`` selects the fast path."""


class URLLike(Protocol):
    """What a key is read from: httpx's `URL` (and any URL type with its attributes)."""

    @property
    def scheme(self) -> str: ...

    @property
    def raw_host(self) -> bytes: ...

    @property
    def port(self) -> int | None: ...


def canonical_host(host: str) -> str:
    """The one spelling of `host` (ASCII, as in a URL): see the module docstring.

    An IPv6 address comes back bracketed; `host` may be given with or without brackets.
    """
    if ":" in host:
        return f"[{_canonical_ipv6(host.strip('[]'))}]"
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    return host.lower()


def _canonical_ipv6(address: str) -> str:
    """One spelling per IPv6 address (httpx keeps ``2001:DB8:0::1`` as written)."""
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address.lower()
    mapped = ip.ipv4_mapped
    if mapped is not None:
        # RFC 5952, section 5, on every Python: 3.13 changed `compressed` for these from
        # "::ffff:7f00:1" to "::ffff:127.0.0.1"; keys and patterns must not depend on it.
        scope = f"%{ip.scope_id}" if ip.scope_id else ""
        return f"::ffff:{mapped}{scope}"
    return ip.compressed


def url_key(url: URLLike) -> str:
    """The default key of a request to `url`: ``host`` or ``host:port``.

    `url` is an `httpx.URL` or any object with its `scheme`, `raw_host` (ASCII bytes,
    IDNA-encoded) and `port` (None for the scheme's default) attributes.
    """
    if type(url) is HTTPX_URL:
        ref = url._uri_reference
        host, port = ref.host, ref.port
    else:
        host, port = url.raw_host.decode("ascii"), url.port
        # httpx's URL leaves out the scheme's default port itself; another may not.
        if port is not None and DEFAULT_PORTS.get(url.scheme) == port:
            port = None
    # The host is lower case and IDNA-encoded already (httpx documents it for
    # `raw_host`), except that an IPv6 literal keeps the case it was written in: only
    # IPv6 and a trailing dot need more work.
    try:
        if ":" in host or host[-1] == ".":
            host = canonical_host(host)
    except IndexError:  # no host (a relative URL): the empty key
        pass
    return host if port is None else f"{host}:{port}"


def default_key(request: httpx.Request) -> str:
    """The breaker key of a request: its host, plus ``:port`` when it is not the default.

    The host is lower-case ASCII (an internationalised name in its punycode form,
    ``xn--bcher-kva.example``) without a trailing dot; an IPv6 address is bracketed and
    compressed (``[::1]:8080``, ``[::ffff:127.0.0.1]``). Userinfo, path, query and
    fragment are never part of the key.
    """
    return url_key(request.url)


def key_for_url(url: str | httpx.URL | httpx.Request | Any) -> str:
    """The key a request to `url` gets under the default key rules (see `default_key`).

    Args:
        url: a `str` (parsed with `httpx.URL`), an `httpx.URL`, an `httpx.Request`, or
            a URL or request of another type with the same attributes.

    Raises:
        TypeError: `url` is none of those.
        ValueError: `url` has no host (``"/path"``), or is not a valid URL.
    """
    if isinstance(url, str):
        try:
            url = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
    elif isinstance(url, httpx.Request):
        url = url.url
    elif not hasattr(url, "raw_host") and hasattr(url, "url"):
        url = url.url  # a request of another URL type
    if not (hasattr(url, "raw_host") and hasattr(url, "port") and hasattr(url, "scheme")):
        raise TypeError(
            f"url must be a str, an httpx.URL or an httpx.Request, got {type(url).__name__}"
        )
    if not url.raw_host:
        raise ValueError("the URL has no host, so no breaker key (give an absolute URL)")
    return url_key(url)


# -- patterns ----------------------------------------------------------------------

# Characters no pattern holds: whitespace, or userinfo given by mistake.
_NEVER_IN_PATTERN = frozenset(" \t\r\n@")
# Characters a host[:port] never holds; a pattern with one is an opaque custom key.
_NOT_IN_HOST = frozenset("/\\?#%")


def normalize_pattern(pattern: str) -> str:
    """The canonical form of a policy pattern, spelled as keys are; ValueError if invalid.

    A pattern is a host (``"api.example.com"``, ``"[::1]"``), a host with a port
    (``"api.example.com:8443"``) or a wildcard for subdomains (``"*.example.com"``).
    Hosts are spelled by `canonical_host`, as keys are: lower case, punycode, no
    trailing dot, IPv6 bracketed and compressed. Anything else that is not a host (a key
    of a custom `key` function such as ``"svc:payments"`` or ``"api.example.com/v2"``)
    is matched as an exact key, case-insensitively.
    """
    if not isinstance(pattern, str):
        raise ConfigTypeError(f"a policy pattern must be a str, got {pattern!r}")
    what = (
        f"policy pattern {pattern!r} is not valid: use a host such as 'api.example.com', "
        "a host and port such as 'api.example.com:8443', or a wildcard such as "
        "'*.example.com'"
    )
    wildcard = pattern.startswith("*.")
    rest = pattern[2:] if wildcard else pattern
    if not rest or "*" in rest or "://" in rest or not _NEVER_IN_PATTERN.isdisjoint(rest):
        raise ValueError(what)
    if not _NOT_IN_HOST.isdisjoint(rest):
        if wildcard:
            raise ValueError(what)
        return rest.lower()
    port = ""
    if rest.startswith("["):
        end = rest.find("]")
        if end == -1:
            raise ValueError(what)
        host, tail = rest[1:end], rest[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise ValueError(what)
            port = tail[1:]
        ipv6 = True
    elif rest.count(":") > 1:
        host, ipv6 = rest, True
    else:
        host, sep, port = rest.partition(":")
        ipv6 = False
        if sep and not (port.isascii() and port.isdigit()):
            if wildcard or not port:
                raise ValueError(what)
            return rest.lower()  # "svc:payments": a custom key, not host:port
    if port:
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{what} (bad port {port!r})")
        if wildcard:
            raise ValueError(f"{what} (a wildcard matches hosts on any port; drop the port)")
    if ipv6:
        if wildcard:
            raise ValueError(what)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{what} ({host!r} is not an IPv6 address)") from None
        host = canonical_host(host)
    else:
        host = host.removesuffix(".")  # the root dot: "payments.internal." is "payments.internal"
        if "" in host.split(".") or "[" in host or "]" in host:
            raise ValueError(what)
        try:
            raw = httpx.URL(f"http://{host}/").raw_host
        except (httpx.InvalidURL, ValueError) as exc:
            raise ValueError(f"{what} ({exc})") from None
        host = canonical_host(raw.decode("ascii"))
    normalized = f"{host}:{port}" if port else host
    return f"*.{normalized}" if wildcard else normalized


def bare_host(key: str) -> str:
    """`key` without its ``:port`` (the brackets of an IPv6 literal kept)."""
    if key.startswith("["):
        end = key.find("]")
        return key[: end + 1] if end != -1 else key
    head, sep, tail = key.rpartition(":")
    if sep and tail.isdigit():
        return head
    return key
