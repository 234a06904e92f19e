"""Parsed Cedar entity sets, kept so a repeated request does not parse and validate its entities again.

Parsing the (small) entity list of a request against the schema is about half of a Cedar call. This cache
holds ``cedarpy.Entities`` handles keyed by the exact JSON text they were parsed from, so a hit is the very
same entity set and the decision cannot differ from parsing it afresh.

A request's two entities (its principal and its resource) not held together are built from the principal's
held handle when it has one (``for_pair``), so a caller asking about resource after resource pays for
parsing the resource only.

Only entity sets seen before are parsed into a handle (a doorkeeper remembers the hashes of recent texts):
a request seen once costs what it cost without the cache (its text goes to ``is_authorized``), so a stream
of distinct requests neither fills the cache nor pays for handles it never reuses. The cache is bounded by
handles and by the entities they hold (every handle also holds the schema's action entities, so a schema
with many actions makes handles large). Anything Cedar refuses to parse is never cached: the text goes to
``is_authorized``, which reports the error in its result as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import cedarpy

DEFAULT_CAPACITY = 2048  # handles
DEFAULT_MAX_ENTITIES = 100_000  # entities held by all handles together (a few hundred bytes each)
MAX_TEXT = 4096  # characters; larger entity sets are parsed per call (and never held)
SEEN = 8192  # hashes of entity texts seen once (the doorkeeper)


class EntityHandles:
    """A bounded LRU of parsed entity sets for one schema. Thread-safe; handles are immutable."""

    __slots__ = ("_actions", "_capacity", "_handles", "_lock", "_max_entities", "_schema", "_seen", "_weight")

    def __init__(self, schema: Any, capacity: int = DEFAULT_CAPACITY,
                 max_entities: int = DEFAULT_MAX_ENTITIES) -> None:
        self._schema = schema
        self._capacity = max(1, capacity)
        self._max_entities = max(1, max_entities)
        self._handles: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        # Every handle parsed with the schema also holds its action entities.
        self._actions = len(cedarpy.Entities.from_json_str("[]", schema=schema))

    def __len__(self) -> int:
        return len(self._handles)

    @property
    def entities_held(self) -> int:
        return self._weight

    def for_text(self, text: str, count: int) -> Any:
        """The same for an entity list already encoded as JSON ``text`` holding ``count`` entities."""
        if len(text) > MAX_TEXT or self._actions + count > self._max_entities // 8:
            return text  # too large to hold (one handle would crowd out the rest): parsed per call
        with self._lock:
            held = self._handles.get(text)
            if held is not None:
                self._handles.move_to_end(text)
                return held[0]
            if not self._seen_before(hash(text)):
                return text
        try:
            handle = cedarpy.Entities.from_json_str(text, schema=self._schema)
        except ValueError:
            return text  # not valid for the schema: Cedar's own result says why
        self._put(text, handle, len(handle))
        return handle

    def for_pair(self, text: str, first: str, second: str) -> Any:
        """The same for ``text``, the list of the two entities ``first`` and ``second`` (each an entity object's
        JSON). When ``text`` itself gets no handle and ``first`` has been seen before (one caller asking about
        many resources), ``first``'s held handle with ``second`` added: Cedar clones it and parses and validates
        only ``second`` (against the schema, with the whole set), instead of parsing both from text."""
        entities = self.for_text(text, 2)
        if not isinstance(entities, str) or len(text) > MAX_TEXT:
            return entities
        base = self.for_text(f"[{first}]", 1)
        if isinstance(base, str):
            return text
        try:
            return base.with_added_json_str(f"[{second}]", self._schema)
        except ValueError:
            return text  # not valid with the schema: Cedar's own result for the text says why

    def _seen_before(self, key: int) -> bool:
        """Called with the lock held. True the second time ``key`` comes within the doorkeeper's memory."""
        if key in self._seen:
            del self._seen[key]
            return True
        self._seen[key] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        return False

    def _put(self, text: str, handle: Any, weight: int) -> None:
        with self._lock:
            if text in self._handles:
                return  # another thread parsed it meanwhile
            self._handles[text] = (handle, weight)
            self._weight += weight
            while len(self._handles) > self._capacity or self._weight > self._max_entities:
                _text, (_handle, dropped) = self._handles.popitem(last=False)
                self._weight -= dropped
