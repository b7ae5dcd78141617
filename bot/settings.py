"""Every setting the service reads, in one validated object.

Only the CLI entry point builds it from the environment; everything else receives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.policy import load_policy
from bot.routes import load_routes
from bot.slack_files import FileHosts

MAX_PRESIGN_EXPIRY_SECONDS = 7 * 24 * 3600  # S3 SigV4 refuses longer expiries


class Settings(BaseSettings):
    """Configuration of one argo-chatops replica."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Slack
    slack_bot_token: SecretStr
    slack_signing_secret: SecretStr
    slack_api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    slack_command: str = Field("/argo", pattern=r"^/[a-z0-9_\-]{1,31}$")
    # Socket Mode: an app-level token (xapp-…, scope connections:write) makes the bot open a
    # WebSocket to Slack instead of waiting for Slack's HTTP requests.
    slack_app_token: SecretStr | None = None

    # Argo Server
    argo_server_url: AnyHttpUrl
    argo_token: SecretStr = SecretStr("")
    argo_namespace: str = Field("argo", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    argo_ui_url: AnyHttpUrl | None = None
    argo_verify_tls: bool = True
    argo_notify_template: str = "argo-chatops-notify"
    argo_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0

    # S3 / MinIO
    s3_endpoint_url: AnyHttpUrl | None = None
    s3_access_key: SecretStr
    s3_secret_key: SecretStr
    s3_bucket: str = Field(min_length=3, max_length=63)
    s3_region: str = "us-east-1"

    # Exit hook
    public_url: AnyHttpUrl
    webhook_secret: SecretStr = Field(min_length=16)

    # State and timing
    database_url: str = "sqlite:///argo-chatops.db"
    poll_interval_seconds: Annotated[float, Field(ge=1, le=24 * 3600)] = 30.0
    # How often running runs' thread roots are refreshed (one Argo list call per cycle).
    progress_interval_seconds: Annotated[float, Field(ge=1, le=3600)] = 5.0
    presign_expiry_seconds: Annotated[int, Field(ge=60, le=MAX_PRESIGN_EXPIRY_SECONDS)] = 86400

    # Files from Slack (mentions with files, drop zones, the run modal)
    # Hosts that may receive the bot token to download a file: `host` (https only) or `host:port`.
    slack_file_hosts: Annotated[FileHosts, NoDecode] = FileHosts.parse(["files.slack.com"])
    max_upload_bytes: Annotated[int, Field(gt=0)] = 1024**3
    # YAML: channel → template, default parameters, allowed file types (see bot/routes.py).
    routes_file: Path | None = None

    # Access: YAML naming who may run which template where, who may stop, retry or resubmit
    # other people's runs, the admins, and rate limits (see bot/policy.py). Unset: the default
    # policy (anyone may run enabled templates; people control only their own runs).
    policy_file: Path | None = None

    # HTTP server
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 3000
    log_level: str = Field("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")
    log_format: Literal["json", "text"] = "json"

    @field_validator("argo_token", mode="after")
    @classmethod
    def _strip_bearer_prefix(cls, token: SecretStr) -> SecretStr:
        """Accept the token with or without the `Bearer ` prefix the Argo CLI prints."""
        raw = token.get_secret_value().strip()
        if raw.lower().startswith("bearer "):
            raw = raw[len("bearer ") :].strip()
        return SecretStr(raw)

    @field_validator("slack_app_token", "routes_file", "policy_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty value, as in a copied .env, means unset: `SLACK_APP_TOKEN=` is HTTP mode,
        not a bad token; `ROUTES_FILE=` is no drop zones, not the current directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("slack_file_hosts", mode="before")
    @classmethod
    def _parse_file_hosts(cls, value: object) -> object:
        """A comma-separated list in the environment, a list or FileHosts in code."""
        if isinstance(value, str):
            value = [item for item in value.split(",") if item.strip()]
        if isinstance(value, list | tuple):
            return FileHosts.parse(str(item) for item in value)
        return value

    @field_validator("routes_file", mode="after")
    @classmethod
    def _routes_file_is_valid(cls, path: Path | None) -> Path | None:
        """Validated at start-up, so a typo stops the service instead of the first drop."""
        load_routes(path)
        return path

    @field_validator("policy_file", mode="after")
    @classmethod
    def _policy_file_is_valid(cls, path: Path | None) -> Path | None:
        """Validated at start-up: a typo must stop the service, not let the wrong people in."""
        load_policy(path)
        return path

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if not url.startswith(("sqlite://", "postgresql://", "postgres://", "postgresql+")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return url

    @property
    def hook_url(self) -> str:
        return str(self.public_url).rstrip("/") + "/hooks/argo"

    @property
    def argo_base_url(self) -> str:
        return str(self.argo_server_url).rstrip("/")

    def argo_ui_link(self, namespace: str, name: str) -> str | None:
        if self.argo_ui_url is None:
            return None
        return f"{str(self.argo_ui_url).rstrip('/')}/workflows/{namespace}/{name}"


def describe_validation_error(error: Exception) -> str:
    """One clear line naming the first bad setting (never its value: it may be a secret)."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    parts = []
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"]).upper() or "settings"
        message = "is required" if item["type"] == "missing" else item["msg"]
        parts.append(f"{name} {message}")
    return "configuration error: " + "; ".join(parts)
