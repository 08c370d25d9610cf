"""Credentials never reach a log line: URLs' userinfo and query values, tokens."""

from __future__ import annotations

import string

import pytest
import structlog
from hypothesis import assume, given
from hypothesis import strategies as st

from runtime.logging import configure_logging
from tasks.redact import MASK, redact, redact_url

# Secrets that cannot occur by chance in the rest of the text.
secrets = st.text(alphabet=string.ascii_letters + string.digits + "-._~", min_size=6).map(
    lambda s: "S3cr" + s
)
hosts = st.sampled_from(["127.0.0.1:8080", "agent.internal", "[::1]:9000", "example.org"])
keys = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)


@given(user=st.text(alphabet=string.ascii_letters, min_size=1), secret=secrets, host=hosts)
def test_userinfo_never_survives(user: str, secret: str, host: str) -> None:
    text = f"agent 'ref' at https://{user}:{secret}@{host}/v1/turns did not answer"

    redacted = redact(text)

    assert secret not in redacted
    assert f"{MASK}@{host}" in redacted


@given(key=keys, secret=secrets, other=secrets, host=hosts)
def test_query_values_never_survive_and_keys_stay(
    key: str, secret: str, other: str, host: str
) -> None:
    text = f"GET http://{host}/api?{key}={secret}&page={other}#top failed"

    redacted = redact(text)

    assert secret not in redacted and other not in redacted
    assert f"{key}={MASK}" in redacted and "#top failed" in redacted


@given(secret=secrets, name=st.sampled_from(["password", "access_token", "api_key", "token"]))
def test_assignments_and_bearer_tokens_are_masked(secret: str, name: str) -> None:
    text = f'{name}={secret} then "{name}": "{secret}" and Authorization: Bearer {secret}'

    assert secret not in redact(text)


def test_matrix_access_tokens_are_masked() -> None:
    assert redact("token syt_Ym90_abcDEF_123 rejected") == "token syt_*** rejected"


@given(st.text())
def test_redaction_is_total_and_idempotent(text: str) -> None:
    once = redact(text)

    assert redact(once) == once


@given(st.text(alphabet=string.ascii_letters + string.digits + " .,!?'()-\n"))
def test_text_without_credentials_is_unchanged(text: str) -> None:
    lowered = text.lower()
    assume("bearer" not in lowered and "syt_" not in lowered and "syd_" not in lowered)

    assert redact(text) == text


def test_a_url_that_cannot_be_parsed_keeps_only_its_scheme() -> None:
    assert redact_url("http://u:p@[::1/x") == f"http://{MASK}"


@pytest.mark.usefixtures("restore_logging")
def test_the_log_pipeline_masks_credentials_in_every_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    log = structlog.get_logger("test")

    log.warning("platform.failed", detail="at http://svc:hunter2@10.0.0.7/x?token=k3y")
    try:
        raise RuntimeError("GET http://svc:hunter2@10.0.0.7/ failed")
    except RuntimeError:
        log.exception("crashed")

    output = capsys.readouterr().err
    assert "10.0.0.7" in output
    assert "hunter2" not in output and "k3y" not in output
