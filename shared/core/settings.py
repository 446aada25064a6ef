"""Every setting of the fleet, typed and read from the environment (and an optional `.env` file).

This module is the only place configuration comes from. Conventional variables keep their usual names
(`DATABASE_URL`, `REDIS_URL`, `SENTRY_DSN`); everything else is prefixed `FLEET_`, with `__` for nesting
(`FLEET_POOL__MAX_SIZE=3`, `FLEET_WORKERS__INBOUND__CONCURRENCY=4`).
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerType(StrEnum):
    """The four kinds of worker process; each consumes exactly one queue (`shared.core.topology.QUEUE_OF_WORKER`:
    `keys` consumes `maintenance`, which also carries the health jobs)."""

    INBOUND = "inbound"
    YCLIENTS = "yclients"
    KEYS = "keys"
    BACKUPS = "backups"


class WorkerTypeSettings(BaseModel):
    """Process count and time limits of one worker type.

    The limits must nest: soft < hard < Redis visibility timeout, or the broker re-delivers a task that is
    still running (docs/reliability.md).
    """

    concurrency: int = Field(ge=1, le=64, description="processes of this worker type")
    soft_time_limit: int = Field(gt=0, description="seconds; the task gets SoftTimeLimitExceeded")
    time_limit: int = Field(gt=0, description="seconds; the child is killed")
    visibility_timeout: int = Field(gt=0, description="seconds before Redis re-delivers an unacked task")
    max_tasks_per_child: int = Field(
        default=1000, ge=1, description="a child process is replaced after this many tasks (bounds slow leaks)"
    )

    @model_validator(mode="after")
    def _limits_nest(self) -> WorkerTypeSettings:
        if not self.soft_time_limit < self.time_limit < self.visibility_timeout:
            raise ValueError(
                "time limits must satisfy soft_time_limit < time_limit < visibility_timeout, got "
                f"{self.soft_time_limit} < {self.time_limit} < {self.visibility_timeout}"
            )
        return self


class InboundWorkerSettings(WorkerTypeSettings):
    concurrency: int = Field(default=2, ge=1, le=64)
    soft_time_limit: int = 50
    time_limit: int = 60
    visibility_timeout: int = 300  # a message lost with a killed worker is re-delivered within 5 minutes
    # A child replaced after its last task leaves a gap: the message Celery handed it waits until the main process
    # notices the exit and forks a replacement (1-5 s measured, its maintain timer runs every 5 s). At 1,000 the
    # slowest 1% at half saturation waited 150-250 ms for that; leaks stay bounded by worker_max_memory_per_child.
    max_tasks_per_child: int = Field(
        default=10_000, ge=1, description="a child process is replaced after this many tasks (bounds slow leaks)"
    )


class YClientsWorkerSettings(WorkerTypeSettings):
    concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="processes of this worker type; syncs may take all but one, kept for CRM writes (at 1, none is)",
    )
    soft_time_limit: int = 1500
    time_limit: int = 1800
    visibility_timeout: int = 2400


class KeysWorkerSettings(WorkerTypeSettings):
    concurrency: int = Field(default=1, ge=1, le=64)
    soft_time_limit: int = 240
    time_limit: int = 300
    visibility_timeout: int = 600


class BackupsWorkerSettings(WorkerTypeSettings):
    concurrency: int = Field(default=1, ge=1, le=64)
    soft_time_limit: int = 3000
    time_limit: int = 3600
    visibility_timeout: int = 4500


class WorkersSettings(BaseModel):
    """Per worker type; a partial override (one variable) keeps the other defaults of that type."""

    inbound: InboundWorkerSettings = InboundWorkerSettings()
    yclients: YClientsWorkerSettings = YClientsWorkerSettings()
    keys: KeysWorkerSettings = KeysWorkerSettings()
    backups: BackupsWorkerSettings = BackupsWorkerSettings()

    def of(self, worker_type: WorkerType) -> WorkerTypeSettings:
        return getattr(self, worker_type.value)


class PoolSettings(BaseModel):
    """One psycopg pool per process; these bound it (docs/reliability.md)."""

    min_size: int = Field(default=1, ge=0, description="connections each process keeps open")
    max_size: int = Field(default=3, ge=1, description="connections each process may hold (counts in the budget)")
    timeout: float = Field(default=10.0, gt=0, description="seconds to wait for a free connection")
    max_lifetime: float = Field(default=3600.0, gt=0, description="seconds before a connection is replaced")
    max_idle: float = Field(default=600.0, gt=0, description="seconds an idle connection above min_size is kept")
    statement_timeout_ms: int = Field(default=30_000, ge=0, description="0 disables the limit")
    connect_timeout: int = Field(default=5, ge=1, description="seconds to connect to PostgreSQL")
    check_idle_seconds: float = Field(
        default=2.0, ge=0, description="a connection not borrowed for longer is checked before use (0: every time)"
    )
    pooler: Literal["none", "pgbouncer"] = Field(
        default="none",
        description="`pgbouncer`: DATABASE_URL is PgBouncer in transaction mode (no prepared statements, no"
        " start-up options; set statement_timeout on the role)",
    )
    session_url: SecretStr | None = Field(
        default=None,
        description="with a pooler: PostgreSQL itself, or a session-mode PgBouncer database, for work that keeps"
        " one server session (the per-chat answering lock, migrations, backups)",
    )
    pooler_server_connections: int = Field(
        default=10, ge=1, description="with a pooler: its server pool for the fleet's database (default_pool_size)"
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> PoolSettings:
        if self.min_size > self.max_size:
            raise ValueError(f"pool min_size {self.min_size} exceeds max_size {self.max_size}")
        return self

    @model_validator(mode="after")
    def _pooler_has_a_session_path(self) -> PoolSettings:
        if self.pooler != "none" and self.session_url is None:
            raise ValueError(
                "FLEET_POOL__POOLER needs FLEET_POOL__SESSION_URL: the per-chat answering lock, migrations and"
                " backups keep one server session, which a transaction-mode pooler does not give"
            )
        return self


class BudgetSettings(BaseModel):
    """The fleet's share of PostgreSQL connections and who else takes from it."""

    limit: int = Field(default=25, ge=1, description="connections the fleet may hold at most")
    beat: int = Field(default=1, ge=0, description="pool max of the beat process")
    flower: int = Field(default=0, ge=0, description="Flower reads Redis only; raise if a plugin needs SQL")
    health: int = Field(default=1, ge=0, description="pool max of the health service")
    reserved: int = Field(default=4, ge=0, description="for migrations, the CLI and an operator's psql")


