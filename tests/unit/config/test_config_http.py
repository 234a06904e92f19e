"""``[http]``: the AuthZEN HTTP API's settings, typed and validated like every other section."""

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


def _load(tmp_path, text, env=None):
    path = tmp_path / "tenantgate.toml"
    path.write_text(ISSUER + text)
    return config.load(path, env=env or {})


def test_the_http_api_is_off_by_default_and_binds_subjects_to_tokens(tmp_path):
    h = _load(tmp_path, "").http
    assert (h.listen, h.mode, h.pep_role, h.max_body_bytes) == ("", "user_token", "", 1_048_576)


def test_http_settings_load_from_the_file_and_the_environment(tmp_path):
    h = _load(tmp_path, '[http]\nlisten = "127.0.0.1:8080"\nmode = "trusted_pep"\npep_role = "pep"\n'
              'cert_file = "tls/http.crt"\nkey_file = "tls/http.key"\n',
              env={"TENANTGATE_HTTP_MAX_EVALUATIONS": "50"}).http
    assert (h.listen, h.mode, h.pep_role, h.max_evaluations) == ("127.0.0.1:8080", "trusted_pep", "pep", 50)
    assert h.cert_file == str(tmp_path / "tls" / "http.crt")  # resolved against the config file


@pytest.mark.parametrize("text,message", [
    ('[http]\nlisten = "8080"\n', "http.listen must be HOST:PORT"),
    ('[http]\nmode = "open"\n', "http.mode must be one of"),
    ('[http]\nmode = "trusted_pep"\n', "needs http.pep_role"),
    ('[http]\nmax_body_bytes = 0\n', "http.max_body_bytes must be > 0"),
    ('[http]\nmax_concurrent_requests = -1\n', "http.max_concurrent_requests must be > 0"),
    ('[http]\ncert_file = "a.crt"\n', "set together"),
    ('[http]\npublic_url = "https://pdp.example.com/?x=1"\n', "without query or fragment"),
    ('[http]\nlisten = 8080\n', "http.listen must be a string"),
    ('[http]\nport = 1\n', "unknown key"),
])
def test_unsafe_or_wrong_http_settings_are_refused_with_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)
