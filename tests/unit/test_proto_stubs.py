"""The committed stubs under src/tenantgate/v1/ must match what `make proto` generates."""

from pathlib import Path

from tenantgate import _protogen

COMMITTED = Path(__file__).resolve().parents[2] / "src" / "tenantgate" / "v1"


def test_committed_stubs_are_up_to_date(tmp_path):
    generated = _protogen.generate(tmp_path)
    names = {p.name for p in generated}
    assert names == {p.name for p in COMMITTED.iterdir() if p.is_file()}, "run `make proto`"
    for path in generated:
        assert path.read_bytes() == (COMMITTED / path.name).read_bytes(), f"{path.name} is stale: run `make proto`"


def test_decision_enum_zero_is_unspecified():
    from tenantgate.v1 import authorizer_pb2 as pb

    assert pb.Decision.Name(0) == "DECISION_UNSPECIFIED"
    assert pb.CheckResponse().decision == pb.DECISION_UNSPECIFIED
