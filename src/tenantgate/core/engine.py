"""Evaluating one request with Cedar. With ``compiler.py`` and ``entitycache.py`` the only code that imports
cedarpy.

Each decision builds a two-entity request (principal, resource; with their ancestors from the resource
tenant's entity data when it has any, see ``core.entities``) and asks Cedar with the partition of the
resource's tenant: the global policies, the guardrail and that tenant's own policies. Partitions are built
on first use from pre-validated text (``PolicySet.with_added_str`` clones the pre-parsed global set and
parses only the tenant's few policies) and kept in a bounded LRU cache.

Cedar's answer depends on nothing but its inputs (no clock, no randomness, no I/O), so an engine keeps the
outcome of recent requests keyed by exactly what it passes to Cedar: the tenant whose partition answers, the
request's uids, action and context text, and the entity list's JSON text. A repeated request is answered
from that memo without calling Cedar; a policy reload builds a new engine, and so a new memo.

Only a clean Allow from Cedar is an allow. Deny, NoDecision and any evaluation error are denials:
Cedar skips a policy whose condition errors, so an erroring ``forbid`` would otherwise let a ``permit`` win.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps quotes strings with
from time import thread_time
from typing import Any

import cedarpy

from tenantgate.core.compiler import (  # re-exported: the rest of the code imports these from engine
    GUARDRAIL_ID,
    GUARDRAIL_TEXT,
    CompiledPolicies,
    PolicyLocation,
    PolicySource,
    compile_policies,
)
from tenantgate.core.entitycache import MAX_TEXT, EntityHandles
from tenantgate.core.model import Decision, Principal, Reason, Resource
from tenantgate.core.schema import principal_entity
from tenantgate.core.slowtenants import SlowTenants

__all__ = ["DEFAULT_DECISION_CACHE", "DEFAULT_PARTITION_CACHE", "GUARDRAIL_ID", "GUARDRAIL_TEXT", "CompiledPolicies",
           "Engine", "EngineOutcome", "PolicyLocation", "PolicySource", "compile_policies", "interpret"]

_EVAL_ERROR = re.compile(r"error while evaluating policy `([^`]+)`")
_POSITIONAL = re.compile(r"policy(\d+)")
DEFAULT_PARTITION_CACHE = 1024
# cedarpy's native batch call (what its public is_authorized calls); None if a release moves it.
_NATIVE_BATCH = getattr(getattr(cedarpy, "_internal", None), "is_authorized_batch", None)
_NATIVE_CHECKED: bool | None = None  # whether _NATIVE_BATCH answers as the public API (native_agrees)
PRINCIPAL_TEXTS = 4096  # principals whose entity JSON is kept (one per distinct token, as a rule)
OUTCOMES = 1024  # (tenant, Cedar answer text) -> outcome kept per engine
MAX_OUTCOME_TEXT = 1024  # longer answers (long error messages) are interpreted each time, never kept
DEFAULT_DECISION_CACHE = 4096  # requests whose outcome is kept per engine (policies.decision_cache_size)


@dataclass(frozen=True, slots=True)
class EngineOutcome:
    decision: Decision
    reason: Reason
    policy_ids: tuple[str, ...]
    message: str
    errors: tuple[str, ...] = ()


# A tenant whose own files could not be loaded: the global set alone would miss its forbids (fail closed).
QUARANTINED = EngineOutcome(Decision.DENY, Reason.TENANT_POLICIES_UNAVAILABLE, (),
                            "the resource's tenant has invalid policy files and no valid ones to fall back on: "
                            "every decision about its resources is denied until they are fixed")
# A tenant whose own policies took Cedar too long, repeatedly (``core.slowtenants``).
TOO_SLOW = EngineOutcome(Decision.DENY, Reason.TENANT_POLICIES_UNAVAILABLE, (),
                         "the resource's tenant's own policies took longer than policies.tenant_evaluation_budget_ms "
                         "to evaluate, repeatedly: every decision about its resources is denied until they change")


class Engine:
    """Evaluates requests against one compiled policy set. Never raises for bad input: it returns a denial.

    Thread-safe: the partition cache is guarded by a lock; Cedar handles are immutable; the other caches (the
    decision memo among them) are used by single dict operations, which the GIL makes atomic.
    """

    __slots__ = ("_cache", "_capacity", "_closed", "_decisions", "_entities", "_lock", "_memo_size", "_outcomes",
                 "_principal_texts", "_slow", "compiled")

    def __init__(self, compiled: CompiledPolicies, partition_cache_size: int = DEFAULT_PARTITION_CACHE,
                 decision_cache_size: int = DEFAULT_DECISION_CACHE, slow: SlowTenants | None = None) -> None:
        self.compiled = compiled
        self._slow = slow if slow is not None else SlowTenants(0.0)
        slow_ones = self._slow.quarantined({t: p.text for t, p in compiled.tenants.items()}) if slow else set()
        # Tenants every decision about whose resources is denied before anything else, with the outcome.
        self._closed: dict[str, EngineOutcome] = {**dict.fromkeys(slow_ones, TOO_SLOW),
                                                  **dict.fromkeys(compiled.quarantined, QUARANTINED)}
        self._capacity = max(1, partition_cache_size)
        # Cedar's inputs -> its outcome (0 = off). Kept only for ASCII keys of up to MAX_TEXT characters in all
        # and answers short enough to share (MAX_OUTCOME_TEXT): about 5.5 KiB an entry at most, so about 22 MiB
        # at the default size (review finding: counting the entity text alone let one entry hold ~30 KB of
        # astral characters and a quoted entity list in its error message, 123 MiB in all).
        self._memo_size = max(0, decision_cache_size)
        self._decisions: OrderedDict[tuple[str, ...], EngineOutcome] = OrderedDict()
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._entities = EntityHandles(compiled.schema)
        # Principal -> its entity's JSON text. A Principal is an immutable value built from verified claims only,
        # so equal principals have the same entity; kept so repeated callers are not serialised again.
        self._principal_texts: dict[Principal, str] = {}
        self._outcomes: dict[tuple[str, str], EngineOutcome] = {}

    @property
    def version(self) -> str:
        return self.compiled.version

    @property
    def closed_tenants(self) -> frozenset[str]:
        """Tenants quarantined in this engine: for invalid files (``compiled.quarantined``) or slow policies."""
        return frozenset(self._closed)

    def policy_set_for(self, tenant: str) -> Any:
        """The pre-parsed set evaluated for ``tenant``'s resources (the global set if it has no policies)."""
        partition = self.compiled.tenants.get(tenant)
        if partition is None or not partition.ids:
            return self.compiled.policy_set
        with self._lock:
            cached = self._cache.get(tenant)
            if cached is not None:
                self._cache.move_to_end(tenant)
                return cached
        built = self.compiled.policy_set.with_added_str(partition.text)
        with self._lock:
            self._cache[tenant] = built
            self._cache.move_to_end(tenant)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return built

    def cached_partitions(self) -> int:
        return len(self._cache)

    def evaluate(self, principal: Principal, action: str, resource: Resource,
                 resource_attrs: dict[str, Any], context: dict[str, Any]) -> EngineOutcome:
        if self._closed and resource.tenant in self._closed:
            return self._closed[resource.tenant]
        context_text = json_object(context)
        # INVARIANT: only the resource tenant's entity data (plus global data) is ever in the slice, and it
        # only adds to TenantGate's own principal and resource entities (core.entities).
        view = self.compiled.entities.view(resource.tenant)
        pair: tuple[str, str] | None = None
        if view.empty:
            pair = (self._principal_text(principal), f'{{"uid": {{"type": {_quote(resource.type)}, "id": '
                    f'{_quote(resource.id)}}}, "attrs": {json_object(resource_attrs)}, "parents": []}}')
            text, count = f"[{pair[0]}, {pair[1]}]", 2
        else:
            resource_entity = {"uid": {"type": resource.type, "id": resource.id}, "attrs": resource_attrs,
                               "parents": []}
            entities = view.request_slice(principal_entity(principal), resource_entity,
                                          enrich_principal=principal.tenant == resource.tenant)
            text, count = json.dumps(entities), len(entities)
        # Everything Cedar is given but the policy set, which the tenant names within this engine (its
        # partition); the uids again although the entity text holds them, so no key depends on how it is built.
        memo = (resource.tenant, principal.entity_type, principal.entity_id, action, resource.type, resource.id,
                context_text, text)
        known = self._decisions.get(memo)
        if known is not None:
            return known
        entities = self._entities.for_text(text, count) if pair is None else self._entities.for_pair(text, *pair)
        outcome, shared = self._ask_cedar(principal, action, resource, context_text, entities)
        if self._memo_size and shared and _small_ascii(memo):
            # The oldest entry goes first (review finding: emptying a full memo at once held one request for
            # about 4 ms while 4,096 entries were freed).
            while len(self._decisions) >= self._memo_size:
                try:
                    self._decisions.popitem(last=False)
                except KeyError:  # another thread took the last one meanwhile
                    break
            self._decisions[memo] = outcome
        return outcome

    def _ask_cedar(self, principal: Principal, action: str, resource: Resource, context_text: str,
                   entities: Any) -> tuple[EngineOutcome, bool]:
        """Cedar's outcome, and whether its answer was short enough to be shared (kept in ``_outcomes``)."""
        request = {
            "principal": {"type": principal.entity_type, "id": principal.entity_id},
            "action": {"type": "Action", "id": action},
            "resource": {"type": resource.type, "id": resource.id},
            "context": context_text,
        }
        policy_set = self.policy_set_for(resource.tenant)
        budget = self._slow.budget
        started = thread_time() if budget else 0.0
        text = answer_text(request, policy_set, entities, self.compiled.schema)
        if budget and (seconds := thread_time() - started) > budget:
            self._too_slow(resource.tenant, seconds, request, entities, policy_set)
        # Cedar's answer (as text, without its timing metrics) with the tenant (whose partition numbers its
        # policies) decides the outcome, so equal answers share one immutable outcome.
        key = (resource.tenant, answer_key(text))
        shared = len(key[1]) <= MAX_OUTCOME_TEXT
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = self._outcome(resource.tenant, json.loads(text))
            if shared:
                if len(self._outcomes) >= OUTCOMES:
                    self._outcomes.clear()  # bounded; refilled by the answers that come again
                self._outcomes[key] = outcome
        return outcome, shared

    def _too_slow(self, tenant: str, seconds: float, request: dict[str, Any], entities: Any, policy_set: Any) -> None:
        """A decision about ``tenant`` took ``seconds`` of this thread's CPU time, over the budget: when
        ``SlowTenants.look`` says so, run it again, the global set alone and an empty set, to tell whose policies
        (or the request itself) are slow; the tenant is quarantined at its last strike (``core.slowtenants``)."""
        partition = self.compiled.tenants.get(tenant)
        own = policy_set is not self.compiled.policy_set and partition is not None
        text = partition.text if own and partition is not None else ""
        if own and self._slow.closed(tenant, text):
            self._closed[tenant] = TOO_SLOW  # quarantined on an engine built after this one was
            return
        if not self._slow.look(tenant):
            return
        schema = self.compiled.schema
        again = _cpu_seconds(request, policy_set, entities, schema) if own else seconds
        global_seconds = _cpu_seconds(request, self.compiled.policy_set, entities, schema) if own else seconds
        reading = _cpu_seconds(request, _empty_policy_set(), entities, schema)
        if self._slow.slow(tenant, min(seconds, again) - global_seconds if own else 0.0,
                           global_seconds - reading, reading, text):
            self._closed[tenant] = TOO_SLOW

    def _outcome(self, tenant: str, answer: dict[str, Any]) -> EngineOutcome:
        diagnostics = answer.get("diagnostics") or {}
        names = self._names(tenant)
        # Cedar lists reasons and errors in no fixed order (a set): sorted, equal decisions read alike in answers
        # and audit records (review finding: the same request gave two orders of policy ids, 109 to 91).
        return interpret(str(answer.get("decision")), tuple(sorted(names(r) for r in diagnostics.get("reason") or ())),
                         tuple(sorted(_EVAL_ERROR.sub(lambda m: f"error while evaluating policy `{names(m.group(1))}`",
                                                      e) for e in diagnostics.get("errors") or ())))

    def _principal_text(self, principal: Principal) -> str:
        text = self._principal_texts.get(principal)
        if text is None:
            text = json.dumps(principal_entity(principal))
            if len(text) > MAX_TEXT:
                return text  # a principal with very many roles or intents: not worth holding
            if len(self._principal_texts) >= PRINCIPAL_TEXTS:
                self._principal_texts.clear()  # bounded; rebuilt from the callers that come again
            self._principal_texts[principal] = text
        return text

    def _names(self, tenant: str) -> Any:
        """Maps Cedar's ids to ours: tenant policies added with ``with_added_str`` are numbered policyN in
        the order of the partition text; global policies already carry our ids."""
        partition = self.compiled.tenants.get(tenant)
        ids = partition.ids if partition is not None else ()

        def name(cedar_id: str) -> str:
            match = _POSITIONAL.fullmatch(cedar_id)
            if match and int(match.group(1)) < len(ids):
                return ids[int(match.group(1))]
            return cedar_id

        return name


