"""`tenantgate fmt` reads and writes a tenant's file only inside that tenant's directory, as the loader reads it.
Review finding: `tenants/acme/zz.cedar -> ../globex/g.cedar` made the operator's `fmt policies` rewrite globex's
file, and a link to any other file printed that file's first unexpected token."""

import shutil
from pathlib import Path

from tenantgate.cli.main import main

BUNDLED = Path(__file__).resolve().parents[3] / "policies"
UNFORMATTED = '@id("g")\npermit(principal,action,resource)   when {principal.roles.contains("globex-role")};\n'


def _policies(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED, root, ignore=shutil.ignore_patterns("tests"))
    (root / "tenants" / "globex").mkdir()
    (root / "tenants" / "globex" / "g.cedar").write_text(UNFORMATTED)
    return root


def test_fmt_does_not_rewrite_another_tenants_file_through_a_link(tmp_path, capsys):
    root = _policies(tmp_path)
    (root / "tenants" / "acme" / "zz.cedar").symlink_to("../globex/g.cedar")
    assert main(["fmt", str(root)]) == 3
    assert (root / "tenants" / "globex" / "g.cedar").read_text() == UNFORMATTED
    assert "zz.cedar: not formatted: resolves outside its tenant's directory" in capsys.readouterr().err


def test_fmt_does_not_quote_a_file_linked_from_a_tenants_directory(tmp_path, capsys):
    root = _policies(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text('db_password = "hunter2";\n')
    (root / "tenants" / "acme" / "leak.cedar").symlink_to(secret)
    assert main(["fmt", "--check", str(root / "tenants" / "acme" / "leak.cedar")]) == 3
    err = capsys.readouterr().err
    assert "resolves outside its tenant's directory" in err
    assert "=" not in err.replace("==", "")


def test_fmt_still_formats_links_within_a_tenant_and_linked_tenant_directories(tmp_path):
    root = _policies(tmp_path)
    (root / "tenants" / "globex" / "alias.cedar").symlink_to("g.cedar")
    source = tmp_path / "src" / "globex"
    shutil.move(root / "tenants" / "globex", source)
    (root / "tenants" / "globex").symlink_to(source)
    assert main(["fmt", str(root / "tenants" / "globex" / "alias.cedar")]) == 0
    assert (source / "g.cedar").read_text() != UNFORMATTED
