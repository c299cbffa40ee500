"""Settings, read once at start-up from the environment and an optional ``.env`` (DESIGN §5).

Prefix ``TIPLINE_``, nested with ``__`` (``TIPLINE_TELEGRAM__TOKEN``). Lists are comma-separated.
A missing or malformed setting stops start-up with one line naming it (``SettingsError``); secrets
are ``SecretStr`` and print as ``**********``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TIPLINE_"


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [value]
    return value


CommaList = Annotated[list[str], NoDecode]
CommaIntList = Annotated[list[int], NoDecode]


class TelegramSettings(BaseModel):
    token: SecretStr | None = None
    api_url: str = "https://api.telegram.org"
    webhook_secret: SecretStr | None = None
    mode: Literal["webhook", "polling"] | None = None  # default depends on PUBLIC_URL

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram accepts 1-256 characters of A-Z a-z 0-9 _ - for secret_token.
        if value is not None:
            raw = value.get_secret_value()
            if not (1 <= len(raw) <= 256) or not all(c.isascii() and (c.isalnum() or c in "_-") for c in raw):
                raise ValueError("must be 1-256 characters of letters, digits, _ or -")
        return value


class TwilioSettings(BaseModel):
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    from_number: str | None = None
    api_url: str = "https://api.twilio.com"
    # On by default: Tipline promises Twilio keeps nothing. Off, Twilio keeps bodies and numbers in its logs.
    redact: bool = True

    @model_validator(mode="after")
    def _all_or_nothing(self) -> TwilioSettings:
        given = [self.account_sid, self.auth_token, self.from_number]
        if any(given) and not all(given):
            missing = [n for n, v in zip(("ACCOUNT_SID", "AUTH_TOKEN", "FROM_NUMBER"), given) if not v]
            raise ValueError(f"SMS needs all three Twilio settings; missing {', '.join('TWILIO__' + m for m in missing)}")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.account_sid and self.auth_token and self.from_number)


class OfficerSettings(BaseModel):
    telegram_chat_ids: CommaIntList = Field(default_factory=list)
    # Only these Telegram users may give officer commands or press alert buttons in the officer
    # groups; others in the group are ignored. Unset, commands are refused (fail closed) unless
    # ``every_member_is_officer`` says plainly that the whole group may act on tips.
    telegram_user_ids: CommaIntList = Field(default_factory=list)
    every_member_is_officer: bool = False
    sms_numbers: CommaList = Field(default_factory=list)
    language: Literal["en", "fr"] = "en"
    full_details: bool = False  # put tip details in alerts (otherwise officers ask for them)

    _split = field_validator("telegram_chat_ids", "telegram_user_ids", "sms_numbers", mode="before")(_split_commas)


class RetentionSettings(BaseModel):
    closed_tip_days: float = Field(90, gt=0)  # closed tips are deleted this long after closing
    delivered_outbox_days: float = Field(7, gt=0)
    # Provider message ids, as keyed hashes with a time and nothing else: a replay is refused this long.
    processed_id_days: float = Field(365, gt=0)
    # The replies given to a message, kept for the provider's retries (minutes in practice).
    cached_reply_hours: float = Field(2, gt=0, le=48)


class PictureSettings(BaseModel):
    """Pictures sent with a report (bot.pictures): how many, how big, how long a fetch may take."""

    per_report: int = Field(10, ge=0)  # 0 turns pictures off: each is answered "describe it in words"
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024)  # one picture as sent, before it is re-encoded
    max_pixels: int = Field(40_000_000, ge=10_000, le=80_000_000)  # width x height; beyond it a file is refused unread (a bomb)
    max_side: int = Field(2048, ge=64)  # the kept copy is scaled down to this longest side
    fetch_timeout_seconds: float = Field(8, gt=0, le=14)  # all pictures of one message; Twilio waits 15 s


class ServerSettings(BaseModel):
    """Limits of ``serve``'s HTTP server against slow or idle clients (slowloris, stalled bodies)."""

    header_timeout_seconds: float = Field(10, gt=0)  # complete request headers within this, or the connection closes
    body_timeout_seconds: float = Field(10, gt=0)  # the whole body within this once it is read, or 408
    keep_alive_timeout_seconds: float = Field(5, gt=0)  # an idle kept-alive connection closes after this
    concurrency_limit: int = Field(100, ge=1)  # open connections (or requests) beyond this are answered 503
    # Bearer token for GET /healthz/detail (schema, channels, outbox counts). Unset: the details
    # are not served over HTTP at all (``python main.py outbox`` shows them on the machine);
    # /healthz itself says only ok / degraded / unavailable, to anyone.
    health_token: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Path("./data")
    keys_file: Path | None = None
    keyring: SecretStr | None = None  # the key ring's JSON itself, for hosts that inject secrets as variables
    # postgresql://user:password@host/db for several instances on one database; unset: SQLite in
    # data_dir. A secret: it may hold the password.
    database_url: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    draft_timeout_minutes: float = Field(30, gt=0)
    # After CHECK showed an officer's reply, what the person writes for this long answers it.
    answer_window_minutes: float = Field(30, gt=0)
    # Urgent alerts sent at once per sender per hour; later urgent reports are filed and flagged.
    urgent_alerts_per_hour: int = Field(3, ge=1)
    support_line: str | None = None
    # Officers read times in this zone (IANA name) in /list, /show and the CLI.
    timezone: str = "America/Toronto"
    # Failed receipt look-ups in an hour, all senders together; reaching it pauses look-ups for an
    # hour and notifies officers (on top of the per-sender lock-out).
    receipt_failures_per_hour: int = Field(200, ge=1)
    # Tipster pseudonyms use a pepper that changes every this many hours (epochs start at 00:00 UTC
    # for 24); a pepper is destroyed when its epoch is two behind, so old pseudonyms are unlinkable.
    # Fractions are allowed (down to 3 minutes) so a test set-up can watch it rotate.
    pseudonym_epoch_hours: float = Field(24, ge=0.05)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    officers: OfficerSettings = Field(default_factory=OfficerSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    pictures: PictureSettings = Field(default_factory=PictureSettings)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for local tests)")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as America/Toronto") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def database(self) -> str | None:
        """The PostgreSQL URL, or None for SQLite in the data directory."""
        return self.database_url.get_secret_value() if self.database_url else None

    @property
    def resolved_keys_file(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def telegram_mode(self) -> str:
        return self.telegram.mode or ("webhook" if self.public_url else "polling")


class SettingsError(Exception):
    """One line per problem, naming the environment variable."""


def _variable(location: tuple[object, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in location if not isinstance(part, int))


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"setting {_variable(error['loc'])}: {message}")
        raise SettingsError("\n".join(lines)) from None
