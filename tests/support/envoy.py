"""Building Envoy ext_authz CheckRequests the way Envoy sends them, and reading the answers.

    request = envoy_request("GET", "/tenants/acme/invoices/inv-1", headers={"authorization": f"Bearer {token}"})
    response = stub.Check(request)   # an envoy.service.auth.v3 AuthorizationStub
    assert http_status(response) == 200
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from envoy.service.auth.v3 import external_auth_pb2 as ext
from google.rpc import code_pb2

EXT_AUTHZ_ROUTES = """
[[ext_authz.routes]]
methods = ["GET"]
path = "/tenants/{tenant}/invoices/{id}"
action = "read"
resource_type = "Invoice"

[[ext_authz.routes]]
methods = ["PUT", "PATCH"]
path = "/tenants/{tenant}/invoices/{id}"
action = "update"
resource_type = "Invoice"

[[ext_authz.routes]]
methods = ["POST"]
path = "/tenants/{tenant}/invoices/{id}/reconcile"
action = "reconcile"
resource_type = "Invoice"
"""


def envoy_request(method: str = "GET", path: str = "/tenants/acme/invoices/inv-1", *,
                  headers: Mapping[str, str] | None = None,
                  header_map: Iterable[tuple[str, str | bytes]] | None = None,
                  certificate: str = "", token: str | None = None) -> ext.CheckRequest:
    """A CheckRequest: ``headers`` fills the classic map, ``header_map`` the newer repeated form (bytes values
    go to ``raw_value``); ``token`` adds ``authorization: Bearer <token>`` to ``headers``."""
    request = ext.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.path = path
    http.host = "app.example.com"
    http.scheme = "https"
    http.protocol = "HTTP/1.1"
    http.headers[":method"] = method
    http.headers[":path"] = path
    for key, value in (headers or {}).items():
        http.headers[key] = value
    if token is not None:
        http.headers["authorization"] = f"Bearer {token}"
    for key, value in header_map or ():
        if isinstance(value, bytes):
            http.header_map.headers.add(key=key, raw_value=value)
        else:
            http.header_map.headers.add(key=key, value=value)
    request.attributes.source.certificate = certificate
    return request


def http_status(response: ext.CheckResponse) -> int:
    """The HTTP status Envoy would answer with: 200 when it lets the request through."""
    assert response.HasField("status"), "every response must carry an explicit status"
    if response.status.code == code_pb2.OK:
        assert response.HasField("ok_response") and not response.HasField("denied_response")
        return 200
    assert response.HasField("denied_response")
    return int(response.denied_response.status.code)


def denied_body(response: ext.CheckResponse) -> dict:
    return json.loads(response.denied_response.body)


def set_headers(response: ext.CheckResponse) -> dict[str, str]:
    """Request headers the OK answer sets (all with OVERWRITE_IF_EXISTS_OR_ADD)."""
    from envoy.config.core.v3 import base_pb2

    options = response.ok_response.headers
    assert all(o.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD for o in options)
    return {o.header.key: o.header.value for o in options}
