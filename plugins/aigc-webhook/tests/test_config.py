"""Configuration from the environment, retry schedule, and URLs shown without secrets."""

from __future__ import annotations

import pytest
from aigc_webhook import DeliveryError, WebhookConfig, WebhookConfigError, post_json
from aigc_webhook.config import redact
from http_endpoint import Endpoint


def test_no_url_means_no_webhook() -> None:
    assert WebhookConfig.from_env({}) is None
    assert WebhookConfig.from_env({"AIGC_WEBHOOK_URL": "  ", "AIGC_WEBHOOK_TIMEOUT": "abc"}) is None


def test_defaults_and_settings() -> None:
    assert WebhookConfig.from_env({"AIGC_WEBHOOK_URL": "https://h/x"}) == WebhookConfig("https://h/x")
    config = WebhookConfig.from_env({"AIGC_WEBHOOK_URL": "http://h:8080/x", "AIGC_WEBHOOK_ROWS": "TRUE",
                                     "AIGC_WEBHOOK_TIMEOUT": "2.5", "AIGC_WEBHOOK_RETRIES": "0",
                                     "AIGC_WEBHOOK_BACKOFF": "1"})
    assert config == WebhookConfig("http://h:8080/x", rows=True, timeout=2.5, retries=0, backoff=1.0)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("URL", "ftp://h/x", "AIGC_WEBHOOK_URL must be an http:// or https:// URL with a host, got 'ftp://h/x'"),
        ("URL", "file:///etc/passwd", "must be an http:// or https:// URL"),
        ("URL", "http://", "must be an http:// or https:// URL with a host"),
        ("URL", "http://h:99999/x", "AIGC_WEBHOOK_URL is not a valid URL: Port out of range"),
        ("ROWS", "maybe", "AIGC_WEBHOOK_ROWS must be 1 or 0 (or true/false, yes/no), got 'maybe'"),
        ("TIMEOUT", "0", "AIGC_WEBHOOK_TIMEOUT must be between 0.001 and 300, got '0'"),
        ("RETRIES", "1.5", "AIGC_WEBHOOK_RETRIES must be a whole number, got '1.5'"),
        ("RETRIES", "11", "AIGC_WEBHOOK_RETRIES must be between 0 and 10, got '11'"),
        ("BACKOFF", "-1", "AIGC_WEBHOOK_BACKOFF must be between 0 and 30, got '-1'"),
    ],
)
def test_bad_settings_name_the_variable(variable: str, value: str, expected: str) -> None:
    env = {"AIGC_WEBHOOK_URL": "http://h/x", f"AIGC_WEBHOOK_{variable}": value}
    with pytest.raises(WebhookConfigError) as info:
        WebhookConfig.from_env(env)
    assert expected in str(info.value)


def test_backoff_doubles_and_is_capped() -> None:
    config = WebhookConfig("http://h/x", retries=8, backoff=0.5, timeout=1)
    assert [config.sleep_before(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert config.longest_delivery() == 9 * 1 + 0.5 + 1 + 2 + 4 + 8 + 16 + 30 + 30


def test_shown_url_has_no_credentials_query_or_fragment() -> None:
    assert redact("https://user:pw@hooks.example.com:8443/a/b?token=x#f") == "https://hooks.example.com:8443/a/b"
    assert redact("http://[::1]:9/x?k=v") == "http://[::1]:9/x"


def test_post_json_waits_between_attempts_and_gives_up(endpoint: Endpoint) -> None:
    endpoint.statuses = [503, 502, 500, 429]
    waits: list[float] = []
    config = WebhookConfig(endpoint.url(), retries=3, backoff=0.5)
    with pytest.raises(DeliveryError) as info:
        post_json(config, b"{}", "test", sleep=waits.append)
    assert str(info.value) == "gave up after 4 attempts: HTTP 429 Too Many Requests"
    assert info.value.attempts == 4 and waits == [0.5, 1.0, 2.0] and len(endpoint.requests) == 4


def test_post_json_returns_the_attempts_it_took(endpoint: Endpoint) -> None:
    endpoint.statuses = [500]
    assert post_json(WebhookConfig(endpoint.url(), backoff=0), b'{"a": 1}', "test") == 2
    assert endpoint.requests[1].body == {"a": 1} and endpoint.requests[1].headers["X-Aigc-Event"] == "test"
