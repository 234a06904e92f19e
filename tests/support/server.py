"""A real TenantGate gRPC server on an ephemeral loopback port, run in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tenantgate import app as application
from tenantgate import config

REPO = Path(__file__).resolve().parents[2]
BUNDLED_POLICIES = REPO / "policies"


def write_config(tmp_path: Path, issuer_settings, *, policies: Path = BUNDLED_POLICIES, extra: str = "") -> Path:
    """A config file trusting one test issuer (its JWKS file, or its ``jwks_url`` when set), with state under
    tmp_path and the bundled policies."""
    keys = (f'jwks_url = "{issuer_settings.jwks_url}"' if issuer_settings.jwks_url
            else f'jwks_file = "{issuer_settings.jwks_file}"')
    text = f"""
[server]
listen = "127.0.0.1:0"
metrics_listen = ""
state_dir = "{tmp_path / 'state'}"
grace_seconds = 2

[policies]
dir = "{policies}"

[[tokens.issuers]]
issuer = "{issuer_settings.issuer}"
audiences = {list(issuer_settings.audiences)!r}
algorithms = {list(issuer_settings.algorithms)!r}
{keys}
""".replace("'", '"') + extra
    path = tmp_path / "tenantgate.toml"
    path.write_text(text)
    return path


@contextmanager
def running_server(settings: config.Settings, clock=None) -> Iterator[tuple[str, application.App]]:
    """Yield ``("127.0.0.1:PORT", app)`` for a started server; stop and drain it afterwards."""
    built = application.build(settings, clock)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    failure: list[BaseException] = []
    stop: list[asyncio.Event] = []

    async def main() -> None:
        stop.append(asyncio.Event())

        def on_started(p: int) -> None:
            port.append(p)
            started.set()

        await application.serve(built, on_started, stop[0])

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as err:
            failure.append(err)
            started.set()

    thread = threading.Thread(target=run, name="tenantgate-test-server", daemon=True)
    thread.start()
    if not started.wait(30) or failure:
        raise RuntimeError(f"server did not start: {failure}")
    try:
        yield f"127.0.0.1:{port[0]}", built
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        loop.close()


def swapping_engines(app: application.App, tmp_path: Path):
    """An engine source for ``app.pdp._engine`` (set it with monkeypatch) that decides as if a reload swapped the
    policy set before every read of it: it alternates between the set ``app`` serves and another version of it
    (the same files plus a comment). Its ``engines`` attribute holds the two."""
    import itertools
    import shutil

    from tenantgate.policy import PolicyStore, load_policies

    other = tmp_path / "other-version"
    shutil.copytree(app.settings.policies.dir, other)
    schema = other / "schema.cedarschema"
    schema.write_text(schema.read_text() + "\n// another version\n")
    both = [app.policies.current(), PolicyStore(load_policies(other)).current()]
    engines = itertools.cycle(both)

    def source():
        return next(engines)

    source.engines = both
    return source


def stop_process(proc, timeout: float = 30) -> None:
    """SIGTERM a ``serve`` subprocess, SIGKILL it if it has not exited within ``timeout`` s, close its stdout."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        finally:
            proc.kill()
    if proc.stdout is not None:
        proc.stdout.close()
