"""Typed configuration: one frozen :class:`Settings`, loaded once and passed explicitly.

Sources, highest priority first: explicit overrides (CLI flags), ``SWITCHBOARD_*`` environment
variables, a ``switchboard.yaml`` file, then the embedded defaults. Field names map one to one:
field ``llm_model`` is ``SWITCHBOARD_LLM_MODEL`` and key ``llm_model:`` in YAML. List fields take
JSON in the environment (``SWITCHBOARD_API_KEYS='["k1","k2"]'``) or a comma-separated string.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from bot.errors import ConfigError


class QueueMode(StrEnum):
    """How a lane treats messages that arrive while a turn is running.

    ``collect``: everything that arrived becomes one follow-up turn after ``debounce_ms`` of quiet.
    ``followup``: one turn per message, in order.
    ``interrupt``: cancel the running turn and run the newest message.
    """

    COLLECT = "collect"
    FOLLOWUP = "followup"
    INTERRUPT = "interrupt"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            import json

            return json.loads(value)
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class McpServer(BaseModel):
    """One Model Context Protocol server of the tool gateway (``mcp_servers``, issue 12).

    Attributes:
        name: short id (letters, digits, ``_``, ``-``); the model sees its tools as
            ``{name}__{tool}``.
        transport: ``stdio`` (a subprocess the hub starts) or ``http`` (Streamable HTTP).
        command: stdio: the program to start.
        args: stdio: its arguments.
        env: stdio: extra environment variables (secrets: never logged).
        url: http: the server's MCP endpoint (``https://tools.example.com/mcp``).
        headers: http: request headers, e.g. ``Authorization`` (secrets: never logged).
        allow_tools: the server's tools offered to the model; any other tool is never offered.
        timeout_s: seconds to wait for a connection or one tool call.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,24}$")
    transport: Literal["stdio", "http"] = "stdio"
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, SecretStr] = Field(default_factory=dict)
    url: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    allow_tools: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    """Every setting of the hub.

    Units are in the field names: ``_s`` seconds, ``_ms`` milliseconds, ``_bytes`` bytes,
    ``_tokens`` tokens.
    """

    yaml_file: ClassVar[Path | None] = None

    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_",
        frozen=True,
        extra="forbid",
        env_ignore_empty=True,
    )

    # --- server -----------------------------------------------------------------------------
    data_dir: Path = Path(".switchboard")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Keys of the admin routes /api/v1/admin/* (knowledge ingest, curated answers); none: off.
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    max_message_bytes: int = 32 * 1024
    max_body_bytes: int = 1024 * 1024
    # Web surface (bot.web_security). Peers (IP addresses or CIDR networks) whose
    # X-Forwarded-Proto is believed: a TLS-terminating proxy in front of the hub.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Origins allowed to frame the web chat demo/embed page (CSP frame-ancestors); none: 'self'.
    webchat_frame_ancestors: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Strict-Transport-Security max-age (seconds), sent on HTTPS answers only; 0: no header.
    hsts_max_age_s: int = 31_536_000
    drain_timeout_s: float = 20.0
    log_level: str = "INFO"
    log_json: bool = True
    # OpenTelemetry traces: exported by OTLP/HTTP to this URL (e.g.
    # http://collector:4318/v1/traces) when set; no tracer provider at all when unset.
    otel_endpoint: str | None = None
    otel_service_name: str = "switchboard"
    console_session_secret: SecretStr | None = None
    demo_site: bool = True

    # --- lanes ------------------------------------------------------------------------------
    lane_backend: str = "memory"
    queue_mode: QueueMode = QueueMode.COLLECT
    channel_queue_modes: dict[str, QueueMode] = Field(default_factory=dict)
    debounce_ms: int = 300
    max_concurrent_turns: int = 16
    lane_cap: int = 20
    lane_idle_s: float = 30.0
    turn_timeout_s: float = 120.0
    redis_url: str | None = None

    # --- ingest / dedupe --------------------------------------------------------------------
    dedupe_ttl_s: float = 24 * 3600.0
    dedupe_max_entries: int = 200_000

    # --- store ------------------------------------------------------------------------------
    database_url: str | None = None
    store_batch_ms: float = 2.0
    outbox_max_age_s: float = 24 * 3600.0

    # --- agent / LLM ------------------------------------------------------------------------
    llm_model: str | None = None
    llm_api_base: str | None = None
    llm_api_key: SecretStr | None = None
    llm_fallbacks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    llm_timeout_s: float = 30.0
    llm_max_retries: int = 1
    llm_temperature: float = 0.2
    # Stream answers on channels that can edit a message (bot.channel.StreamingChannel), at
    # most one edit per stream_interval_s seconds (Slack's chat.update is Tier 3, ~50/min).
    llm_stream: bool = True
    stream_interval_s: float = 1.0
    # Typing indicators (the hub's "typing" event: web chat, console, and the Teams, Telegram
    # and Discord indicators that follow it) start once a turn has run this long (seconds).
    typing_delay_s: float = Field(default=0.25, ge=0.0)
    llm_context_window_tokens: int = 8192
    llm_max_answer_tokens: int = 800
    agent_max_tool_rounds: int = 4
    agent_history_messages: int = 40
    bot_name: str = "Switchboard"
    company_name: str = "Switchboard"

    # --- knowledge --------------------------------------------------------------------------
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    kb_collection: str = "knowledge"
    embedding_model: str = "local"
    embedding_api_base: str | None = None
    embedding_api_key: SecretStr | None = None
    retrieve_top_k: int = 5
    max_citations: int = 3
    answer_min_score: float = 0.0
    # Cosine similarity (0..1) a customer question needs to get a curated answer.
    curated_answer_min_similarity: float = 0.85
    sample_kb: bool = True
    sample_kb_dir: Path = Path("docs")

    # --- channels: Slack (issue 4) -----------------------------------------------------------
    slack_signing_secret: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = None
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    slack_agents_channel: str | None = None
    slack_allow_bots: bool = False

    # --- channels: Microsoft Teams (issue 4) -------------------------------------------------
    teams_app_id: str | None = None
    teams_app_password: SecretStr | None = None
    teams_tenant_id: str | None = None
    teams_openid_metadata_url: str | None = None

    # --- channels: Telegram (issue 5) --------------------------------------------------------
    telegram_bot_token: SecretStr | None = None
    telegram_secret_token: SecretStr | None = None
    telegram_api_url: str | None = None
    telegram_bot_name: str = "bot"
    telegram_polling: bool = False
    telegram_group_mode: str = "mention"

    # --- channels: Discord (issue 5) ---------------------------------------------------------
    discord_bot_token: SecretStr | None = None
    discord_api_url: str | None = None

    # --- channels: e-mail (issue 5) ----------------------------------------------------------
    email_address: str | None = None
    email_imap_url: SecretStr | None = None
    email_smtp_url: SecretStr | None = None
    email_smtp_listen: str | None = None
    email_trusted_authserv_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    email_max_per_sender_per_hour: int = 20
    email_max_attachment_bytes: int = 25 * 1024 * 1024

    # --- scale-out (issue 3) -----------------------------------------------------------------
    workers: int = 1
    lane_lease_s: float = 10.0
    # Seconds a process holds the Redis lease on a pull receiver (Telegram polling, IMAP,
    # Discord gateway, Slack Socket Mode) without renewing it: the takeover time after a crash.
    receiver_lease_s: float = 15.0
    # "auto": LLMAgent when llm_model is set, else the extractive agent. "scripted": a
    # zero-latency fixed answer, for tests and `switchboard bench` only (never in production).
    agent: str = "auto"

    # --- handoff ----------------------------------------------------------------------------
    handoff_on_no_answer: bool = True
    agent_capacity: int = 5

    # --- privacy (issue 13) -----------------------------------------------------------------
    # Entity types (Presidio names, see bot.privacy.redact.ENTITY_TYPES) replaced by reversible
    # tokens before text reaches the LLM; PERSON and LOCATION come from context cues (see
    # bot.privacy.cues), and anywhere in a sentence with `pii_spacy_model`.
    pii_entities: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "EMAIL_ADDRESS",
            "PHONE_NUMBER",
            "CREDIT_CARD",
            "IBAN_CODE",
            "IP_ADDRESS",
            "US_SSN",
            "UK_NINO",
            "PERSON",
            "LOCATION",
        ]
    )
    # Per-channel override of pii_entities, e.g. {"slack": ["EMAIL_ADDRESS"]}; [] redacts nothing.
    pii_channel_entities: dict[str, list[str]] = Field(default_factory=dict)
    # Presidio confidence (0-1) a detection needs; validated patterns (Luhn, IBAN) score 1.0.
    pii_score_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    # Regions (ISO 3166 alpha-2) whose national phone formats are recognized; numbers written
    # with a +country code are found whatever the list.
    pii_phone_regions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["US", "GB", "DE", "IL", "IN", "CA", "BR"]
    )
    # An installed spaCy pipeline (package name or folder) for PERSON/LOCATION; never downloaded.
    pii_spacy_model: str | None = None
    # Injection score (0-1, bot.privacy.injection) at or above which a text counts as an attack.
    injection_threshold: float = Field(default=0.5, ge=0.0, le=1.0)

    # --- data protection: audit chain, retention (issue 13 part B, bot.store.audit) --------
    # HMAC-SHA256 key of the audit hash chain (plain SHA-256 without one). Keep it out of the
    # database: whoever holds it and can write the table could recompute the chain.
    audit_key: SecretStr | None = None
    # Days kept (0 keeps forever): conversations after their last activity (with messages,
    # outbox entries and local tickets), single messages whatever the conversation's activity,
    # audit entries. The sweeper runs every retention_sweep_s seconds (one process at a time).
    retention_conversation_days: int = Field(default=365, ge=0)
    retention_message_days: int = Field(default=0, ge=0)
    retention_audit_days: int = Field(default=730, ge=0)
    retention_sweep_s: float = Field(default=3600.0, gt=0)
    # --- ticket backends and two-way sync (issue 12: Zendesk, Jira Service Management) --------
    # Where tickets live: "local" (the hub's database), "zendesk" or "jira".
    ticket_backend: Literal["local", "zendesk", "jira"] = "local"
    # Zendesk Support: https://{subdomain}.zendesk.com, or zendesk_url (any base URL, e.g. a
    # sandbox or a test server), an agent's e-mail and an API token (Admin Center > Apps and
    # integrations > Zendesk API), and the signing secret of the webhook that calls
    # /webhooks/zendesk.
    zendesk_subdomain: str | None = None
    zendesk_url: str | None = None
    zendesk_email: str | None = None
    zendesk_api_token: SecretStr | None = None
    zendesk_webhook_secret: SecretStr | None = None
    # Jira Service Management Cloud: site URL, the API user's e-mail and API token, the
    # service desk and request type new requests use, and the secret of the webhook that calls
    # /webhooks/jira (Jira signs the body: X-Hub-Signature: sha256=HMAC).
    jira_url: str | None = None
    jira_email: str | None = None
    jira_api_token: SecretStr | None = None
    jira_service_desk_id: str | None = None
    jira_request_type_id: str | None = None
    jira_webhook_secret: SecretStr | None = None
    # A 429 whose Retry-After is at most this is waited out (tenacity) before the call fails
    # with RateLimited; ticket_retry_attempts calls in all.
    ticket_retry_max_wait_s: float = 10.0
    ticket_retry_attempts: int = 3
    # Seconds between attempts to create tickets deferred while the system was down, and the
    # lease one process holds on a deferred ticket while it creates it.
    ticket_sync_interval_s: float = 30.0
    ticket_sync_lease_s: float = 60.0
    # Seconds a call to Zendesk/Jira may take.
    ticket_timeout_s: float = 15.0
    # When the ticket is solved in Zendesk/Jira: hand the conversation back to the bot ("bot")
    # or close it ("close").
    ticket_solved_action: Literal["bot", "close"] = "bot"
    # --- assignment and SLAs (issue 14: teams, presence, capacity, SLA policies) ------------
    # New escalations go to the least-loaded online agent of their team (False: claim only).
    auto_assign: bool = True
    # Seconds without a console session (event-stream heartbeat) before an agent goes offline.
    presence_timeout_s: float = Field(default=60.0, gt=0)
    # Seconds between sweeps: presence expiry, the waiting queue, SLA breaches (one process
    # at a time under a Redis lease when lanes are shared).
    assignment_sweep_s: float = Field(default=5.0, gt=0)
    # --- desk (issue 14 part B): CSAT survey, copilot, analytics ---------------------------------
    # Ask the customer for a 1-5 rating when an agent resolves or closes a conversation.
    csat_enabled: bool = True
    # A survey left unanswered this long (seconds) no longer takes a "4" as a rating.
    csat_timeout_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # The copilot's suggested answer and summary use the LLM (llm_model) when set; else extractive.
    copilot_llm: bool = True
    # Passages the copilot's suggestion draws on (best first).
    copilot_passages: int = Field(default=3, ge=1, le=10)
    # --- CRM and MCP tool gateway (issue 12 part B) ------------------------------------------
    # Where customer records live: none, hubspot or salesforce (plugins/crm/).
    crm_backend: Literal["none", "hubspot", "salesforce"] = "none"
    # Seconds one CRM API call may take.
    crm_timeout_s: float = 10.0
    # CRM field holding "{channel}:{platform id}" (HubSpot contact property, Salesforce
    # Contact field such as Switchboard_Id__c); unset: no lookup by platform id.
    crm_platform_id_field: str | None = None
    # CRM field shown as the customer's plan (HubSpot company property, Salesforce Account field).
    crm_plan_field: str | None = None
    # HubSpot private app access token (scopes crm.objects.contacts.read, companies.read).
    hubspot_access_token: SecretStr | None = None
    hubspot_api_url: str = "https://api.hubapi.com"
    # Salesforce: the org's My Domain URL, and either an OAuth access token or a connected
    # app's client id and secret (OAuth 2.0 client credentials flow).
    salesforce_instance_url: str | None = None
    salesforce_access_token: SecretStr | None = None
    salesforce_client_id: str | None = None
    salesforce_client_secret: SecretStr | None = None
    salesforce_api_version: str = "62.0"
    # MCP servers whose allow-listed tools the LLM agent may call (see bot.config.McpServer).
    mcp_servers: list[McpServer] = Field(default_factory=list)
    # --- knowledge index at scale (issue 11) ------------------------------------------------
    # The embedded index without qdrant_url: "edge" (Qdrant Edge, HNSW, one index read by every
    # process of the host, DATA_DIR/kb-edge) or "local" (qdrant-client's local mode, DATA_DIR/
    # qdrant: exact search, one process at a time; slow beyond a few thousand chunks).
    kb_index: Literal["edge", "local"] = "edge"

    @field_validator("pii_entities", "pii_phone_regions", mode="before")
    @classmethod
    def _privacy_lists(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or network"
                ) from exc
        return value

    def pii_entities_for(self, channel: str) -> list[str]:
        """The entity types redacted on a channel: its override, else ``pii_entities``."""
        return self.pii_channel_entities.get(channel, self.pii_entities)

    @field_validator(
        "api_keys",
        "admin_api_keys",
        "llm_fallbacks",
        "email_trusted_authserv_ids",
        "trusted_proxies",
        "webchat_frame_ancestors",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_csv(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: explicit overrides, environment, YAML file, defaults."""
        yaml_file = cls.yaml_file
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    # --- derived ----------------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL; SQLite in ``data_dir`` unless ``database_url`` is set."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'switchboard.db').resolve()}"

    @property
    def qdrant_path(self) -> Path:
        """Folder of the local on-disk Qdrant index (used when ``qdrant_url`` is unset)."""
        return self.data_dir / "qdrant"

    def queue_mode_for(self, channel: str) -> QueueMode:
        """The queue mode of a channel: its override, else the global ``queue_mode``."""
        return self.channel_queue_modes.get(channel, self.queue_mode)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Load settings once.

    Args:
        config: path of a ``switchboard.yaml``; None reads no file.
        **overrides: values from CLI flags; None values are ignored.

    Returns:
        The frozen settings.

    Raises:
        ConfigError: when the file is missing or a value does not validate.
    """
    if config is not None and not config.is_file():
        raise ConfigError(f"config file not found: {config}")
    clean = {k: v for k, v in overrides.items() if v is not None}
    cls: type[Settings] = type("Settings", (Settings,), {"yaml_file": config})
    try:
        return cls(**clean)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
