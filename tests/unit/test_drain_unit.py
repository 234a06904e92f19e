"""app._drain: health first, then both ports stop together, each given what is left of one grace period."""

import asyncio

from tenantgate import app as application


class _Port:
    def __init__(self, steps: list[str], name: str) -> None:
        self.steps, self.name, self.graces = steps, name, []

    async def report_not_serving(self) -> None:
        self.steps.append("not serving")

    async def stop(self, grace: float) -> None:
        self.graces.append(grace)
        self.steps.append(f"{self.name} stopping")
        await asyncio.sleep(0)  # the other port's stop starts before this one ends: they run together
        self.steps.append(f"{self.name} stopped")


def test_both_ports_drain_together_after_health_turns_not_serving():
    # Review finding: HTTP drained, then gRPC, each with the whole grace period (twice it in all).
    steps: list[str] = []
    grpc, http = _Port(steps, "grpc"), _Port(steps, "http")
    asyncio.run(application._drain(grpc, http, 3.0))
    assert steps[0] == "not serving" and set(steps[1:3]) == {"grpc stopping", "http stopping"}
    assert 0 < grpc.graces[0] <= 3.0 and 0 < http.graces[0] <= 3.0