class InboundSettings(BaseModel):
    """How chat messages are answered."""

    burst_window_seconds: float = Field(default=2.0, ge=0, le=60, description="quiet time before answering")
    ready_depth: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="messages dealt out ahead of the inbound workers; a quiet salon waits behind at most these"
        " and one message of each busy salon",
    )
    route_batch: int = Field(default=500, ge=1, le=10_000, description="messages the router moves per step")
    max_attempts: int = Field(default=3, ge=1, description="answering attempts before a dead letter")
    sent_at_max_age_hours: float = Field(
        default=48.0, gt=0, description="an older sent_at is replaced by the receive time (original kept)"
    )
    sent_at_max_ahead_seconds: float = Field(
        default=300.0, ge=0, description="a sent_at further in the future is replaced by the receive time"
    )
    max_text_chars: int = Field(default=16_384, ge=1, description="longest message text accepted")
    lock_timeout_ms: int = Field(default=10_000, ge=100, description="wait for another worker's drain")
    sweep_grace_seconds: float = Field(default=30.0, ge=1, description="age after which the sweep re-drives")
    slot_days_ahead: int = Field(default=7, ge=1, le=60, description="days ahead the assistant offers slots")
    slots_offered: int = Field(default=8, ge=1, le=30, description="free slots offered at once")
    reminder_evening_time: str = Field(
        default="19:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="salon-time evening reminder, day before",
    )
    reminder_hours_before: float = Field(default=2.0, gt=0, le=24, description="the second reminder, hours before")
    handover_minutes: int = Field(
        default=180, ge=5, le=7 * 24 * 60, description="a chat handed to a person gets no automatic answers this long"
    )


class GatewaySettings(BaseModel):
    """The WhatsApp gateway that delivers replies."""

    send_url: str = Field(default="http://127.0.0.1:3000/send", description="where replies are POSTed")
    token: SecretStr | None = Field(default=None, description="Bearer token for the gateway (required in production)")
    timeout_seconds: float = Field(default=10.0, gt=0, description="seconds per delivery request")
    max_part_chars: int = Field(default=4096, ge=100, description="longer replies are split at paragraph breaks")
    max_attempts: int = Field(default=8, ge=1, description="delivery attempts before a dead letter")
    lease_seconds: float = Field(default=120.0, gt=0, description="a claimed reply is re-sent after this")
    retry_base_seconds: float = Field(default=5.0, gt=0, description="first retry delay; doubles, capped at 300")


