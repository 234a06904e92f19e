"""Route templates for Envoy ext_authz: which action on which resource an HTTP method and path mean.

Pure functions and values, no I/O. ``RouteTable.match(method, path)`` returns a ``RouteMatch``, a
``PathRefused`` (the path is ambiguous or hostile: the request is denied ``invalid_request``) or None (no
route matches: default deny).

How a request path is read, the same way for every route:

- the query string (from the first ``?``) is ignored;
- the path must start with ``/``; the root ``/`` has no segments; any other empty segment (``//``, a
  trailing ``/``) is refused, since servers disagree about what it means;
- each segment is percent-decoded exactly once, strictly (``%`` must be followed by two hex digits) and
  must then be UTF-8; raw characters must be printable ASCII;
- refused after decoding: ``.`` and ``..`` segments, ``/`` or ``\\`` inside a segment (an encoded
  slash such as ``%2F`` would let one path name two resources), NUL and other control characters;
- methods are compared case-sensitively (HTTP methods are); the first route that matches wins.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
HTTP_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # an HTTP token (RFC 9110 §5.6.2): methods, header names
_METHOD = re.compile(HTTP_TOKEN)
_RAW_PATH_CHARS = re.compile(r"[!-~]*")  # printable ASCII without space
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
MAX_PATH = 8192


class TemplateError(ValueError):
    """A route template or route definition that cannot be used (reported as a configuration error)."""


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A parsed template such as ``/tenants/{tenant}/invoices/{id}``: literal segments and whole-segment
    variables. ``segments`` holds literals as they are and variables as ``{name}``."""

    text: str
    segments: tuple[str, ...]
    variables: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Parse a template; raise TemplateError when it is malformed."""
        if not text.startswith("/"):
            raise TemplateError(f"path template {text!r} must start with '/'")
        if "?" in text or "#" in text:
            raise TemplateError(f"path template {text!r} must not contain a query or fragment")
        segments = () if text == "/" else tuple(text[1:].split("/"))
        variables: list[str] = []
        for segment in segments:
            variable = _VARIABLE.fullmatch(segment)
            if variable is not None:
                if variable.group(1) in variables:
                    raise TemplateError(f"path template {text!r} uses {{{variable.group(1)}}} twice")
                variables.append(variable.group(1))
                continue
            if not segment:
                raise TemplateError(f"path template {text!r} has an empty segment")
            if any(ch in segment for ch in "{}%\\") or segment in (".", "..") or not _RAW_PATH_CHARS.fullmatch(segment):
                raise TemplateError(
                    f"path template {text!r}: segment {segment!r} must be a literal (printable ASCII without "
                    "'{', '}', '%' or '\\', not '.' or '..') or a whole-segment variable such as {id}")
        return cls(text, segments, tuple(variables))


@dataclass(frozen=True, slots=True)
class Route:
    """One ``[[ext_authz.routes]]`` entry: these methods on this path template mean ``action`` on a
    ``resource_type`` whose owning tenant and id are the path variables ``tenant_from`` and ``id_from``."""

    methods: tuple[str, ...]
    template: PathTemplate
    action: str
    resource_type: str
    tenant_from: str = "tenant"
    id_from: str = "id"

    @classmethod
    def build(cls, methods: Iterable[str], path: str, action: str, resource_type: str, tenant_from: str = "tenant",
              id_from: str = "id") -> Route:
        """Validate and build a route; raise TemplateError naming the problem."""
        methods = tuple(methods)
        if not methods:
            raise TemplateError("methods must list at least one HTTP method")
        for method in methods:
            if not _METHOD.fullmatch(method):
                raise TemplateError(f"method {method!r} is not an HTTP method token")
            if method != method.upper():
                raise TemplateError(f"method {method!r}: methods are case-sensitive; did you mean {method.upper()!r}?")
        template = PathTemplate.parse(path)
        if not action or not resource_type:
            raise TemplateError("action and resource_type must be set")
        for key, name in (("tenant_from", tenant_from), ("id_from", id_from)):
            if name not in template.variables:
                raise TemplateError(f"{key} = {name!r} is not a variable of path template {path!r}")
        if tenant_from == id_from:
            raise TemplateError("tenant_from and id_from must be different path variables")
        return cls(methods, template, action, resource_type, tenant_from, id_from)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A request that maps to a decision question: ``action`` on ``resource_type`` ``resource_id`` owned by
    ``resource_tenant`` (the tenant as the path states it, still to be compared with the token's)."""

    route: Route
    action: str
    resource_type: str
    resource_id: str
    resource_tenant: str
    variables: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PathRefused:
    """The path is ambiguous or hostile; the request is denied ``invalid_request`` with this message."""

    message: str


