"""Settings: defaults, the Bearer prefix, and one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from bot.settings import Settings, describe_validation_error

REQUIRED = {
    "slack_bot_token": "xoxb-1",
    "slack_signing_secret": "s",
    "argo_server_url": "https://argo:2746",
    "s3_access_key": "a",
    "s3_secret_key": "b",
    "s3_bucket": "artifacts",
    "public_url": "https://bot.example.com",
    "webhook_secret": "0123456789abcdef",
}


def test_defaults_are_what_the_readme_promises() -> None:
    settings = Settings(_env_file=None, **REQUIRED)
    assert str(settings.slack_api_url) == "https://slack.com/api/"
    assert settings.slack_command == "/argo"
    assert settings.argo_namespace == "argo"
    assert settings.s3_region == "us-east-1"
    assert settings.database_url == "sqlite:///argo-chatops.db"
    assert settings.poll_interval_seconds == 30
    assert settings.presign_expiry_seconds == 86400
    assert (settings.host, settings.port) == ("0.0.0.0", 3000)
    assert settings.hook_url == "https://bot.example.com/hooks/argo"


@pytest.mark.parametrize(
    "token", ["Bearer abc.def", "bearer abc.def", "abc.def", " Bearer  abc.def "]
)
def test_argo_token_with_or_without_bearer_prefix(token: str) -> None:
    settings = Settings(_env_file=None, **REQUIRED, argo_token=token)
    assert settings.argo_token.get_secret_value() == "abc.def"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"presign_expiry_seconds": 8 * 24 * 3600}, "PRESIGN_EXPIRY_SECONDS"),
        ({"poll_interval_seconds": 0}, "POLL_INTERVAL_SECONDS"),
        ({"database_url": "mysql://x"}, "DATABASE_URL"),
        ({"public_url": "not a url"}, "PUBLIC_URL"),
        ({"webhook_secret": "short"}, "WEBHOOK_SECRET"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(override: dict, named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **{**REQUIRED, **override})
    line = describe_validation_error(caught.value)
    assert named in line and "\n" not in line


def test_serve_without_configuration_stops_with_one_clear_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-secret-value"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: SLACK_SIGNING_SECRET is required")
    assert "xoxb-secret-value" not in result.stderr


def test_the_vendored_argo_schema_is_the_shared_reference() -> None:
    """The demo ships a copy of Argo's schema; it must not drift from the reference."""
    from bot.demo import schema_path
    from tests.conftest import SHARED

    reference = SHARED / "argo" / "schema.json"
    assert reference.exists(), f"the shared reference material is missing at {reference}"
    assert schema_path().read_bytes() == reference.read_bytes()
