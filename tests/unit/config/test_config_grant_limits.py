"""grants.max_pending_per_operator: default 10, at least 1, settable in the file and the environment."""

import pytest

from tenantgate import config
from tenantgate.errors import ConfigError

ISSUER = """
[[tokens.issuers]]
issuer = "https://login.example.com/"
audiences = ["tenantgate"]
algorithms = ["RS256"]
jwks_file = "keys/jwks.json"
"""


def _write(tmp_path, text):
    path = tmp_path / "tenantgate.toml"
    path.write_text(text)
    return path


def test_max_pending_grants_per_operator_defaults_to_ten_and_can_be_set(tmp_path):
    assert config.load(_write(tmp_path, ISSUER), env={}).grants.max_pending_per_operator == 10
    assert config.load(_write(tmp_path, "[grants]\nmax_pending_per_operator = 3\n" + ISSUER),
                       env={}).grants.max_pending_per_operator == 3
    assert config.load(_write(tmp_path, ISSUER), env={"TENANTGATE_GRANTS_MAX_PENDING_PER_OPERATOR": "25"}
                       ).grants.max_pending_per_operator == 25


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_pending_grants_per_operator_must_be_at_least_one(tmp_path, value):
    # 0 would refuse every request (or, read as "no limit", reopen the flood): neither is a setting.
    with pytest.raises(ConfigError, match=r"grants\.max_pending_per_operator must be >= 1"):
        config.load(_write(tmp_path, f"[grants]\nmax_pending_per_operator = {value}\n" + ISSUER), env={})
    with pytest.raises(ConfigError, match=r"grants\.max_pending_per_operator must be >= 1"):
        config.load(_write(tmp_path, ISSUER), env={"TENANTGATE_GRANTS_MAX_PENDING_PER_OPERATOR": value})
