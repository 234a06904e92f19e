"""The serving port's gRPC channel arguments: the connection age and its grace stay within C ints."""

from tenantgate.rpc.server import channel_options


def test_no_connection_age_unless_asked():
    assert not [k for k, _ in channel_options(1024) if k.startswith("grpc.max_connection_age")]


def test_connection_age_and_grace_in_milliseconds_with_at_least_one_second_of_grace():
    options = dict(channel_options(1024, max_connection_age=300, grace=0))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 1_000


def test_huge_values_are_clamped_to_a_c_int_instead_of_overflowing():
    # int(1e306 * 1000) raised OverflowError (inf) and crashed the start of `serve`.
    options = dict(channel_options(1024, max_connection_age=604_800, grace=1e306))
    assert options["grpc.max_connection_age_ms"] == 604_800_000
    assert options["grpc.max_connection_age_grace_ms"] == 2**31 - 1
