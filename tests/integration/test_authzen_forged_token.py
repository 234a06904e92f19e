"""A forged token at the AuthZEN edge is verified once, not twice.

Review finding (LOW, left open in session 16): the edge looked at the token before reading the body, then
decide() verified it again to say why (and audit it): two signature checks for every forged request.
"""

import httpx

from support.authzen import bearer, evaluation, http_section
from support.issuers import TestIssuer
from support.server import BUNDLED_POLICIES, running_server, write_config
from tenantgate import config
from tenantgate.identity.verifier import JwtVerifier


def test_a_forged_token_is_verified_once_and_refused_with_its_reason(tmp_path, monkeypatch):
    issuer = TestIssuer(tmp_path)
    path = write_config(tmp_path, issuer.settings, policies=BUNDLED_POLICIES, extra=http_section())
    forged = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])[:-8] + "AAAAAAAA"
    calls = []
    real = JwtVerifier.verify

    def counting(self, token):
        calls.append(1)
        return real(self, token)

    monkeypatch.setattr(JwtVerifier, "verify", counting)
    with running_server(config.load(path, env={})) as (_address, app):
        answer = httpx.post(f"http://127.0.0.1:{app.http_port}/access/v1/evaluation", headers=bearer(forged),
                            json=evaluation("alice", "read"), timeout=10)
    assert answer.status_code == 401 and "token_invalid" in answer.text
    assert len(calls) == 1