class AlertSettings(BaseModel):
    """Alerts to a Telegram chat (Bot API sendMessage) besides Sentry; off until a token and a chat are set."""

    telegram_bot_token: SecretStr | None = Field(default=None, description="the bot's token from @BotFather")
    telegram_chat_id: str | None = Field(
        default=None, description="the chat, group (-100...) or @channel that receives the alerts"
    )
    telegram_api_url: str = Field(default="https://api.telegram.org", description="the Bot API's address")
    timeout_seconds: float = Field(default=10.0, gt=0, description="seconds per sendMessage request")
    max_attempts: int = Field(default=20, ge=1, description="tries of one alert before it is given up")
    retry_base_seconds: float = Field(default=10.0, gt=0, description="first retry delay; doubles, capped at 900")

    @property
    def enabled(self) -> bool:
        return bool(self.telegram_bot_token and self.telegram_bot_token.get_secret_value() and self.telegram_chat_id)


class KeysSettings(BaseModel):
    """WhatsApp key maintenance and session health."""

    idle_days: dict[str, int] = Field(
        default_factory=lambda: {"session": 30, "sender-key": 30, "lid-mapping": 30, "identity-key": 60},
        description="days without an update before an idle-only key type may be deleted",
    )
    batch_size: int = Field(default=5000, ge=1, le=100_000, description="keys deleted by the first statement")
    batch_target_ms: float = Field(
        default=50.0, gt=0, description="a batch quicker than half this grows (x2), one slower than this shrinks (/2)"
    )
    max_batch_size: int = Field(default=100_000, ge=1, description="the largest a batch grows")
    time_budget_seconds: float | None = Field(default=None, gt=0, description="default: soft time limit - 30 s")
    warning_after_hours: float = Field(default=24.0, gt=0, description="session not updated for this long: warning")
    unhealthy_after_hours: float = Field(default=48.0, gt=0, description="session not updated for this long: unhealthy")
    expired_share_unhealthy: float = Field(
        default=0.5, gt=0, le=1, description="share of expired keys that is unhealthy"
    )
    bloat_threshold: int = Field(default=5000, ge=1, description="keys per company above which it is bloated")


