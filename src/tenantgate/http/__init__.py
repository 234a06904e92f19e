"""The AuthZEN Authorization API 1.0 over HTTP: an adapter like ``rpc``, calling the same ``decide()``.

``convert`` (pure: AuthZEN JSON <-> model), ``routes`` (aiohttp handlers), ``server`` (start/stop, TLS, limits).
"""
