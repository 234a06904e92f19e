"""Scenario 2: the full in-process decision (``DecisionPoint.decide``) vs raw ``cedarpy.is_authorized``.

The app is built exactly as the server builds it (``tenantgate.app.build`` from a generated config: test
issuer, bundled policies, audit log and grant store in a temp dir). The raw call gets the same request and
the same two entities, built by the same functions ``decide`` uses, with the pre-parsed PolicySet (acme's
partition) and Schema of the loaded CompiledPolicies. The parts of ``decide`` are timed too, so the
table shows where its time goes. ``decide`` answers the repeated request from its decision memo; the same
call on an engine with the memo off (passed as ``pinned``, as BatchCheck passes its engine) asks Cedar each
time.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cedarpy

from tenantgate import app as application
from tenantgate import config
from tenantgate.core.compiler import GUARDRAIL_TEXT
from tenantgate.core.engine import Engine
from tenantgate.core.model import CheckInput, ClaimNames, Decision, DecisionResult, Principal, Resource
from tenantgate.core.request import request_context, resource_attributes
from tenantgate.core.schema import principal_entity
from tenantgate.core.tenancy import principal_from_claims
from tenantgate.rpc import convert
from tenantgate.v1 import authorizer_pb2 as pb

from .context import RunContext
from .fixture import BUNDLED_POLICIES, REPO, BenchIssuer, child_python, python_env, write_config
from .results import Chart, Goal, Section
from .stats import rate, ratio, summarize, times, us
from .timing import interleaved

GOALS = [("in-process decide() vs raw cedarpy (p50)", "≤ 1.3x"),
         ("the same, decision memo off (Cedar asked)", "≤ 1.3x")]
CORE_GOAL = 1.3
RAW = "raw cedarpy.is_authorized (pre-parsed PolicySet + Schema, entity list)"
DECIDE = "DecisionPoint.decide (full: cached token, tenancy, intent, Cedar's outcome from the memo, audit)"
DECIDE_NO_MEMO = "DecisionPoint.decide, decision memo off (Cedar on every call)"

TEXT = "raw cedarpy.is_authorized with the policy text parsed per call (no pre-parsed PolicySet)"
RAW_COLD = "raw cedarpy.is_authorized, CPU caches flushed before each call"
DECIDE_COLD = "DecisionPoint.decide, CPU caches flushed before each call"
INSTR_RAW = "raw cedarpy.is_authorized, instructions per call (callgrind)"
INSTR_NATIVE = ("the one Cedar call Engine.evaluate makes (pre-parsed PolicySet, Schema and Entities), instructions "
                "per call (callgrind)")
INSTR_DECIDE = "DecisionPoint.decide, instructions per call (callgrind)"
INSTR_DECIDE_NO_MEMO = "DecisionPoint.decide, decision memo off, instructions per call (callgrind)"
INSTRUCTION_CALLS = 2000
_COLLECTED = re.compile(r"Collected : (\d+)")
FLUSH_BYTES = 8 << 20  # twice the L2 of the 2-core machines we run on


class _CacheFlush:
    """Copies 8 MiB (untimed) so the next call starts with cold L1/L2 caches, as a call in a busy server does."""

    def __init__(self) -> None:
        self._src, self._dst = bytearray(FLUSH_BYTES), bytearray(FLUSH_BYTES)

    def __call__(self) -> None:
        self._dst[:] = self._src


def cedar_inputs(check: CheckInput, principal: Principal) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The request and the two entities ``Engine.evaluate`` builds for ``check`` (same functions)."""
    attrs = resource_attributes(check)
    context = request_context(check)
    res = check.resource
    request = {"principal": {"type": principal.entity_type, "id": principal.entity_id},
               "action": {"type": "Action", "id": check.action},
               "resource": {"type": res.type, "id": res.id}, "context": context}
    entities = [principal_entity(principal), {"uid": {"type": res.type, "id": res.id}, "attrs": attrs,
                                              "parents": []}]
    return request, entities