class YClientsSettings(BaseModel):
    """The YClients API and how the sync uses it (limits are the API's documented ones, per IP)."""

    base_url: str = Field(default="https://api.yclients.com/api/v1", description="the API's base URL")
    partner_token: SecretStr | None = Field(default=None, description="partner (Bearer) token")
    user_token: SecretStr | None = Field(default=None, description="user token of the salons' account")
    company_ids: list[int] = Field(
        default_factory=list,
        description="the salons served: the sync keeps them current; only they get a lane (fair turns) in the router",
    )
    requests_per_second: int = Field(default=5, ge=1, description="fleet-wide limit (the API counts per IP)")
    requests_per_minute: int = Field(default=200, ge=1, description="fleet-wide limit (the API counts per IP)")
    timeout_seconds: float = Field(
        default=30.0, gt=0, description="seconds one read (or connect, or write) of an API request may wait"
    )
    request_deadline_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "a whole API request (connect, send, every byte of the answer) not done within this is cut and tried"
            " again (an answer dripping a few bytes a second defeats the per-read timeout)"
        ),
    )
    max_attempts: int = Field(default=6, ge=1, description="tries per request (rate limits, 5xx, network)")
    retry_initial_seconds: float = Field(default=1.0, gt=0, description="first backoff; doubles, with jitter")
    retry_max_wait_seconds: float = Field(default=30.0, gt=0, description="longest backoff between tries")
    page_size: int = Field(default=200, ge=1, le=200, description="the API's maximum for clients is 200")
    schedule_days_ahead: int = Field(default=14, ge=1, le=90, description="days of staff schedules kept")
    records_days_back: int = Field(default=30, ge=0, description="records window: days back")
    records_days_ahead: int = Field(default=90, ge=1, description="records window: days ahead")
    incremental_overlap_minutes: int = Field(default=10, ge=0, description="re-read records changed this early")
    stale_after_hours: float = Field(default=36.0, gt=0, description="a sync older than this is stale")
    max_delete_share: float = Field(
        default=0.3, gt=0, le=1, description="a run that would mark more of an entity deleted is refused"
    )
    mass_delete_min_rows: int = Field(default=5, ge=1, description="below this many rows the share is not judged")
    max_pages: int = Field(default=1000, ge=1, description="page cap of a walk whose answer has no total_count")
    run_deadline_seconds: float = Field(default=1200.0, gt=0, description="a walk fails past this (soft limit 1500)")
    write_bookings: bool = Field(
        default=True, description="chat bookings, moves and cancellations go to YClients (for company_ids, with tokens)"
    )
    push_lease_seconds: float = Field(default=60.0, gt=0, description="a claimed CRM operation is retried after this")
    push_max_attempts: int = Field(default=8, ge=1, description="attempts at one CRM operation before giving up")
    push_retry_base_seconds: float = Field(default=5.0, gt=0, description="first CRM retry delay; doubles")
    push_retry_max_seconds: float = Field(default=300.0, gt=0, description="longest delay between CRM attempts")
    webhook_secret: SecretStr | None = Field(
        default=None,
        description=(
            "the old fleet-wide webhook secret: outside production only, for salons without a secret of their own"
            " (`fleet webhook-secret set`); refused in production"
        ),
    )
    webhook_secret_grace_hours: float = Field(
        default=24.0, ge=0, description="`fleet webhook-secret rotate`: the old secret stays valid this long"
    )
    webhook_reads_per_minute: int = Field(
        default=30, ge=1, description="targeted syncs webhooks may start per salon per minute; the rest wait a sweep"
    )
    webhook_crm_wait_seconds: float = Field(
        default=30.0, gt=0, description="a record's webhook waits this long while a CRM write of it is pending"
    )
    webhook_lease_seconds: float = Field(
        default=60.0, gt=0, description="a claimed webhook event is retried after this"
    )
    webhook_max_attempts: int = Field(default=6, ge=1, description="attempts at one webhook event before giving up")
    webhook_retry_base_seconds: float = Field(default=1.0, gt=0, description="first webhook retry delay; doubles")
    webhook_retry_max_seconds: float = Field(default=120.0, gt=0, description="longest delay between webhook attempts")

    def writes_to(self, company_id: int) -> bool:
        """Chat bookings reach YClients where the fleet has the tokens and keeps the salon in sync."""
        return self.write_bookings and self.partner_token is not None and company_id in self.company_ids


class ReplicaSettings(BaseModel):
    """An optional streaming replica for reads that tolerate a few seconds of lag (docs/deployment.md)."""

    url: SecretStr | None = Field(
        default=None, description="the replica's PostgreSQL URL; unset: every read on the primary"
    )
    max_lag_seconds: float = Field(default=5.0, gt=0, description="a replica further behind is skipped")
    check_seconds: float = Field(
        default=5.0, ge=0, description="how often a process re-measures the lag (0: every read)"
    )
    connect_timeout: int = Field(
        default=2, ge=1, description="seconds to reach the replica before reading from the primary"
    )
    pool_max_size: int = Field(
        default=1, ge=1, description="replica connections per process (count in the replica's max_connections)"
    )


class ModelSettings(BaseModel):
    """The language-model assistant (`FLEET_ASSISTANT=shared.assistant.model:ModelAssistant`): a chat-completions
    API with tool calling (a hosted model, or llama.cpp, Ollama or vLLM serving the same protocol). Salons not
    listed in `company_ids`, and every turn the model cannot answer in time and within its walls, are answered
    by the rule-based assistant (docs/assistant.md)."""

    base_url: str = Field(default="https://api.openai.com/v1", description="the chat-completions API's base URL")
    api_key: SecretStr | None = Field(default=None, description="the API key (None: every salon stays rule-based)")
    model: str = Field(default="gpt-4o-mini", min_length=1, description="the model name the API knows")
    company_ids: list[int] = Field(default_factory=list, description="salons answered by the model")
    turn_deadline_seconds: float = Field(
        default=8.0, gt=0, le=40, description="a turn past this is answered by the rule-based assistant"
    )
    max_tool_rounds: int = Field(default=4, ge=1, le=10, description="model calls per turn (each after tool results)")
    max_completion_tokens: int = Field(default=400, ge=16, description="tokens the model may write per call")
    max_reply_chars: int = Field(default=1000, ge=100, description="a longer reply is not sent (the fallback is)")
    daily_tokens_per_salon: int = Field(
        default=200_000, ge=0, description="a salon past this many tokens today is answered by the rules"
    )
    fallback_warning_share: float = Field(
        default=0.3, gt=0, le=1, description="a salon whose fallbacks today pass this share is a health warning"
    )
    fallback_warning_min_turns: int = Field(
        default=10, ge=1, description="turns a salon needs today before its fallback share is judged"
    )

    def answers(self, company_id: int) -> bool:
        return self.api_key is not None and company_id in self.company_ids


