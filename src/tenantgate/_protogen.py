"""Generate the protobuf/gRPC stubs: ``python -m tenantgate._protogen OUT_DIR`` (``make proto``).

The stubs are committed under ``src/tenantgate/v1/``; a test regenerates them into a temporary directory
and fails when the committed ones are stale. Needs grpcio-tools (the ``test`` extra).
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


def generate(out_dir: str | Path) -> list[Path]:
    """Compile every ``proto/tenantgate/v1/*.proto`` into ``out_dir``; return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "tenantgate" / "v1").glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out / "tenantgate" / "v1"
    init = package / "__init__.py"
    init.write_text('"""Generated protobuf and gRPC stubs (make proto). Do not edit."""\n')
    return sorted(package.iterdir())


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else "src")
