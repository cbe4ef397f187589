"""The httpx2 twin of the transports (public face: `httpx_breaker.httpx2`).

`_transport.py` and `_classify.py` here are generated from the modules of the same name
in `httpx_breaker` by ``python scripts/gen_httpx2.py``: never edit them by hand. Change
the source module (or a rule in the script) and run the script again;
``tests/test_httpx2_generated.py`` fails while a generated file is stale. `_errors.py`
and `_keys.py` are written by hand: what differs between the libraries beyond a name.
"""
