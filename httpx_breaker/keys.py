"""Breaker keys: which breaker a request goes to under the default key rules.

The key of a request is its URL's host, plus ``:port`` when the port is not the
scheme's default: ``api.example.com``, ``api.example.com:8443``, ``[::1]:8080``. The
host is spelled one way: lower case, an internationalised name in its punycode form
(``xn--bcher-kva.example``), no trailing dot, an IPv6 address bracketed and compressed
(an IPv4-mapped one as ``[::ffff:127.0.0.1]``). Userinfo, path, query and fragment are
never part of it. Policy patterns are spelled the same way, so a policy written for a
host matches every spelling of it.

- `default_key(request)`: the key function the transports use unless given ``key=``.
- `key_for_url(url)`: the key a request to `url` gets (`str`, `httpx.URL` or
  `httpx.Request`), for looking a breaker up before the first request:
  ``transport.registry.breaker_for(key_for_url("https://api.example.com/"))``.
"""

from ._keys import default_key, key_for_url

__all__ = ["default_key", "key_for_url"]
