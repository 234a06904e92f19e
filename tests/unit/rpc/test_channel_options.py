"""The serving port's gRPC channel arguments: the connection age, its grace and the idle limit (C ints)."""

from tenantgate.rpc.server import channel_options, max_metadata_bytes


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


def test_idle_connections_are_closed_after_five_minutes_unless_asked_otherwise():
    # Review finding: idle HTTP/2 connections were never closed (~15 KiB and a descriptor each, for good).
    assert dict(channel_options(1024))["grpc.max_connection_idle_ms"] == 300_000
    assert dict(channel_options(1024, max_connection_idle=2))["grpc.max_connection_idle_ms"] == 2_000
    assert "grpc.max_connection_idle_ms" not in dict(channel_options(1024, max_connection_idle=0))


def test_the_idle_limit_and_the_age_are_independent():
    options = dict(channel_options(1024, max_connection_age=60, grace=5))
    assert (options["grpc.max_connection_idle_ms"], options["grpc.max_connection_age_ms"],
            options["grpc.max_connection_age_grace_ms"]) == (300_000, 60_000, 5_000)


def test_the_metadata_limit_fits_the_longest_token_and_has_no_random_window():
    # Review finding: with the soft limit alone gRPC refuses calls between it and 1.25 times it at random.
    options = dict(channel_options(1024, max_metadata=max_metadata_bytes(16_384)))
    assert options["grpc.max_metadata_size"] == options["grpc.absolute_max_metadata_size"] == 16_384 + 8_192
    assert max_metadata_bytes(1_000) == 16_384  # never below gRPC's usual limit
    assert max_metadata_bytes(65_536) == 65_536 + 8_192
