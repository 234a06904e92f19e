"""Run in a child process by scenario 2, under ``valgrind --tool=callgrind``:
``python -m bench.instructions MODE CALLS DIR``.

Builds the app as scenario 2 does (same generated config, same realistic request), warms it up, then makes
CALLS calls of MODE: ``setup`` (none: what building and warming cost, subtracted from the others), ``raw``
(cedarpy.is_authorized with the pre-parsed PolicySet and Schema and the entity list, scenario 2's floor),
``native`` (the one Cedar call ``Engine.evaluate`` makes: cedarpy's native function with the pre-parsed
PolicySet, Schema and Entities handles), ``decide`` (the full audited ``DecisionPoint.decide``, Cedar's outcome
from its memo) or ``decide_no_memo`` (the same on an engine with the memo off: Cedar on every call).
callgrind counts the instructions the process executes: the same for the same binary and inputs whatever
else the machine does, so the ratio of two counts is the steady part of scenario 2's wall-clock ratio (it
does not see cache misses or time spent in the kernel, e.g. the audit append's system calls).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cedarpy

from tenantgate import app as application
from tenantgate.core import engine as engine_module
from tenantgate.core.model import Decision

from .core import cedar_inputs, realistic

MODES = ("setup", "raw", "native", "decide", "decide_no_memo")
WARMUP = 50


def main(argv: list[str]) -> int:
    mode, calls, directory = argv[0], int(argv[1]), Path(argv[2])
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)}")
    directory.mkdir(parents=True, exist_ok=True)
    built, _token, check, _first, principal = realistic(directory)
    try:
        request, entities = cedar_inputs(check, principal)
        engine = built.policies.current()
        policy_set, schema = engine.policy_set_for("acme"), engine.compiled.schema

        def raw() -> object:
            return cedarpy.is_authorized(request, policy_set, entities, schema=schema)

        native_request = dict(request, context=engine_module.json_object(request["context"]))
        handle = cedarpy.Entities.from_json_str(json.dumps(entities), schema)._inner

        def native() -> object:
            return engine_module.answer_text(native_request, policy_set, handle, schema)

        def decide() -> object:
            return built.pdp.decide(check)

        no_memo = engine_module.Engine(engine.compiled, decision_cache_size=0)

        for _ in range(WARMUP):  # both warmed in every mode, so the setup run subtracts exactly this
            assert built.pdp.decide(check).decision is Decision.ALLOW
            assert built.pdp.decide(check, no_memo).decision is Decision.ALLOW
            raw()
            native()
        call = {"raw": raw, "native": native, "decide": decide,
                "decide_no_memo": lambda: built.pdp.decide(check, no_memo)}.get(mode)
        if call is not None:
            for _ in range(calls):
                call()
    finally:
        application.close(built)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
