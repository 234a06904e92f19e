"""Route templates for ext_authz: matching, strict path decoding and refused paths (pure functions)."""

import pytest

from tenantgate.rpc.routes import PathRefused, PathTemplate, Route, RouteMatch, RouteTable, TemplateError, decode_path

INVOICE = Route.build(["GET"], "/tenants/{tenant}/invoices/{id}", "read", "Invoice")
UPDATE = Route.build(["PUT", "PATCH"], "/tenants/{tenant}/invoices/{id}", "update", "Invoice")
DOC = Route.build(["GET"], "/docs/{doc}/of/{owner}", "read", "Document", tenant_from="owner", id_from="doc")
TABLE = RouteTable([INVOICE, UPDATE, DOC])


def _match(method, path):
    return TABLE.match(method, path)


def test_a_matching_route_names_action_resource_and_owning_tenant_from_path_variables():
    m = _match("GET", "/tenants/acme/invoices/inv-1")
    assert isinstance(m, RouteMatch)
    assert (m.action, m.resource_type, m.resource_tenant, m.resource_id) == ("read", "Invoice", "acme", "inv-1")


def test_tenant_from_and_id_from_choose_which_variables_are_used():
    m = _match("GET", "/docs/d-7/of/globex")
    assert (m.resource_tenant, m.resource_id, m.resource_type) == ("globex", "d-7", "Document")


def test_first_matching_route_wins_and_methods_select_the_route():
    first = RouteTable([Route.build(["GET"], "/a/{tenant}/{id}", "first", "Invoice"),
                        Route.build(["GET"], "/a/{tenant}/{id}", "second", "Invoice")])
    assert first.match("GET", "/a/t/1").action == "first"
    assert _match("PATCH", "/tenants/acme/invoices/1").action == "update"


def test_no_matching_route_is_none():
    assert _match("DELETE", "/tenants/acme/invoices/inv-1") is None
    assert _match("GET", "/tenants/acme/invoices") is None
    assert _match("GET", "/tenants/acme/invoices/inv-1/extra") is None
    assert _match("GET", "/") is None


def test_methods_are_case_sensitive():
    assert _match("get", "/tenants/acme/invoices/inv-1") is None


def test_the_query_string_is_ignored_for_matching():
    m = _match("GET", "/tenants/acme/invoices/inv-1?tenant=globex&id=x")
    assert (m.resource_tenant, m.resource_id) == ("acme", "inv-1")


def test_segments_are_percent_decoded_exactly_once():
    assert _match("GET", "/tenants/acme/invoices/inv%201").resource_id == "inv 1"
    # Decoded once it would still hold %XX: refused, since an upstream that decodes twice sees another path.
    assert isinstance(_match("GET", "/tenants/acme/invoices/%25%32%65"), PathRefused)
    assert _match("GET", "/tenants/acme/invoices/caf%C3%A9").resource_id == "café"
    assert _match("GET", "/%74enants/acme/invoices/1").resource_tenant == "acme"  # literals compare decoded


@pytest.mark.parametrize("path,why", [
    ("/tenants/acme/invoices/..", "'.'"),
    ("/tenants/acme/invoices/.", "'.'"),
    ("/tenants/acme/../globex/invoices/1", "'.'"),
    ("/tenants/acme/invoices/%2e%2E", "'.'"),
    ("/tenants/acme/invoices/..;", "';'"),  # servlet containers strip ;params and then climb
    ("/tenants/acme/invoices/.;x=1", "';'"),
    ("/tenants/acme/%2e%2e;/globex/invoices/1", "';'"),
    ("/tenants/acme/invoices/inv-1;x=1", "';'"),  # decided as `inv-1;x=1`, served as `inv-1` by a servlet
    ("/tenants/acme/invoices/inv-1%3Bjsessionid=1", "';'"),
    ("/tenants/acme%2Finvoices/invoices/1", "encoded slash"),
    ("/tenants/acme/invoices/a%2fb", "encoded slash"),
    ("/tenants/acme/invoices/a%5cb", "encoded slash"),
    ("/tenants/acme/invoices/a%00b", "control"),
    ("/tenants/acme/invoices/a%0Ab", "control"),
    ("/tenants/acme/invoices/a%7Fb", "control"),
    ("/tenants/acme/invoices/a%C2%85b", "control"),
    ("/tenants/acme/invoices/%ff", "UTF-8"),
    ("/tenants/acme/invoices/%C3", "UTF-8"),
    ("/tenants/acme/invoices/%zz", "two hex digits"),
    ("/tenants/acme/invoices/100%", "two hex digits"),
    ("/tenants/acme/invoices/a\x00b", "printable ASCII"),
    ("/tenants/acme/invoices/café", "printable ASCII"),
    ("/tenants/acme/invoices/a b", "printable ASCII"),
    ("/tenants//acme/invoices/1", "empty segment"),
    ("/tenants/acme/invoices/1/", "empty segment"),
    ("tenants/acme/invoices/1", "start with"),
    ("", "start with"),
    ("/tenants/acme/invoices/1#frag", "fragment"),
    ("/" + "a" * 9000, "longer"),
])
def test_ambiguous_or_hostile_paths_are_refused_before_matching(path, why):
    refused = _match("GET", path)
    assert isinstance(refused, PathRefused), path
    assert why in refused.message


def test_a_refused_path_is_refused_whatever_the_method():
    assert isinstance(_match("BREW", "/tenants/acme/invoices/.."), PathRefused)


def test_root_path_has_no_segments_and_matches_a_root_template():
    assert decode_path("/") == ()
    assert RouteTable([Route.build(["GET"], "/{tenant}/{id}", "read", "Invoice")]).match("GET", "/") is None


@pytest.mark.parametrize("kwargs,message", [
    ({"methods": []}, "at least one"),
    ({"methods": ["get"]}, "case-sensitive"),
    ({"methods": ["GET POST"]}, "not an HTTP method"),
    ({"path": "tenants/{tenant}/{id}"}, "start with '/'"),
    ({"path": "/t/{tenant}/{id}?x=1"}, "query"),
    ({"path": "/t/{tenant}/{tenant}"}, "twice"),
    ({"path": "/t//{tenant}/{id}"}, "empty segment"),
    ({"path": "/t/inv-{id}/{tenant}"}, "whole-segment variable"),
    ({"path": "/t/../{tenant}/{id}"}, "whole-segment variable"),
    ({"path": "/t/a%2Fb/{tenant}/{id}"}, "whole-segment variable"),
    ({"path": "/t/{tenant}"}, "id_from"),
    ({"tenant_from": "org"}, "tenant_from"),
    ({"tenant_from": "id"}, "different"),
    ({"action": ""}, "action"),
])
def test_bad_route_definitions_are_refused_with_the_problem(kwargs, message):
    spec = {"methods": ["GET"], "path": "/t/{tenant}/{id}", "action": "read", "resource_type": "Invoice", **kwargs}
    with pytest.raises(TemplateError, match=message):
        Route.build(**spec)


def test_template_records_its_variables_in_order():
    assert PathTemplate.parse("/a/{x}/b/{y}").variables == ("x", "y")