class HealthSettings(BaseModel):
    """The health service and the thresholds it judges by."""

    address: str = Field(
        default="127.0.0.1",
        description="the health service's address (in production, anything but loopback needs FLEET_HEALTH__TOKEN)",
    )
    port: int = Field(default=8088, ge=1, le=65535, description="the health service's port")
    token: SecretStr | None = Field(
        default=None,
        description="if set, requests need `Authorization: Bearer <token>` (production: 16 characters or more)",
    )
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a request (headers and body) not received in full within this is cut off"
    )
    max_body_bytes: int = Field(
        default=256 * 1024,
        ge=1,
        le=256 * 1024,
        description="a larger request body is refused (413) before it is read; at most the webhooks' 256 KiB",
    )
    max_connections: int = Field(
        default=64, ge=2, description="connections one listener holds at once; more are refused (503 or closed)"
    )
    webhook_address: str = Field(
        default="0.0.0.0",  # noqa: S104  (webhooks come from YClients and carry their own secret)
        description="the public webhook listener's address, used only with FLEET_HEALTH__WEBHOOK_PORT",
    )
    webhook_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="if set, YClients webhooks are taken only on this port and /health and /metrics only on PORT",
    )
    queue_warning: int = Field(default=100, ge=1, description="messages waiting in one queue")
    queue_unhealthy: int = Field(default=1000, ge=1, description="messages waiting in one queue: unhealthy")
    heartbeat_unhealthy_seconds: float = Field(default=300.0, gt=0, description="beat or workers silent")
    backup_warning_hours: float = Field(default=26.0, gt=0, description="newest verified backup older: warning")
    backup_unhealthy_hours: float = Field(default=50.0, gt=0, description="newest verified backup older: unhealthy")
    outbox_stuck_minutes: float = Field(default=10.0, gt=0, description="a reply pending longer is stuck")
    crm_stuck_minutes: float = Field(default=30.0, gt=0, description="a booking not in YClients after this is stuck")
    dead_letters_warning_per_day: int = Field(default=20, ge=1, description="dead letters a day: warning")
    pool_report_ttl_seconds: int = Field(default=180, ge=10, description="a process's stats expire after this")
    metrics_directory: Path | None = Field(
        default=None,
        description="where this host's worker processes write Prometheus samples; default: STATE_DIR/metrics",
    )


class BackupSettings(BaseModel):
    """Where backups go, how long they are kept, and which PostgreSQL client tools make them."""

    directory: Path = Field(default=Path(".run/backups"), description="where archives are written (0700)")
    offsite_directory: Path | None = Field(
        default=None,
        description="a mounted remote disk for a second copy, always encrypted: needs OFFSITE_PASSPHRASE_FILE",
    )
    offsite_passphrase_file: Path | None = Field(
        default=None, description="file (mode 0600) whose first line encrypts the off-site copies (gpg, AES-256)"
    )
    keep_daily: int = Field(default=7, ge=1, description="newest backup of each of the last N days")
    keep_weekly: int = Field(default=4, ge=0, description="newest backup of each of the last N ISO weeks")
    keep_monthly: int = Field(default=6, ge=0, description="newest backup of each of the last N months")
    pg_bin_dir: Path | None = Field(default=None, description="directory of pg_dump/pg_restore; default: PATH")
    zstd_level: int = Field(
        default=1, ge=1, le=19, description="zstd level of the archive: 1 is fast, higher is smaller and slower"
    )
    min_archive_bytes: int = Field(default=2048, ge=0, description="a smaller archive is implausible: failed")
    dump_timeout_seconds: float = Field(default=3000.0, gt=0, description="pg_dump is stopped after this")


