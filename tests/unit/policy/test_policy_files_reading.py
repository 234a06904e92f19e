"""Every file the loader reads is a regular file, read without blocking and within the size limit (review
finding: a FIFO at the schema path blocked the reload forever; /dev/zero was read until MemoryError; a FIFO or
a dangling symlink named *.cedar was skipped silently)."""

import os
import shutil
import threading
from pathlib import Path

import pytest

from tenantgate.errors import PolicyError
from tenantgate.policy import load_policies, loader
from tenantgate.policy.loader import NOT_REGULAR_MESSAGE

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
PERMIT = '@id("reads")\npermit (principal, action == Action::"read", resource);\n'
BOUND_SECONDS = 10


@pytest.fixture()
def policy_dir(tmp_path):
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root)  # with tenants/acme/
    return root


def _unblock(fifo: Path) -> None:
    # A reader blocked in open() of the FIFO (the regression) returns once a writer opens it; a non-blocking
    # open for writing succeeds exactly when a reader is waiting.
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _load_bounded(root: Path, fifo: Path) -> BaseException | None:
    """``load_policies(root)`` in a thread; the error it raised, or a test failure if it blocks."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            load_policies(root)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(BOUND_SECONDS)
    if reader.is_alive():
        _unblock(fifo)
        reader.join(BOUND_SECONDS)
        pytest.fail(f"load_policies blocked on the FIFO {fifo.name} for {BOUND_SECONDS} s")
    return outcome[0]


def _refused_by_name(error: BaseException | None, shown: str, message: str = NOT_REGULAR_MESSAGE) -> None:
    assert isinstance(error, PolicyError), f"loaded, or not a PolicyError: {error!r}"
    assert [(d.path, d.line, d.message) for d in error.diagnostics] == [(shown, 1, message)]


def test_a_fifo_at_the_schema_path_is_refused_by_name_without_blocking(policy_dir):
    schema = policy_dir / "schema.cedarschema"
    schema.unlink()
    os.mkfifo(schema)
    _refused_by_name(_load_bounded(policy_dir, schema), "schema.cedarschema")


@pytest.mark.parametrize("relative", ["zz.cedar", "tenants/acme/zz.cedar", "entities.json",
                                      "tenants/acme/entities.json"])
def test_a_fifo_named_like_a_policy_or_entity_file_is_refused_by_name(policy_dir, relative):
    fifo = policy_dir / relative
    os.mkfifo(fifo)
    _refused_by_name(_load_bounded(policy_dir, fifo), relative)


def test_a_device_at_the_schema_path_is_refused_by_name(policy_dir):
    # /dev/null rather than /dev/zero: without the check it reads as an empty schema instead of never ending.
    schema = policy_dir / "schema.cedarschema"
    schema.unlink()
    schema.symlink_to("/dev/null")
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    _refused_by_name(err.value, "schema.cedarschema")
    assert "not a regular file: schema.cedarschema" in str(err.value)


@pytest.mark.parametrize("relative", ["zz.cedar", "tenants/acme/zz.cedar"])
def test_a_dangling_policy_symlink_is_refused_by_name(policy_dir, relative):
    (policy_dir / relative).symlink_to("gone.cedar")
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    _refused_by_name(err.value, relative, "a symlink whose target does not exist")


@pytest.mark.parametrize("relative", ["zz.cedar", "tenants/acme/zz.cedar"])
def test_a_looping_policy_symlink_is_refused_by_name(policy_dir, relative):
    (policy_dir / relative).symlink_to(Path(relative).name)
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    (diagnostic,) = err.value.diagnostics
    assert (diagnostic.path, diagnostic.line) == (relative, 1)
    assert diagnostic.message.startswith("cannot read: ")


def test_a_dangling_symlink_in_a_directory_the_loader_does_not_read_is_a_stray(policy_dir):
    (policy_dir / "sub").mkdir()
    (policy_dir / "sub" / "x.cedar").symlink_to("gone.cedar")
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    assert [d.path for d in err.value.diagnostics] == ["sub/x.cedar"]


class _StatBeforeGrowth:
    """``os`` as the loader sees it, except that ``fstat`` reports the file as empty: the file grew after its
    size was checked."""

    def __init__(self) -> None:
        self._os = os

    def __getattr__(self, name):
        return getattr(self._os, name)

    def fstat(self, fd):
        real = self._os.fstat(fd)
        return os.stat_result((real.st_mode, real.st_ino, real.st_dev, real.st_nlink, real.st_uid, real.st_gid, 0,
                               int(real.st_atime), int(real.st_mtime), int(real.st_ctime)))


def test_a_file_that_grew_past_the_limit_after_its_size_was_checked_is_refused(policy_dir, monkeypatch):
    big = policy_dir / "big.cedar"
    big.write_text(PERMIT + "// padding\n" * 20)
    monkeypatch.setattr(loader, "MAX_POLICY_FILE_BYTES", len(PERMIT))
    monkeypatch.setattr(loader, "os", _StatBeforeGrowth())
    with pytest.raises(PolicyError) as err:
        loader.read_text_file(big, "big.cedar")
    assert [(d.path, d.message) for d in err.value.diagnostics] == [("big.cedar", "larger than 8 MiB")]
    monkeypatch.setattr(loader, "MAX_POLICY_FILE_BYTES", len(big.read_bytes()))
    assert loader.read_text_file(big, "big.cedar") == big.read_text()  # exactly at the limit: read


def test_line_breaks_are_read_as_before_so_versions_and_lines_do_not_change(policy_dir, tmp_path):
    # The loader always read with universal newlines (Path.read_text): CRLF and CR files keep their version.
    (policy_dir / "p.cedar").write_text(PERMIT)
    version = load_policies(policy_dir).version
    for ending in ("\r\n", "\r"):
        (policy_dir / "p.cedar").write_bytes(PERMIT.replace("\n", ending).encode())
        assert load_policies(policy_dir).version == version
    (policy_dir / "p.cedar").write_bytes(b"// one\r\n// two\r\npermit (principal, action, resource\r\n")
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir)
    assert [(d.path, d.line) for d in err.value.diagnostics][:1] == [("p.cedar", 3)]