def realistic(directory: Path) -> tuple[application.App, str, CheckInput, DecisionResult, Principal]:
    """The app built as the server builds it (generated config in ``directory``) and the realistic request:
    (app, token, check, its first decision, the token's principal). Raises if the request is not allowed."""
    issuer = BenchIssuer(directory, "ES256")
    built = application.build(config.load(write_config(directory, issuer), env={}))
    token = issuer.mint("acme", "alice", ("viewer",))
    check = CheckInput(token=token, action="read", resource=Resource("Invoice", "inv-1", "acme"), api="check")
    first = built.pdp.decide(check)
    principal = principal_from_claims(built.verifier.verify(token), ClaimNames())
    if first.decision is not Decision.ALLOW or not isinstance(principal, Principal):
        application.close(built)
        raise RuntimeError(f"the realistic request was not allowed: {first.reason} {first.message}")
    return built, token, check, first, principal


def run(ctx: RunContext) -> Section:
    budget = ctx.budget
    section = Section("core", "2. Core: in-process decide() vs raw cedarpy",
                      ["what is timed", "p50", "p99", "per second (1/p50)", "vs raw cedarpy (p50)"])
    directory = ctx.tmp / "core"
    directory.mkdir()
    built, token, check, first, principal = realistic(directory)
    try:
        request, entities = cedar_inputs(check, principal)
        engine = built.policies.current()
        policy_set, schema = engine.policy_set_for("acme"), engine.compiled.schema
        handle = cedarpy.Entities.from_json_str(json.dumps(entities), schema=schema)
        raw = cedarpy.is_authorized(request, policy_set, entities, schema=schema)
        if raw.decision.value != "Allow":
            raise RuntimeError(f"raw cedarpy did not allow the realistic request: {raw.diagnostics.errors}")
        # The same policies as text, parsed by Cedar on every call: what pre-parsed handles save.
        policy_text = "\n".join([*(f.read_text() for f in sorted(BUNDLED_POLICIES.glob("*.cedar"))), GUARDRAIL_TEXT])
        if cedarpy.is_authorized(request, policy_text, entities, schema=schema).decision.value != "Allow":
            raise RuntimeError("raw cedarpy on the policy text did not allow the realistic request")
        attrs, context = entities[1]["attrs"], request["context"]
        wire = pb.CheckRequest(token=token, action="read", resource=pb.Resource(type="Invoice", id="inv-1",
                                                                                 tenant="acme")).SerializeToString()
        audit = built.audit
        event = first.audit

        def handler_body() -> bytes:
            parsed = pb.CheckRequest.FromString(wire)
            result = built.pdp.decide(convert.check_input(parsed, api="check"))
            return convert.check_response(result).SerializeToString()

        def series_raw() -> object:
            return cedarpy.is_authorized(request, policy_set, entities, schema=schema)

        def series_decide() -> object:
            return built.pdp.decide(check)

        no_memo = Engine(engine.compiled, decision_cache_size=0)

        series: dict[str, Callable[[], object]] = {
            RAW: series_raw,
            TEXT: lambda: cedarpy.is_authorized(request, policy_text, entities, schema=schema),
            "raw cedarpy.is_authorized with a pre-parsed Entities handle": (
                lambda: cedarpy.is_authorized(request, policy_set, handle, schema=schema)),
            "Engine.evaluate, memo off (request + entities, partition, Cedar, reasons)": (
                lambda: no_memo.evaluate(principal, "read", check.resource, dict(attrs), dict(context))),
            "Engine.evaluate, answered from the decision memo": (
                lambda: engine.evaluate(principal, "read", check.resource, dict(attrs), dict(context))),
            "JwtVerifier.verify (cache hit)": lambda: built.verifier.verify(token),
            "audit sink write (one record, flushed)": lambda: audit.write(event),
            DECIDE: series_decide,
            DECIDE_NO_MEMO: lambda: built.pdp.decide(check, no_memo),
            "Check handler body without gRPC (parse, convert, decide, convert, serialize)": handler_body,
            RAW_COLD: series_raw,
            DECIDE_COLD: series_decide,
        }
        flush = _CacheFlush()
        cold = {RAW_COLD: flush, DECIDE_COLD: flush}
        timings = interleaved(series, budget.core_samples, budget.core_rounds, before=cold,
                              samples_of=dict.fromkeys(cold, max(20, budget.core_samples // 5)))
    finally:
        application.close(built)
    summaries = {name: summarize(samples) for name, samples in timings.items()}
    base = summaries[RAW].p50
    for name, s in summaries.items():
        section.add(name, us(s.p50), us(s.p99), rate(1 / s.p50 if s.p50 > 0 else math.nan), times(ratio(s.p50, base)))
    section.data["summaries"] = {name: s.to_dict() for name, s in summaries.items()}
    _add_instructions(section, ctx)
    for (name, target), row in zip(GOALS, (DECIDE, DECIDE_NO_MEMO), strict=True):
        value = ratio(summaries[row].p50, base)
        section.data["goal_ratio" if row == DECIDE else "goal_ratio_no_memo"] = value
        section.goals.append(Goal(name, target, f"{times(value)} ({us(summaries[row].p50)} vs {us(base)})",
                                  None if not math.isfinite(value) else value <= CORE_GOAL, "core"))
    cold_ratio = ratio(summaries[DECIDE_COLD].p50, summaries[RAW_COLD].p50)
    section.data["cold_ratio"] = cold_ratio
    section.notes.append(f"{budget.core_samples:,} timed calls per row ({max(20, budget.core_samples // 5):,} for the "
                         f"cache-flushed rows) in {budget.core_rounds} interleaved rounds; the rows from "
                         "Engine.evaluate to the audit sink write are decide()'s parts; the policy-text row is "
                         "what the pre-parsed PolicySet saves.")
    section.notes.append("Tight loops run with hot CPU caches; inside a busy server every call starts cold. The "
                         "cache-flushed rows show that cost (decide() vs raw cedarpy, both flushed: "
                         f"{times(cold_ratio)}).")
    section.charts.append(Chart("In-process p50 per call", "µs", [n.split(" (")[0] for n in summaries],
                                [s.p50 * 1e6 for s in summaries.values()]))
    return section


def _add_instructions(section: Section, ctx: RunContext) -> None:
    """Instructions per call of raw cedarpy and decide() under callgrind (``bench/instructions.py``): the
    deterministic part of the ratio, which wall-clock p50s on a shared machine blur by ±15% or more."""
    valgrind = shutil.which("valgrind")
    if ctx.quick or valgrind is None:
        section.notes.append("Instruction counts: " + ("not taken in --quick mode." if valgrind else
                             "valgrind is not installed (Debian: apt-get install valgrind), so not taken."))
        return
    calls = INSTRUCTION_CALLS
    procs = {mode: subprocess.Popen(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", child_python(), "-m",
         "bench.instructions", mode, str(calls), str(ctx.tmp / f"instructions-{mode}")],
        cwd=REPO, env=python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for mode in ("setup", "raw", "native", "decide", "decide_no_memo")}
    counts: dict[str, int] = {}
    for mode, proc in procs.items():
        try:
            _out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            err = ""
        found = _COLLECTED.search(err or "")
        if proc.returncode == 0 and found:
            counts[mode] = int(found.group(1))
    if len(counts) < len(procs):
        section.notes.append("Instruction counts: a callgrind run failed, so none are shown.")
        return
    raw, native, decide, no_memo = ((counts[mode] - counts["setup"]) / calls
                                    for mode in ("raw", "native", "decide", "decide_no_memo"))
    section.data["instructions"] = {"raw": raw, "native": native, "decide": decide, "decide_no_memo": no_memo,
                                    "calls": calls}
    for name, value in ((INSTR_RAW, raw), (INSTR_NATIVE, native), (INSTR_DECIDE, decide),
                        (INSTR_DECIDE_NO_MEMO, no_memo)):
        section.add(name, f"{value / 1000:,.0f}k instr.", "", "", times(ratio(value, raw)))
    section.notes.append(f"Instruction rows: callgrind counts of {calls:,} calls each in a child process (its "
                         "setup subtracted); repeatable whatever else the machine does, but blind to cache misses "
                         "and kernel time (the audit append's system calls), which the p50 rows include. The "
                         "goal is judged on the p50 rows.")
