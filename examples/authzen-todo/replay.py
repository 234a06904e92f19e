#!/usr/bin/env python3
"""Replay an AuthZEN interop decisions file against a PDP and report PASS/FAIL per request.

The file is the interop's format: ``{"evaluation": [{"request": {...}, "expected": bool}, ...],
"evaluations": [{"request": {...}, "expected": [...]}, ...]}`` (e.g. the Todo backend's
``test/decisions-1.0-implementers-draft.json`` in the openid/authzen repository). Standard library only.

    python3 replay.py DECISIONS.json http://127.0.0.1:8080 --token "$PEP_TOKEN"

Exit code 0 when every request passed, 1 otherwise (also when the file cannot be read or the PDP does not
answer: a one-line message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any


def post(base_url: str, endpoint: str, body: Any, token: str, timeout: float = 10.0) -> tuple[int, Any]:
    """POST ``body`` to ``/access/v1/<endpoint>``; returns (status, parsed JSON or the error text)."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/access/v1/{endpoint}", data=json.dumps(body).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def outcome(endpoint: str, answer: Any) -> Any:
    """What a decisions file's ``expected`` is compared with: the decision, or the list of decisions."""
    if endpoint == "evaluation":
        return bool(isinstance(answer, dict) and answer.get("decision") is True)
    items = answer.get("evaluations", []) if isinstance(answer, dict) else []
    return [bool(isinstance(item, dict) and item.get("decision") is True) for item in items]


def replay(decisions: dict[str, Any], base_url: str, token: str) -> list[tuple[str, bool, Any]]:
    """``(endpoint, passed, request)`` for every case of the file, in order."""
    results = []
    for endpoint in ("evaluation", "evaluations"):
        for case in decisions.get(endpoint) or []:
            status, answer = post(base_url, endpoint, case["request"], token)
            expected = case["expected"]
            if endpoint == "evaluations" and isinstance(expected, list):
                expected = [e.get("decision") if isinstance(e, dict) else e for e in expected]
            results.append((endpoint, status == 200 and outcome(endpoint, answer) == expected, case["request"]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("decisions", help="an interop decisions JSON file")
    parser.add_argument("url", help="the PDP's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", required=True, help="the PEP's bearer token")
    args = parser.parse_args(argv)
    try:
        with open(args.decisions, encoding="utf-8") as handle:
            decisions = json.load(handle)
    except (OSError, ValueError) as err:  # a file not downloaded yet, or not JSON: say so, no traceback
        print(f"replay.py: cannot read the decisions file {args.decisions}: {err}", file=sys.stderr)
        return 1
    if not isinstance(decisions, dict):
        print(f"replay.py: {args.decisions} is not an interop decisions file (a JSON object with "
              "\"evaluation\" and \"evaluations\" lists)", file=sys.stderr)
        return 1
    try:
        results = replay(decisions, args.url, args.token)
    except OSError as err:  # URLError (refused, unknown host) or a timeout; HTTPError is answered in post()
        print(f"replay.py: no answer from {args.url}: {getattr(err, 'reason', err)} (is the PDP running there?)",
              file=sys.stderr)
        return 1
    for endpoint, passed, request in results:
        print("PASS" if passed else "FAIL", endpoint, json.dumps(request, separators=(",", ":")))
    failed = sum(1 for _e, passed, _r in results if not passed)
    print(f"{len(results) - failed} of {len(results)} requests gave the expected decision")
    return 0 if failed == 0 and results else 1


if __name__ == "__main__":
    sys.exit(main())
