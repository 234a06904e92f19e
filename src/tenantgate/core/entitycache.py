"""Parsed Cedar entity sets, kept so a repeated request does not parse and validate its entities again.

Parsing the (small) entity list of a request against the schema is about half of a Cedar call. A request's
entities are TenantGate's own principal entity (from verified claims, the same for every call with one
token) and resource entity (from the request), plus ancestors from tenant entity data. This cache holds
``cedarpy.Entities`` handles keyed by the exact JSON text they were parsed from, so a hit is the very same
entity set and the decision cannot differ from parsing it afresh. On a miss with the plain two-entity list,
the principal's handle (cached on its own) is extended with only the resource entity.

Anything Cedar refuses to parse (an attribute of the wrong type, duplicate entities) is not cached: the
caller passes the JSON text to ``is_authorized`` as before, which reports the error in its result.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import cedarpy

DEFAULT_CAPACITY = 2048  # handles; each holds a few entities (a few KiB)
MAX_TEXT = 4096  # characters; larger entity sets are parsed per call (and never held)


class EntityHandles:
    """A bounded LRU of parsed entity sets for one schema. Thread-safe; handles are immutable."""

    __slots__ = ("_capacity", "_handles", "_lock", "_schema")

    def __init__(self, schema: Any, capacity: int = DEFAULT_CAPACITY) -> None:
        self._schema = schema
        self._capacity = max(1, capacity)
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._handles)

    def entities_for(self, entities: list[dict[str, Any]]) -> Any:
        """What to pass to ``cedarpy.is_authorized`` for ``entities``: a parsed handle, or their JSON text."""
        text = json.dumps(entities)
        if len(text) > MAX_TEXT:
            return text
        handle = self._get(text)
        if handle is not None:
            return handle
        try:
            handle = self._parse(entities, text)
        except ValueError:
            return text  # not valid for the schema: Cedar's own result says why
        self._put(text, handle)
        return handle

    def _parse(self, entities: list[dict[str, Any]], text: str) -> Any:
        if len(entities) == 2 and entities[0]["uid"] != entities[1]["uid"]:
            principal_text = json.dumps(entities[:1])
            base = self._get(principal_text)
            if base is None:
                base = cedarpy.Entities.from_json_str(principal_text, schema=self._schema)
                self._put(principal_text, base)
            return base.with_added_json_str(json.dumps(entities[1:]), schema=self._schema)
        return cedarpy.Entities.from_json_str(text, schema=self._schema)

    def _get(self, key: str) -> Any:
        with self._lock:
            handle = self._handles.get(key)
            if handle is not None:
                self._handles.move_to_end(key)
            return handle

    def _put(self, key: str, handle: Any) -> None:
        with self._lock:
            self._handles[key] = handle
            self._handles.move_to_end(key)
            while len(self._handles) > self._capacity:
                self._handles.popitem(last=False)
