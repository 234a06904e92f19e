"""``policies.invalid_tenants_at_start = "quarantine"``: a tenant whose own files are invalid at start is
quarantined (every decision about its resources denied), every other tenant is served, and a reload that finds
its files valid serves it.

Review finding (session 16, F): start-up was strict, so while a tenant was held back a restarted worker never
came back, and a server restarted for any reason did not start until that tenant's files were fixed.
"""

import logging
import os
import shutil
from pathlib import Path

import pytest

from support.policies import bundled_with_tenant
from tenantgate.core.model import Decision, Principal, Reason, Resource
from tenantgate.errors import PolicyError
from tenantgate.observability.metrics import DecisionMetrics
from tenantgate.policy import PolicyStore
from tenantgate.rpc.admin import HELD_BACK, QUARANTINED, REFUSED, _last_reload

EVIL_FORBID = '@id("evil-no-delete")\nforbid (principal, action == Action::"delete", resource);\n'
BROKEN = '@id("oops")\npermit (principal, action, resource)\n'  # no `;`


@pytest.fixture()
def policy_dir(tmp_path):
    return bundled_with_tenant(tmp_path, "evil", {"own.cedar": EVIL_FORBID, "oops.cedar": BROKEN})


def _read(engine, tenant):
    """A viewer of ``tenant`` reading its invoice: the bundled global policies allow it."""
    viewer = Principal("User", "v", "v", tenant, ("viewer",), None, "https://issuer.test", "jti")
    return engine.evaluate(viewer, "read", Resource(type="Invoice", id="i", tenant=tenant), {"tenant": tenant},
                           {"intent": ""})


def test_by_default_start_up_is_strict(policy_dir):
    with pytest.raises(PolicyError, match=r"tenants/evil/oops\.cedar"):
        PolicyStore.load(policy_dir)


def test_a_tenant_with_invalid_files_is_quarantined_and_every_other_tenant_served(policy_dir, caplog):
    with caplog.at_level(logging.ERROR, logger="tenantgate.policy"):
        store = PolicyStore.load(policy_dir, quarantine=True)
    engine = store.current()
    assert engine.compiled.quarantined == {"evil"}
    last = store.last_result
    assert (last.ok, last.held_back, last.quarantined) == (False, ("evil",), ("evil",))
    assert "tenants/evil/oops.cedar" in last.message
    assert any("quarantined" in r.getMessage() and "evil" in r.getMessage() for r in caplog.records)
    # The global set alone would allow this read (and would lack evil's own forbid on delete): denied instead.
    denied = _read(engine, "evil")
    assert (denied.decision, denied.reason) == (Decision.DENY, Reason.TENANT_POLICIES_UNAVAILABLE)
    assert _read(engine, "acme").decision is Decision.ALLOW


def test_fixed_files_take_the_tenant_out_of_quarantine(policy_dir):
    store = PolicyStore.load(policy_dir, quarantine=True)
    again = store.reload(force=True)  # still broken: still quarantined
    assert (again.ok, again.held_back, again.quarantined) == (False, ("evil",), ("evil",))
    assert _read(store.current(), "evil").reason is Reason.TENANT_POLICIES_UNAVAILABLE
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    fixed = store.reload(force=True)
    assert (fixed.ok, fixed.held_back, fixed.quarantined) == (True, (), ())
    engine = store.current()
    assert not engine.compiled.quarantined and engine.compiled.tenants["evil"].ids == ("evil-no-delete",)
    assert _read(engine, "evil").decision is Decision.ALLOW


def test_a_quarantined_tenant_whose_directory_is_removed_leaves_quarantine(policy_dir):
    # Its version is the same with or without the quarantine (no files of its own either way): the engine must
    # still be replaced, or it would go on denying.
    store = PolicyStore.load(policy_dir, quarantine=True)
    before = store.current().version
    shutil.rmtree(policy_dir / "tenants" / "evil")
    result = store.reload(force=True)
    assert (result.ok, result.changed, result.quarantined) == (True, True, ())
    assert store.current().version == before
    assert _read(store.current(), "evil").decision is Decision.ALLOW


def test_a_tenant_that_breaks_later_is_held_back_not_quarantined(policy_dir):
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    store = PolicyStore.load(policy_dir, quarantine=True)
    assert store.last_result.ok and not store.current().compiled.quarantined
    (policy_dir / "tenants" / "evil" / "oops.cedar").write_text(BROKEN)
    result = store.reload(force=True)
    assert (result.held_back, result.quarantined) == (("evil",), ())
    assert store.current().compiled.tenants["evil"].ids == ("evil-no-delete",)  # its last valid files


@pytest.mark.parametrize("where", ["zz-broken.cedar", "tenants/stray.cedar"])
def test_a_problem_outside_tenant_directories_still_refuses_to_start(policy_dir, where):
    (policy_dir / where).write_text(BROKEN)
    with pytest.raises(PolicyError, match=where.replace(".", r"\.")):
        PolicyStore.load(policy_dir, quarantine=True)