# Cedar's answer ends in timing metrics that differ on every call, in a different key order each time:
# ``,"metrics":{"authz_duration_micros":12,...}}``. They say nothing about the decision.
_METRICS = re.compile(r',"metrics":\{(?:"[a-z_]+":\d+(?:,"[a-z_]+":\d+)*)?\}\}\Z')


def _small_ascii(memo: tuple[str, ...]) -> bool:
    """True when the memo key's strings are ASCII (one byte a character) and MAX_TEXT characters together. The
    texts are JSON with every non-ASCII character escaped; types and tenants are ASCII names by the request's
    shape checks; ids and the action are whatever the request said."""
    return sum(map(len, memo)) <= MAX_TEXT and all(part.isascii() for part in memo)


def answer_key(text: str) -> str:
    """Cedar's answer text without its trailing timing metrics: equal keys, equal answers.

    Cut only when what follows ``,"metrics":{`` is exactly a flat object of integers closing the answer (a
    ``,"`` outside a JSON string is structure: inside one the quote is escaped). Anything else keeps the whole
    text, so a key never leaves out part of the decision, diagnostics or errors.
    """
    cut = text.rfind(',"metrics":{')
    if cut > 0 and _METRICS.match(text, cut):
        return text[:cut]
    return text


def json_object(record: dict[str, Any]) -> str:
    """``json.dumps(record)``, written directly when every value is a string (the common context and
    resource attributes: ``{"intent": ...}``, ``{"tenant": ...}``). Same JSON value either way."""
    parts = []
    for key, value in record.items():
        if type(value) is not str or type(key) is not str:
            return json.dumps(record)
        parts.append(f"{_quote(key)}: {_quote(value)}")
    return "{" + ", ".join(parts) + "}"