class RetentionSettings(BaseModel):
    """How long rows are kept (days); chat text is personal data, so it does not stay longer than needed."""

    messages_days: int = Field(default=90, ge=1, description="answered messages and sent replies")
    dead_letters_days: int = Field(default=90, ge=1, description="dead letters")
    sync_runs_days: int = Field(default=180, ge=1, description="sync journal and refused rows (newest run kept)")
    alerts_days: int = Field(default=90, ge=1, description="alerts delivered to (or given up on) Telegram")
    webhook_events_days: int = Field(default=14, ge=1, description="webhook events applied or given up (ids only)")
    flower_tasks: int = Field(default=10_000, ge=100, description="tasks Flower keeps in its state")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEET_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    environment: Literal["development", "test", "production"] = Field(
        default="development", description="production refuses unsafe or missing settings"
    )
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/fleet"),
        description="PostgreSQL URL or conninfo",
        validation_alias=AliasChoices("DATABASE_URL", "FLEET_DATABASE_URL"),
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="broker and result backend (rediss:// for TLS)",
        validation_alias=AliasChoices("REDIS_URL", "FLEET_REDIS_URL"),
    )
    sentry_dsn: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SENTRY_DSN", "FLEET_SENTRY_DSN"),
        description="no DSN, no Sentry (required in production)",
    )
    timezone: str = Field(default="Europe/Moscow", description="beat's crontab timezone")

    worker_type: WorkerType | None = Field(
        default=None, description="set by `fleet worker TYPE` for the process it starts"
    )
    workers: WorkersSettings = WorkersSettings()
    pool: PoolSettings = PoolSettings()
    budget: BudgetSettings = BudgetSettings()
    broker_max_message_bytes: int = Field(
        default=1_048_576, ge=65_536, description="a larger queue entry is kept as a dead letter, never decoded"
    )
    broker_inflight_ttl_seconds: float = Field(
        default=30.0,
        ge=1,
        description="a lanes router silent this long is presumed dead; what it took and had not placed is requeued",
    )
    heartbeat_seconds: float = Field(default=60.0, gt=0, description="how often beat sends the heartbeat")
    slow_query_ms: float = Field(default=1000.0, gt=0, description="statements slower than this are logged")

    inbound: InboundSettings = InboundSettings()
    gateway: GatewaySettings = GatewaySettings()
    assistant: str = Field(
        default="shared.assistant.rules:RuleBasedAssistant", description="module:Class of the chat assistant"
    )
    model: ModelSettings = ModelSettings()
    yclients: YClientsSettings = YClientsSettings()
    keys: KeysSettings = KeysSettings()
    backup: BackupSettings = BackupSettings()
    health: HealthSettings = HealthSettings()
    replica: ReplicaSettings = ReplicaSettings()
    alerts: AlertSettings = AlertSettings()
    retention: RetentionSettings = RetentionSettings()

    flower_user: str | None = Field(default=None, description="Flower basic auth user (set with the password)")
    flower_password: SecretStr | None = Field(default=None, description="Flower basic auth password")
    flower_address: str = Field(default="127.0.0.1", description="Flower's address")
    flower_port: int = Field(default=5555, ge=1, le=65535, description="Flower's port")
    state_dir: Path = Field(default=Path(".run"), description="beat schedule and Flower state")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _parsable_database_url(cls, value: SecretStr) -> SecretStr:
        try:
            conninfo_to_dict(value.get_secret_value())
        except Exception as exc:  # psycopg raises ProgrammingError for malformed conninfo
            raise ValueError("DATABASE_URL is not a valid PostgreSQL URL or conninfo string") from exc
        return value

    @model_validator(mode="after")
    def _private_by_default(self) -> Settings:
        """Outside production too, Flower is never half-protected (a user without a password means no auth)."""
        if self.environment == "production":
            return self  # production_problems names it, with everything else
        if bool(self.flower_user) != bool(self.flower_password and self.flower_password.get_secret_value()):
            raise ValueError("FLEET_FLOWER_USER and FLEET_FLOWER_PASSWORD must be set together")
        return self

    @model_validator(mode="after")
    def _production_requirements(self) -> Settings:
        """Collect every missing or unsafe production setting so the operator fixes them in one pass."""
        if self.environment != "production":
            return self
        problems = production_problems(self)
        if problems:
            raise ValueError("production settings unsafe or incomplete: " + "; ".join(problems))
        return self

    @property
    def metrics_directory(self) -> Path:
        """The host's Prometheus multiprocess directory, absolute (child processes may change directory)."""
        return (self.health.metrics_directory or self.state_dir / "metrics").resolve()

    @property
    def database_conninfo(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def session_conninfo(self) -> str:
        """A connection that keeps its server session across transactions: DATABASE_URL without a pooler."""
        session = self.pool.session_url
        return session.get_secret_value() if session is not None else self.database_conninfo

    @property
    def database_name(self) -> str:
        return str(conninfo_to_dict(self.database_conninfo).get("dbname", ""))


PLACEHOLDER_SECRETS = ("change-me", "changeme", "change_me", "password", "secret", "example")
ANY_ADDRESS = ("0.0.0.0", "::", "")  # noqa: S104  (the addresses refused without auth, not bound)
MIN_SECRET_CHARS = 16  # a token or password anyone could guess or brute-force over the network is no secret
POSTGRES_URLS = ("DATABASE_URL", "FLEET_POOL__SESSION_URL", "FLEET_REPLICA__URL")
POSTGRES_TLS_MODES = ("require", "verify-ca", "verify-full")
RANDOM_SECRET = f"a random value of at least {MIN_SECRET_CHARS} characters (`openssl rand -hex 24`)"
SENTRY_DSN_FIX = "copy the DSN from the Sentry project (Settings, Client Keys)"


def _placeholder(secret: str | None) -> bool:
    return bool(secret) and any(marker in secret.lower() for marker in PLACEHOLDER_SECRETS)


def is_loopback(host: str | None) -> bool:
    """True for `localhost` and loopback addresses only: anything else (a name, `0`, a public or private address)
    may be reached from another machine."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too (Python 3.11 says not)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _secret_settings(model: BaseModel, prefix: str = "FLEET_") -> list[tuple[str, str]]:
    """Every secret that is set, under the variable that sets it: a secret added later is checked too."""
    found = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found += _secret_settings(value, f"{prefix}{name.upper()}__")
        elif isinstance(value, SecretStr):
            aliases = getattr(info.validation_alias, "choices", None)
            found.append((str(aliases[0]) if aliases else f"{prefix}{name.upper()}", value.get_secret_value()))
    return found


def _secret_problems(variable: str, value: str) -> list[str]:
    """A token or password that is empty (`Bearer ` would match an empty token), the example's, or guessable."""
    if not value:
        return [f"{variable} is set but empty: set it to {RANDOM_SECRET}, or to the token its issuer gave"]
    if _placeholder(value):
        return [f"{variable} is the example's placeholder: replace it with {RANDOM_SECRET}, or the issued token"]
    if len(value) < MIN_SECRET_CHARS:
        return [f"{variable} is shorter than {MIN_SECRET_CHARS} characters: set it to {RANDOM_SECRET}"]
    return []


def _postgres_url_problems(variable: str, value: str) -> list[str]:
    """A password that is a real one, and TLS unless PostgreSQL is on this machine (loopback or a unix socket)."""
    try:
        conninfo = conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        return [f"{variable} is not a valid PostgreSQL URL or conninfo string"]
    problems = []
    password = str(conninfo.get("password") or "")
    if not password:
        problems.append(f"{variable} has no password: put the role's password in it (postgresql://USER:PASSWORD@...)")
    elif _placeholder(password):
        problems.append(f"{variable} has the example's placeholder password: put the role's real password in it")
    elif len(password) < MIN_SECRET_CHARS:
        problems.append(
            f"{variable}'s password is shorter than {MIN_SECRET_CHARS} characters: give the role {RANDOM_SECRET}"
        )
    hosts = str(conninfo.get("host") or "").split(",") + str(conninfo.get("hostaddr") or "").split(",")
    on_this_machine = all(not host or host.startswith(("/", "@")) or is_loopback(host) for host in hosts)
    if not on_this_machine and conninfo.get("sslmode") not in POSTGRES_TLS_MODES:
        problems.append(
            f"{variable} reaches PostgreSQL on another host without TLS: add sslmode=require (or verify-full) to it"
        )
    return problems


def _redis_url_problems(value: str) -> list[str]:
    """The broker carries chat text: a real password, and TLS (rediss://) to another host."""
    url = urlsplit(value)
    problems = []
    if not url.password:
        problems.append(
            "REDIS_URL has no password: set requirepass in Redis and put it in the URL (redis://:PASSWORD@...)"
        )
    elif _placeholder(unquote(url.password)):
        problems.append("REDIS_URL has the example's placeholder password: put Redis's real requirepass in it")
    elif len(unquote(url.password)) < MIN_SECRET_CHARS:
        problems.append(
            f"REDIS_URL's password is shorter than {MIN_SECRET_CHARS} characters: give Redis {RANDOM_SECRET}"
        )
    if url.scheme != "rediss" and not is_loopback(url.hostname):
        problems.append("REDIS_URL reaches another host without TLS (use rediss://)")
    return problems


def _sentry_dsn_problems(value: str) -> list[str]:
    """Events carry stack frames: the project's real key, sent over https unless Sentry runs on this machine."""
    dsn = urlsplit(value)
    problems = []
    key = unquote(dsn.username or "")
    if _placeholder(key) or len(key) < MIN_SECRET_CHARS:
        problems.append(f"SENTRY_DSN has no real key: {SENTRY_DSN_FIX}")
    problems += _https_problems("SENTRY_DSN", value)
    return problems


def _https_problems(variable: str, url: str) -> list[str]:
    """Tokens and chat text travel in these requests: plain http only to this machine."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname)):
        return []
    return [f"{variable} is not an https:// address yet leaves this machine: use the service's https:// address"]


def production_problems(settings: Settings) -> list[str]:
    """What production refuses, each named with its fix: missing or guessable secrets, passwords and chat text
    crossing the network in clear, services open to anyone."""
    problems = []
    for variable, value in _secret_settings(settings):
        if variable in POSTGRES_URLS:
            problems += _postgres_url_problems(variable, value)
        elif variable == "REDIS_URL":
            problems += _redis_url_problems(value)
        elif variable == "SENTRY_DSN":
            problems += _sentry_dsn_problems(value) if value else [f"SENTRY_DSN is not set: {SENTRY_DSN_FIX}"]
        else:
            problems += _secret_problems(variable, value)
    if settings.sentry_dsn is None:
        problems.append(f"SENTRY_DSN is not set: {SENTRY_DSN_FIX}")
    if not settings.flower_user:
        problems.append("FLEET_FLOWER_USER is not set: name the operators' Flower user (Flower needs basic auth)")
    if settings.flower_password is None:
        problems.append(f"FLEET_FLOWER_PASSWORD is not set: set it to {RANDOM_SECRET}")
    if settings.yclients.webhook_secret is not None:
        problems.append(
            "FLEET_YCLIENTS__WEBHOOK_SECRET is the fleet-wide webhook secret, not taken in production: give each salon"
            " its own (`fleet webhook-secret set --company ID`), then unset it"
        )
    if settings.gateway.token is None:
        problems.append("FLEET_GATEWAY__TOKEN is not set: set it to the Bearer token the WhatsApp gateway expects")
    if not is_loopback(settings.health.address) and settings.health.token is None:
        where = "every address" if settings.health.address in (*ANY_ADDRESS, "0") else "an address off this machine"
        problems.append(
            f"the health service listens on {where} (FLEET_HEALTH__ADDRESS={settings.health.address!r}) without"
            f" FLEET_HEALTH__TOKEN: set the token to {RANDOM_SECRET}, or FLEET_HEALTH__ADDRESS=127.0.0.1"
        )
    for variable, url in (
        ("FLEET_GATEWAY__SEND_URL", settings.gateway.send_url),
        ("FLEET_YCLIENTS__BASE_URL", settings.yclients.base_url),
        ("FLEET_ALERTS__TELEGRAM_API_URL", settings.alerts.telegram_api_url),
    ):
        problems += _https_problems(variable, url)
    return problems


class SettingsError(RuntimeError):
    """Raised with one readable message listing every invalid setting."""


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning pydantic's report into one clear message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            lines.append(f"  - {where}: {error['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None


class _EnvironmentOnly(BaseSettings):
    """FLEET_ENVIRONMENT read from the same places as Settings, and nothing else validated."""

    model_config = Settings.model_config
    environment: str = "development"


def configured_environment() -> str:
    """The environment the settings name, even while the rest is refused: ops/bootstrap.sh must know it is in
    production before it may start (password-less) services."""
    return _EnvironmentOnly().environment


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
