"""The gRPC load client, run in its own process: ``python -m bench.client < spec.json > result.json``.

Closed loop (``runs``): N concurrent tasks on one grpc.aio channel, each issuing calls back to back for
``run_s`` seconds or ``max_calls`` calls in all, after a warm-up; the server's CPU seconds are read from
/proc/<server_pid>/stat around the measured window.

Open loop (``open_loop``): calls are scheduled at a fixed offered rate; ``concurrency`` workers (spread
over ``connections`` channels) take the next scheduled slot, wait for its time, send, and latency is
measured from the *scheduled* time, so a stalled server shows up as latency instead of silently lowering
the rate (no coordinated omission).
The decision id of every answered call (warm-up included) is written to ``ids_file``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

from .procstat import cpu_seconds, own_cpu_seconds
from .stats import summarize

# One call: returns (ok, decisions answered, decision ids) or raises grpc.aio.AioRpcError.
Call = Callable[[], Awaitable[tuple[bool, int, list[str]]]]


def check_request(spec: dict[str, Any], resource_id: str | None = None, with_token: bool = True) -> pb.CheckRequest:
    res = spec["request"]["resource"]
    return pb.CheckRequest(token=spec["token"] if with_token else "", action=spec["request"]["action"],
                           resource=pb.Resource(type=res["type"], id=resource_id or res["id"], tenant=res["tenant"]))


def make_call(channel: grpc.aio.Channel, spec: dict[str, Any], rpc: str, items: int = 1,
              record_ids: bool = False) -> Call:
    """The call a run repeats: health Check, Authorizer Check (the same request, or ``check_new``: a new resource
    each call), or a BatchCheck of ``items`` items."""
    if rpc == "health":
        health = health_pb2_grpc.HealthStub(channel)
        ping = health_pb2.HealthCheckRequest(service="")

        async def call_health() -> tuple[bool, int, list[str]]:
            answer = await health.Check(ping)
            return answer.status == health_pb2.HealthCheckResponse.SERVING, 1, []

        return call_health
    stub = pb_grpc.AuthorizerStub(channel)
    if rpc == "check":
        request = check_request(spec)

        async def call_check() -> tuple[bool, int, list[str]]:
            answer = await stub.Check(request, timeout=spec.get("deadline_s", 10.0))
            return answer.decision == pb.ALLOW, 1, [answer.decision_id] if record_ids else []

        return call_check
    if rpc == "check_new":  # a resource never asked for before on every call: nothing cached but the token
        numbers = itertools.count()

        async def call_check_new() -> tuple[bool, int, list[str]]:
            answer = await stub.Check(check_request(spec, f"new-{next(numbers)}"), timeout=spec.get("deadline_s", 10.0))
            return answer.decision == pb.ALLOW, 1, [answer.decision_id] if record_ids else []

        return call_check_new
    if rpc == "batch":
        batch = pb.BatchCheckRequest(token=spec["token"], items=[
            check_request(spec, f"inv-{i}", with_token=False) for i in range(items)])

        async def call_batch() -> tuple[bool, int, list[str]]:
            answer = await stub.BatchCheck(batch, timeout=spec.get("deadline_s", 60.0))
            ok = len(answer.results) == items and all(r.decision == pb.ALLOW for r in answer.results)
            return ok, len(answer.results), [r.decision_id for r in answer.results] if record_ids else []

        return call_batch
    raise ValueError(f"unknown rpc {rpc!r}")


async def _closed(call: Call, concurrency: int, seconds: float, max_calls: int) -> dict[str, Any]:
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    counts = {"left": max_calls, "unexpected": 0, "decisions": 0}
    stop_at = time.perf_counter() + seconds

    async def task() -> None:
        while counts["left"] > 0 and time.perf_counter() < stop_at:
            counts["left"] -= 1
            started = time.perf_counter()
            try:
                ok, decisions, _ids = await call()
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1
                continue
            latencies.append(time.perf_counter() - started)
            counts["decisions"] += decisions
            counts["unexpected"] += not ok

    started = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(concurrency)))
    return {"latencies": latencies, "codes": codes, "unexpected": counts["unexpected"],
            "decisions": counts["decisions"], "seconds": time.perf_counter() - started}


async def closed_runs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    pid = int(spec["server_pid"])
    results = []
    async with grpc.aio.insecure_channel(spec["address"]) as channel:
        for run in spec["runs"]:
            call = make_call(channel, spec, run["rpc"], run.get("items", 1))
            await _closed(call, run["concurrency"], run["warmup_s"], run["max_calls"])
            cpu0, own0 = cpu_seconds(pid), own_cpu_seconds()
            measured = await _closed(call, run["concurrency"], run["run_s"], run["max_calls"])
            cpu1, own1 = cpu_seconds(pid), own_cpu_seconds()
            results.append({
                **run,
                "calls": len(measured["latencies"]),
                "decisions": measured["decisions"],
                "errors": sum(measured["codes"].values()),
                "error_codes": dict(measured["codes"]),
                "unexpected": measured["unexpected"],
                "seconds": measured["seconds"],
                "latency": summarize(measured["latencies"]).to_dict(),
                "server_cpu_s": cpu1 - cpu0,
                "client_cpu_s": own1 - own0,
            })
    return results


async def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    run = spec["open_loop"]
    pid = int(spec["server_pid"])
    rate, seconds, workers = float(run["rate"]), float(run["seconds"]), int(run["concurrency"])
    total = max(1, int(rate * seconds))
    ids: list[str] = []
    # Several connections, as Envoy's worker threads open: SO_REUSEPORT spreads connections (not calls) over
    # the workers of ``serve --workers N``. A local subchannel pool keeps grpc from sharing one connection.
    channels = [grpc.aio.insecure_channel(spec["address"], options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, int(run.get("connections", 1))))]
    try:
        calls = [make_call(channel, spec, "check", record_ids=True) for channel in channels]
        # Warm-up (closed loop, a few in flight): connection, caches, code paths. Its answers are audited too.
        warm: list[str] = []

        async def warm_task(call: Call) -> None:
            stop_at = time.perf_counter() + run["warmup_s"]
            while time.perf_counter() < stop_at:
                try:
                    warm.extend((await call())[2])
                except grpc.aio.AioRpcError:
                    pass

        await asyncio.gather(*(warm_task(calls[n % len(calls)]) for n in range(max(4, len(calls)))))
        ids.extend(warm)
        from_schedule: list[float] = []
        from_send: list[float] = []
        codes: Counter[str] = Counter()
        state = {"next": 0, "unexpected": 0, "late": 0, "not_sent": 0}
        cpu0, own0 = cpu_seconds(pid), own_cpu_seconds()
        t0 = time.perf_counter() + 0.05
        # A server slower than the offered rate falls ever further behind the schedule: stop sending (and
        # count the rest as not sent) once twice the planned duration (plus 5 s) has passed.
        give_up = t0 + 2 * seconds + 5.0

        async def worker(call: Call) -> None:
            while state["next"] < total:
                index = state["next"]
                if time.perf_counter() > give_up:
                    state["not_sent"] += total - index
                    state["next"] = total
                    return
                state["next"] += 1
                scheduled = t0 + index / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    state["late"] += 1  # every worker was busy when this slot came up
                sent = time.perf_counter()
                try:
                    ok, _n, answered = await call()
                except grpc.aio.AioRpcError as err:
                    codes[err.code().name] += 1
                    continue
                done = time.perf_counter()
                from_schedule.append(done - scheduled)
                from_send.append(done - sent)
                state["unexpected"] += not ok
                ids.extend(answered)

        await asyncio.gather(*(worker(calls[n % len(calls)]) for n in range(workers)))
        elapsed = time.perf_counter() - t0
        cpu1, own1 = cpu_seconds(pid), own_cpu_seconds()
    finally:
        for channel in channels:
            await channel.close()
    with open(run["ids_file"], "w", encoding="ascii") as out:
        out.write("\n".join(ids) + "\n")
    return {
        **run,
        "offered": total,
        "answered": len(from_schedule),
        "answered_total": len(ids),
        "errors": sum(codes.values()),
        "error_codes": dict(codes),
        "unexpected": state["unexpected"],
        "late_starts": state["late"],
        "not_sent": state["not_sent"],
        "seconds": elapsed,
        "latency": summarize(from_schedule).to_dict(),
        "service_latency": summarize(from_send).to_dict(),
        "server_cpu_s": cpu1 - cpu0,
        "client_cpu_s": own1 - own0,
    }


def main() -> int:
    spec = json.load(sys.stdin)
    if "open_loop" in spec:
        result: Any = asyncio.run(open_loop(spec))
    else:
        result = asyncio.run(closed_runs(spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