def answer_text(request: dict[str, Any], policy_set: Any, entities: Any, schema: Any) -> str:
    """One Cedar decision as the JSON text of Cedar's own answer:
    ``{"decision": ..., "diagnostics": {"reason", "errors"}, ...}``.

    ``request["context"]`` is JSON text; ``entities`` a parsed ``cedarpy.Entities`` handle or JSON text.
    Calls cedarpy's native function directly: the public ``is_authorized`` wraps the same call in a request
    copy, a context re-encoding and result objects this path does not need (about 15 µs per decision here).
    That function is not public API, so it is used only after it answered a probe exactly as the public API
    does (``native_agrees``), the probe's answer carrying an evaluation error: a release that renamed the
    ``errors`` key would otherwise turn an Allow with an erroring forbid into a clean Allow.
    """
    native = _NATIVE_BATCH if native_agrees() else None
    if native is None:
        result = cedarpy.is_authorized(dict(request, context=json.loads(request["context"])), policy_set,
                                       entities, schema=schema)
        return json.dumps({"decision": result.decision.value, "diagnostics": {
            "reason": result.diagnostics.reasons, "errors": result.diagnostics.errors}})
    handle = entities._inner if isinstance(entities, cedarpy.Entities) else entities
    text: str = native([request], policy_set, handle, schema, False)[0]
    return text