def test_a_quarantined_tenant_is_denied_whatever_the_memo_holds(policy_dir):
    store = PolicyStore.load(policy_dir, quarantine=True)
    engine = store.current()
    for _ in range(3):
        assert _read(engine, "evil").reason is Reason.TENANT_POLICIES_UNAVAILABLE


def test_status_and_metrics_report_a_quarantine_without_naming_the_tenant(policy_dir):
    from prometheus_client import CollectorRegistry, generate_latest

    store = PolicyStore.load(policy_dir, quarantine=True)
    last = store.last_result
    words = _last_reload(last.ok, last.message, last.held_back, store.current().compiled.quarantined)
    assert words == QUARANTINED.format(count=1) and "evil" not in words
    assert _last_reload(False, "x", ("acme", "evil"), frozenset({"evil"})) == \
        f"{HELD_BACK}; {QUARANTINED.format(count=1)}"
    assert _last_reload(False, "x", (), frozenset({"evil"})) == f"{REFUSED}; {QUARANTINED.format(count=1)}"
    assert _last_reload(True, "loaded", (), frozenset()) == "loaded"
    registry = CollectorRegistry()
    metrics = DecisionMetrics(registry)
    metrics.policies_started(last)
    text = generate_latest(registry).decode()
    assert "tenantgate_policy_quarantined_tenants 1.0" in text
    assert "tenantgate_policy_last_reload_ok 0.0" in text
    assert "tenantgate_policy_reloads_total" not in text.replace("# HELP tenantgate_policy_reloads_total", "") \
        .replace("# TYPE tenantgate_policy_reloads_total", "")  # a start is not counted as a reload


# Review findings (quarantine review, F1): a tenant whose directory could not be read, or was gone for a while,
# was taken as having no files of its own, and served by the global policies alone (its own forbids lost).

ACME_FORBID = '@id("acme-no-read")\nforbid (principal, action == Action::"read", resource);\n'


def _acme_read(store):
    return _read(store.current(), "acme")


def test_a_quarantined_directory_moved_away_and_back_still_broken_stays_quarantined(policy_dir, tmp_path):
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    acme = policy_dir / "tenants" / "acme"
    shutil.rmtree(acme)
    acme.mkdir()
    (acme / "own.cedar").write_text(ACME_FORBID)
    (acme / "oops.cedar").write_text(BROKEN)
    store = PolicyStore.load(policy_dir, quarantine=True)
    assert _acme_read(store).reason is Reason.TENANT_POLICIES_UNAVAILABLE
    shutil.move(acme, tmp_path / "away")
    assert store.reload().ok and _acme_read(store).decision is Decision.ALLOW  # no directory: the global set
    shutil.move(tmp_path / "away", acme)
    result = store.reload()
    assert "acme" in result.quarantined and _acme_read(store).reason is Reason.TENANT_POLICIES_UNAVAILABLE


def test_a_held_back_directory_moved_away_and_back_broken_is_quarantined_not_left_out(policy_dir, tmp_path):
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    acme = policy_dir / "tenants" / "acme"
    (acme / "no-read.cedar").write_text(ACME_FORBID)
    store = PolicyStore.load(policy_dir)
    (acme / "oops.cedar").write_text(BROKEN)
    assert store.reload().held_back == ("acme",) and _acme_read(store).reason is Reason.POLICY_FORBID
    shutil.move(acme, tmp_path / "away")
    store.reload()
    shutil.move(tmp_path / "away", acme)
    store.reload()
    assert _acme_read(store).reason is Reason.TENANT_POLICIES_UNAVAILABLE


def _acme_linked(policy_dir: Path, src: Path, extra: str, text: str) -> None:
    """``tenants/acme`` made a link to ``src`` (acme's files moved there), with ``extra`` = ``text`` added."""
    shutil.move(policy_dir / "tenants" / "acme", src)
    (src / extra).write_text(text)
    os.symlink(src, policy_dir / "tenants" / "acme")


def test_a_dangling_tenant_link_holds_that_tenant_back_not_the_reload_ok(policy_dir, tmp_path):
    src = tmp_path / "src"
    _acme_linked(policy_dir, src, "no-read.cedar", ACME_FORBID)
    store = PolicyStore.load(policy_dir, quarantine=True)
    assert _acme_read(store).reason is Reason.POLICY_FORBID
    os.rename(src, tmp_path / "elsewhere")  # the link dangles
    result = store.reload()
    assert not result.ok and "acme" in result.held_back and "tenants/acme:1" in result.message
    assert _acme_read(store).reason is Reason.POLICY_FORBID  # its last valid files
    store2 = PolicyStore.load(policy_dir, quarantine=True)  # a worker started now
    assert _acme_read(store2).reason is Reason.TENANT_POLICIES_UNAVAILABLE
    with pytest.raises(PolicyError, match=r"tenants/acme:1: cannot be read"):
        PolicyStore.load(policy_dir)


def test_a_dangling_tenants_directory_refuses_the_reload(policy_dir, tmp_path):
    store = PolicyStore.load(policy_dir, quarantine=True)
    shutil.move(policy_dir / "tenants", tmp_path / "tenants")
    os.symlink(tmp_path / "not-mounted", policy_dir / "tenants")
    result = store.reload()
    assert not result.ok and not result.held_back and "tenants:1: cannot be read" in result.message