class RouteTable:
    """Routes in configuration order; the first match wins."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, method: str, path: str) -> RouteMatch | PathRefused | None:
        """Match a request. Path problems are refused before any route is tried."""
        segments = decode_path(path)
        if isinstance(segments, PathRefused):
            return segments
        for route in self.routes:
            if method not in route.methods:
                continue
            variables = _bind(route.template, segments)
            if variables is not None:
                return RouteMatch(route, route.action, route.resource_type, variables[route.id_from],
                                  variables[route.tenant_from], variables)
        return None


def decode_path(path: str) -> tuple[str, ...] | PathRefused:
    """The decoded segments of a request path (query ignored), or why the path is refused."""
    if len(path) > MAX_PATH:
        return PathRefused(f"path longer than {MAX_PATH} characters")
    raw = path.split("?", 1)[0]
    if not raw.startswith("/"):
        return PathRefused("path must start with '/'")
    if not _RAW_PATH_CHARS.fullmatch(raw):
        return PathRefused("path must be printable ASCII (percent-encode anything else)")
    if "#" in raw:
        return PathRefused("path must not contain a fragment")
    if raw == "/":
        return ()
    decoded: list[str] = []
    for segment in raw[1:].split("/"):
        if not segment:
            return PathRefused("path has an empty segment ('//' or a trailing '/')")
        value = _percent_decode(segment)
        if isinstance(value, PathRefused):
            return value
        if value in (".", ".."):
            return PathRefused("path has a '.' or '..' segment")
        if ";" in value:
            # Servlet containers (Tomcat, Spring) strip `;` path parameters: `inv-1;x=1` would be decided as
            # that id but served as `inv-1`, and `..;` climbs. Neither spelling is guessed at: refused.
            return PathRefused("path segment holds ';' (path parameters are not allowed)")
        if "/" in value or "\\" in value:
            return PathRefused("path segment holds an encoded slash or backslash")
        if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in value):
            return PathRefused("path holds a NUL or control character")
        if value != segment and _PERCENT.search(value):
            # Decoded once, it still holds %XX: an upstream that decodes twice would see another path.
            return PathRefused("path segment is percent-encoded twice")
        normal = unicodedata.normalize("NFKC", value)
        if normal != value and (normal in (".", "..") or any(c in normal for c in "/\\") or ".." in normal):
            # Fullwidth solidus, two-dot leader and friends become traversal under NFKC normalisation.
            return PathRefused("path segment turns into a separator or dot segment when normalised (NFKC)")
        decoded.append(value)
    return tuple(decoded)


def _percent_decode(segment: str) -> str | PathRefused:
    """Decode ``%XX`` escapes once; a stray ``%`` or bytes that are not UTF-8 are refused."""
    if "%" not in segment:
        return segment
    if segment.count("%") != len(_PERCENT.findall(segment)):
        return PathRefused("path has a '%' not followed by two hex digits")
    data = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), segment).encode("latin-1")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return PathRefused("path is not UTF-8 once percent-decoded")


def _bind(template: PathTemplate, segments: tuple[str, ...]) -> dict[str, str] | None:
    if len(template.segments) != len(segments):
        return None
    variables: dict[str, str] = {}
    for pattern, value in zip(template.segments, segments, strict=True):
        variable = _VARIABLE.fullmatch(pattern)
        if variable is not None:
            variables[variable.group(1)] = value
        elif pattern != value:
            return None
    return variables
