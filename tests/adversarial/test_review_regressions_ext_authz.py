"""Regression tests from the second hostile review, ext_authz request translation: underscore-spelled reserved
headers, method- and path-override headers and query parameters, and traversal after a second decode or NFKC.
Each asserts the secure behaviour and failed before its fix. The review's other findings are in
test_review_regressions.py.
"""

import pytest

from support.envoy import envoy_request
from tenantgate.rpc.envoy_convert import ExtAuthzOptions, check_input
from tenantgate.rpc.routes import Route, RouteTable

# ------------------------------------------------------------------------------------------------------------
# F6  Forged-header stripping only knows the dash spelling. `x_tenantgate_tenant` is forwarded untouched; many
#     upstream stacks (CGI/WSGI/PHP, nginx with underscores_in_headers) fold it onto X-TenantGate-Tenant.
#     Istio's default and the README do not reject underscores (rpc/envoy_convert.py:98-99).


def _options(**kw):
    route = Route.build(["GET"], "/tenants/{tenant}/invoices/{id}", "read", "Invoice")
    return ExtAuthzOptions(routes=RouteTable([route]), **kw)


def test_f6_underscore_spelling_of_reserved_headers_is_removed_too():
    request = envoy_request(headers={"x_tenantgate_tenant": "globex", "X_TenantGate_Decision_Id": "forged"},
                            token="t")
    translated = check_input(request, _options())
    assert {"x_tenantgate_tenant", "x_tenantgate_decision_id"} <= set(translated.reserved_headers), \
        translated.reserved_headers


# ------------------------------------------------------------------------------------------------------------
# F7  Method-override headers are ignored: GET + X-HTTP-Method-Override: DELETE is decided as `read` (allowed
#     to a viewer) while override-aware backends (Express method-override, Laravel, Symfony, Rails) delete.


@pytest.mark.parametrize("header", ["x-http-method-override", "x-http-method", "x-method-override",
                                    # review finding: CGI-style backends fold `_` into `-` (HTTP_X_HTTP_METHOD_...)
                                    "x_http_method_override", "x_http_method", "x_method_override"])
def test_f7_method_override_headers_are_refused_in_every_spelling(header):
    request = envoy_request("GET", headers={header: "DELETE"}, token="t")
    assert check_input(request, _options()).check.request_problem == f"method override header {header} is not allowed"


@pytest.mark.parametrize("query", ["_method=DELETE", "a=1&_METHOD=delete", "%5Fmethod=DELETE", ".method=DELETE",
                                   "_method[]=DELETE", "a=1;_method=PUT", "_method",
                                   # review finding: PHP drops leading spaces and cuts names at a NUL
                                   "+_method=DELETE", "%20%20_method=DELETE", "_method%00x=DELETE"])
def test_a_method_override_query_parameter_is_refused(query):
    # Review finding: POST /tenants/acme/invoices/inv-1?_method=DELETE was decided as the POST route's action;
    # Laravel, Symfony (httpMethodParameterOverride) and Rails run a DELETE.
    request = envoy_request("GET", f"/tenants/acme/invoices/inv-1?{query}", token="t")
    assert check_input(request, _options()).check.request_problem == \
        "method override query parameter _method is not allowed"


@pytest.mark.parametrize("query", ["method=DELETE", "x_method=1", "_methods=1", "q=_method", "_method_=1",
                                   "+method=DELETE"])  # PHP drops the leading space: `method`
def test_other_query_parameters_are_not_taken_for_an_override(query):
    request = envoy_request("GET", f"/tenants/acme/invoices/inv-1?{query}", token="t")
    assert check_input(request, _options()).check.request_problem == ""


@pytest.mark.parametrize("query", ["access_token=other", "a=1&ACCESS_TOKEN=other", "access%5Ftoken=other",
                                   "access.token=other", "access_token[]=other", "+access_token=x"])
def test_a_token_in_the_query_beside_the_header_is_refused(query):
    # Review finding: ?access_token=<another token> was ignored beside the Authorization header's; a backend that
    # prefers the query's token (RFC 6750 section 2.3) would act for a caller other than the one decided.
    request = envoy_request("GET", f"/tenants/acme/invoices/inv-1?{query}", token="t")
    assert check_input(request, _options()).check.request_problem.startswith("a token in the query (access_token)")


@pytest.mark.parametrize("query", ["access_tokens=1", "token=1", "q=access_token", "id_token=x"])
def test_other_query_parameters_are_not_taken_for_a_token(query):
    request = envoy_request("GET", f"/tenants/acme/invoices/inv-1?{query}", token="t")
    assert check_input(request, _options()).check.request_problem == ""


@pytest.mark.parametrize("header", ["x-original-url", "x-rewrite-url", "x_original_url", "x_rewrite_url"])
def test_path_override_headers_are_refused(header):
    # Review finding: GET /tenants/acme/... with X-Original-URL: /tenants/globex/... was allowed and reached
    # backends that serve that header's path instead (legacy Symfony and Zend, IIS URL Rewrite).
    request = envoy_request("GET", headers={header: "/tenants/globex/invoices/inv-9"}, token="t")
    assert check_input(request, _options()).check.request_problem == f"path override header {header} is not allowed"


# ------------------------------------------------------------------------------------------------------------
# F10 A path segment is decoded once and then accepted even when a second decode or Unicode compatibility
#     normalisation (NFKC, done by some upstream stacks) turns it into a traversal: `%252F..%252F` and
#     FULLWIDTH SOLIDUS `%EF%BC%8F` pass as the id of an acme route (rpc/routes.py:383-389).


@pytest.mark.parametrize("segment", [
    "x%252F..%252F..%252Fglobex%252Finvoices%252Finv-9",       # double-encoded slashes
    "x%EF%BC%8F..%EF%BC%8F..%EF%BC%8Fglobex%EF%BC%8Finvoices%EF%BC%8Finv-9",  # U+FF0F -> "/" under NFKC
    "%E2%80%A5",                                                # U+2025 TWO DOT LEADER -> ".." under NFKC
])
def test_f10_segments_that_become_traversal_after_a_second_decode_or_nfkc_are_refused(segment):
    from tenantgate.rpc.routes import PathRefused, decode_path

    assert isinstance(decode_path(f"/tenants/acme/invoices/{segment}"), PathRefused), decode_path(
        f"/tenants/acme/invoices/{segment}")
