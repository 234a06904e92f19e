"""`tenantgate test` states roles as a production token would: an absent `roles` key mints no roles claim
(entity data may give roles), `roles: []` an empty claim (entity data may not widen it). Review finding: the
runner minted no claim for both, so a suite could not test what production does with `roles: []`."""

import jwt

from tenantgate.config import DevIssuerSettings
from tenantgate.identity import DevIssuer


def _claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def test_the_dev_issuer_mints_an_empty_roles_claim_only_when_asked(tmp_path):
    issuer = DevIssuer(DevIssuerSettings(enabled=True, key_dir=str(tmp_path / "keys")))
    issuer.ensure_keys()
    assert "roles" not in _claims(issuer.mint(tenant="acme", subject="adam"))
    assert _claims(issuer.mint(tenant="acme", subject="adam", roles=[]))["roles"] == []
    assert _claims(issuer.mint(tenant="acme", subject="adam", roles=["viewer"]))["roles"] == ["viewer"]