@functools.cache
def _empty_policy_set() -> Any:
    """A policy set without policies (parsed once): asking it costs what reading the request costs."""
    return cedarpy.PolicySet.from_str("")


def _cpu_seconds(request: dict[str, Any], policy_set: Any, entities: Any, schema: Any) -> float:
    """This thread's CPU time for one Cedar decision (``answer_text``), whatever it answers."""
    started = thread_time()
    try:
        answer_text(request, policy_set, entities, schema)
    except Exception:  # noqa: BLE001 - only the time matters; the decision itself was made already
        pass
    return thread_time() - started


def native_agrees() -> bool:
    """True when cedarpy's native batch call exists and answers the probe as ``cedarpy.is_authorized`` does.

    Checked once per process (a few hundred microseconds); False falls back to the public API for good.
    """
    global _NATIVE_CHECKED
    if _NATIVE_CHECKED is None:
        _NATIVE_CHECKED = _NATIVE_BATCH is not None and _probe_native(_NATIVE_BATCH)
    return _NATIVE_CHECKED


def _probe_native(native: Any) -> bool:
    policies = cedarpy.PolicySet.from_str(
        'permit (principal, action, resource);\n'
        'forbid (principal, action, resource) when { resource.missing == 1 };')  # errors: no such attribute
    request = {"principal": {"type": "P", "id": "p"}, "action": {"type": "Action", "id": "a"},
               "resource": {"type": "R", "id": "r"}, "context": {}}
    entities = '[{"uid": {"type": "R", "id": "r"}, "attrs": {}, "parents": []}]'
    try:
        public = cedarpy.is_authorized(request, policies, entities)
        answer = json.loads(native([dict(request, context="{}")], policies, entities, None, False)[0])
        diagnostics = answer["diagnostics"]
        return bool(public.diagnostics.errors) and (
            answer["decision"], diagnostics["reason"], diagnostics["errors"]) == (
            public.decision.value, public.diagnostics.reasons, public.diagnostics.errors)
    except Exception:  # noqa: BLE001 - anything unexpected: use the public API
        return False