def test_a_tenant_directory_that_cannot_be_listed_is_not_taken_as_empty(policy_dir, monkeypatch):
    acme = policy_dir / "tenants" / "acme"
    (acme / "no-read.cedar").write_text(ACME_FORBID)
    store = PolicyStore.load(policy_dir, quarantine=True)
    real = os.listdir

    def listdir(path="."):
        if os.fspath(path) == os.fspath(acme):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    result = store.reload(force=True)
    assert "acme" in result.held_back and _acme_read(store).reason is Reason.POLICY_FORBID


def test_a_link_onto_a_quarantined_tenants_directory_blames_the_link(policy_dir, tmp_path):
    # Review finding (F2b): acme, quarantined at start, stayed quarantined after fixing its files, because a
    # quarantined tenant counted as "moved" when evil linked onto its directory.
    src = tmp_path / "src"
    _acme_linked(policy_dir, src, "oops.cedar", BROKEN)
    store = PolicyStore.load(policy_dir, quarantine=True)
    assert store.last_result.quarantined == ("acme", "evil")
    shutil.rmtree(policy_dir / "tenants" / "evil")
    os.symlink(src, policy_dir / "tenants" / "evil")
    (src / "oops.cedar").unlink()
    result = store.reload()
    assert result.held_back == ("evil",) and result.quarantined == ("evil",)
    assert _acme_read(store).decision is Decision.ALLOW


# Second review of the fixes above.

def test_a_tenants_directory_that_cannot_be_searched_refuses_the_reload(policy_dir, monkeypatch):
    # Review finding (HIGH): tenants/ at mode 0444 could be listed but not entered; every entry's is_dir() failed
    # and was taken as "not a directory", so every tenant lost its own forbids with the reload OK.
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    (policy_dir / "tenants" / "acme" / "no-read.cedar").write_text(ACME_FORBID)
    store = PolicyStore.load(policy_dir)
    real = os.stat
    tenants = os.fspath(policy_dir / "tenants") + os.sep

    def stat(path, *args, **kwargs):
        if os.fspath(path).startswith(tenants):
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    result = store.reload(force=True)
    assert not result.ok and not result.held_back and "tenants:1: cannot be read" in result.message
    assert _acme_read(store).reason is Reason.POLICY_FORBID  # the last good set: acme's guards still apply
    with pytest.raises(PolicyError, match="tenants:1: cannot be read"):
        PolicyStore.load(policy_dir, quarantine=True)


def test_an_entity_file_that_cannot_be_examined_holds_its_tenant_back(policy_dir, monkeypatch):
    # Review finding: os.path.lexists said False for an entities.json in a directory that could not be searched,
    # and the tenant silently lost its entity data.
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    entities = policy_dir / "tenants" / "evil" / "entities.json"
    entities.write_text("[]")
    store = PolicyStore.load(policy_dir)
    real = os.lstat

    def lstat(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(entities):
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    assert store.reload(force=True).held_back == ("evil",)


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_a_file_put_in_place_of_a_served_tenants_directory_holds_it_back(policy_dir, kind):
    # Review finding: a regular file, FIFO or socket named like a served tenant counted as its removal.
    acme = policy_dir / "tenants" / "acme"
    (acme / "no-read.cedar").write_text(ACME_FORBID)
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    store = PolicyStore.load(policy_dir)
    shutil.rmtree(acme)
    if kind == "file":
        acme.write_text("not a directory")
    else:
        os.mkfifo(acme)
    result = store.reload()
    assert result.held_back == ("acme",) and "tenants/acme:1: cannot be read" in result.message
    assert _acme_read(store).reason is Reason.POLICY_FORBID


def test_a_link_to_a_file_in_the_tenants_directory_is_not_a_tenant(policy_dir, tmp_path):
    # Review finding (regression of the first fix): tenants/README.md -> ../README.md blocked a default start and
    # held back a tenant "README.md" on every reload.
    (policy_dir / "tenants" / "evil" / "oops.cedar").unlink()
    (tmp_path / "README.md").write_text("notes\n")
    os.symlink(tmp_path / "README.md", policy_dir / "tenants" / "README.md")
    store = PolicyStore.load(policy_dir)
    (policy_dir / "tenants" / "acme" / "new.cedar").write_text(ACME_FORBID)
    result = store.reload()
    assert (result.ok, result.held_back, result.quarantined) == (True, (), ())


def test_more_tenants_with_problems_than_may_be_held_says_so(policy_dir):
    # Review finding: 17 broken tenants at a quarantine start were refused as "34 problem(s)", no reason given.
    for n in range(17):
        (policy_dir / "tenants" / f"bad{n}").mkdir()
        (policy_dir / "tenants" / f"bad{n}" / "oops.cedar").write_text(BROKEN)
    with pytest.raises(PolicyError, match="more than the 16 that may be held back or quarantined at once"):
        PolicyStore.load(policy_dir, quarantine=True)
