"""Dependencies point inward: core imports no adapter and nothing of gRPC, PyJWT, Prometheus or a database."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tenantgate"
FORBIDDEN_IN_CORE = ("grpc", "grpc_health", "grpc_reflection", "jwt", "prometheus_client", "psycopg", "sqlite3",
                     "google", "envoy", "socket", "urllib", "http", "os", "tenantgate.identity", "tenantgate.audit",
                     "tenantgate.grants", "tenantgate.policy", "tenantgate.rpc", "tenantgate.http",
                     "tenantgate.observability", "tenantgate.app", "tenantgate.background", "tenantgate.cli",
                     "tenantgate.config",
                     "tenantgate.v1")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _violations(package: str, forbidden: tuple[str, ...]):
    for path in sorted((SRC / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                yield f"{path.relative_to(SRC)} imports {name}"


def test_core_imports_no_adapter_or_io_library():
    assert list(_violations("core", FORBIDDEN_IN_CORE)) == []


def test_only_the_engine_its_entity_cache_the_compiler_its_error_locator_and_the_schema_rules_import_cedarpy():
    users = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if any(
        n == "cedarpy" or n.startswith("cedarpy.") for n in _imports(p))}
    assert users == {"core/engine.py", "core/entitycache.py", "core/compiler.py", "core/policy_errors.py",
                     "core/schema.py", "core/policy_files.py", "core/tenant_compile.py"}


def test_adapters_do_not_import_the_cli_or_the_composition_root():
    for package in ("identity", "audit", "policy", "rpc", "http", "observability"):
        assert list(_violations(package, ("tenantgate.cli", "tenantgate.app", "tenantgate.background"))) == []


def test_only_config_reads_the_environment():
    readers = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if "os.environ" in text or "getenv(" in text:
            readers.add(str(path.relative_to(SRC)))
    # The CLI reads TENANTGATE_CONFIG and TENANTGATE_TOKEN for its own options; settings come from config.py.
    assert {r for r in readers if not r.startswith("cli/")} <= {"config.py"}