def interpret(decision: str, reasons: tuple[str, ...], errors: tuple[str, ...]) -> EngineOutcome:
    """Cedar's answer -> ours. The closed rule: only an error-free Allow allows."""
    errored = tuple(dict.fromkeys(m.group(1) for e in errors if (m := _EVAL_ERROR.search(e))))
    match decision, bool(errors):
        case "Allow", False:
            return EngineOutcome(Decision.ALLOW, Reason.ALLOW, reasons, "permitted by policy")
        case "Deny", _ if reasons:
            return EngineOutcome(Decision.DENY, Reason.POLICY_FORBID, reasons, "forbidden by policy", errors)
        case "Deny", False:
            return EngineOutcome(Decision.DENY, Reason.NO_PERMIT, (), "no policy permits this request")
        case "NoDecision", _ if any(e.startswith(("failed to build request", "failed to parse entities"))
                                    for e in errors):
            return EngineOutcome(Decision.DENY, Reason.INVALID_REQUEST, (),
                                 "request does not match the schema: " + _short(errors[0]), errors)
        case _:
            # Allow with errors, Deny without a forbid but with errors, NoDecision: an erroring policy
            # might have forbidden this request, so it is denied (fail closed).
            detail = _short(errors[0]) if errors else f"engine returned {decision}"
            return EngineOutcome(Decision.DENY, Reason.INTERNAL_ERROR, errored,
                                 "policy evaluation error: " + detail, errors)


def _short(message: str, limit: int = 300) -> str:
    # Entity parse errors quote the whole entity JSON (the caller's roles, intents, attribute values) before
    # saying what went wrong: keep only what went wrong.
    if message.startswith("failed to parse entities"):
        _, marker, tail = message.rpartition("]: ")
        message = "entity data: " + (tail if marker else "does not match the schema")
    message = message.replace("\n", " ")
    return message if len(message) <= limit else message[:limit] + "..."
