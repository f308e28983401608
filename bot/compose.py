"""The composition root: builds a :class:`~bot.hub.Hub` from :class:`~bot.config.Settings`.

Only wiring lives here: which store, lanes, event feed, knowledge base, ticket backend, agent
and channels a hub gets. It is the one module of ``bot`` that imports the plugin packages
(``channels``, ``plugins``, ``knowledge``); the programs (``serve``, ``worker``, ``bench``,
``chat``) and the tests build their hubs through it.

The knowledge base on one host without a Qdrant server is the embedded Qdrant Edge index,
which every process (``serve``, each ``worker``, ``switchboard ingest``) opens in place, with no
copy; each sees an ingest's result once it is published (:mod:`knowledge.edge_index`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.agent import SupportAgent
from bot.agent.usage import UsageFn
from bot.channel import ChannelPlugin
from bot.config import Settings
from bot.envelope import SessionKey
from bot.errors import ConfigError
from bot.events import EventBus
from bot.hub import DeliveryPolicy, Hub
from bot.lanes.base import LaneConfig, LaneQueue
from bot.retrieval import NoKnowledge, Retriever
from bot.store.base import Store
from bot.subjects import AboutSubject, HolderErasure, SubjectHolder
from bot.tools import BackendCheck, CheckFn, CrmBackend, TicketBackend, Tool

if TYPE_CHECKING:
    from channels.memory.plugin import MemoryChannel
    from knowledge import KnowledgeBase

log = logging.getLogger(__name__)


async def build_hub(
    settings: Settings,
    *,
    agent: SupportAgent | None = None,
    retriever: Retriever | None = None,
    tickets: TicketBackend | None = None,
    channels: Sequence[ChannelPlugin] | None = None,
    store: Store | None = None,
    lanes: LaneQueue | None = None,
    load_knowledge: bool = True,
    consume: bool = True,
    events: EventBus | None = None,
    listen_events: bool = True,
    receive: bool = True,
    delivery: DeliveryPolicy | None = None,
    crm: CrmBackend | None = None,
) -> Hub:
    """Compose a hub from settings; every ``None`` argument takes the embedded default.

    Args:
        settings: the configuration.
        agent: the support agent; default :func:`default_agent`, with the allow-listed tools
            of the ``mcp_servers`` (connected here, closed with the hub) when ``llm_model``
            is set.
        retriever: the knowledge base; default the local Qdrant index in ``data_dir`` when
            ``load_knowledge`` (else none).
        tickets: the ticket backend; default the local SQL ticket store.
        channels: channel plugins; default every enabled plugin found by entry point.
        store: default ``SqlStore`` on ``settings.resolved_database_url``.
        lanes: default by ``lane_backend``: ``memory``, or ``redis`` (``RedisLaneQueue`` on
            ``redis_url``, leases of ``lane_lease_s`` seconds).
        load_knowledge: open the local knowledge base when no retriever is given (skipped for
            ``agent: scripted``); every process of a host reads the same index (see
            :func:`open_knowledge`).
        consume: run turns (False: ingress only; needs the ``redis`` lane backend).
        events: the live event feed; default ``EventBus`` (memory lanes) or ``RedisEventBus``
            on ``redis_url`` (redis lanes).
        listen_events: with ``RedisEventBus``, receive other processes' events (processes
            that serve live viewers); ``switchboard worker`` only publishes.
        receive: take platform traffic: run pull receivers (under Redis leases with shared
            lanes, :mod:`bot.leader`) and listeners; False for ``switchboard worker``.
        delivery: inline send retries and the outbox's schedule (default
            :class:`~bot.hub.DeliveryPolicy`).
        crm: the CRM backend; default by ``crm_backend`` (none, hubspot, salesforce).

    Returns:
        A hub, not started (call ``await hub.start()``).

    Raises:
        bot.errors.ConfigError: for an unknown lane backend or agent, a missing
            ``redis_url``, or ``consume=False`` with memory lanes.
    """
    closeables: list[Any] = []
    if settings.agent not in ("auto", "scripted"):
        raise ConfigError(f"unknown agent {settings.agent!r} (auto or scripted)")
    if settings.lane_backend not in ("memory", "redis"):
        raise ConfigError(f"unknown lane backend {settings.lane_backend!r} (memory or redis)")
    if settings.lane_backend == "redis" and not settings.redis_url and lanes is None:
        raise ConfigError("lane_backend redis needs SWITCHBOARD_REDIS_URL")
    if not consume and settings.lane_backend == "memory" and lanes is None:
        raise ConfigError(
            "an ingress-only process (--workers 0) needs shared lanes: "
            "set SWITCHBOARD_LANE_BACKEND=redis and SWITCHBOARD_REDIS_URL"
        )
    if store is None:
        from bot.store import open_store

        store = await open_store(settings)
    if lanes is None:
        lanes = _default_lanes(settings)
    marks = None
    lease_client = None
    session_keys = getattr(lanes, "session_keys", None)  # RedisLaneQueue: shared lanes
    if session_keys is not None:
        lease_client = getattr(lanes, "client", None)
        from bot.events_redis import EnqueueMarks, RedisEventBus

        if events is None:
            url = settings.redis_url
            if url is None:
                raise ConfigError("shared lanes need SWITCHBOARD_REDIS_URL for the event feed")
            events = RedisEventBus(url, listen=listen_events)
        if isinstance(events, RedisEventBus):
            closeables.append(events)

            def tag_of(key: SessionKey) -> str:
                return str(session_keys(key)[0]).rsplit(":", 1)[0]

            marks = EnqueueMarks(events, tag_of, settings.dedupe_ttl_s)
    if tickets is None:
        tickets = ticket_backend(settings, store)
        if settings.ticket_backend != "local":
            closeables.append(tickets)
    if crm is None and settings.crm_backend != "none":
        from plugins.crm.backends import open_crm

        crm = open_crm(settings)
        closeables.append(crm)
    if retriever is None and load_knowledge and settings.agent == "auto":
        kb = await open_knowledge(settings)
        retriever = kb
        closeables.append(kb)
    holders = subject_holders(settings, retriever)
    if retriever is not None:
        from bot import tracing
        from bot.retrieval import TracedRetriever

        if tracing.enabled():
            retriever = TracedRetriever(retriever)
    if agent is None:
        mcp_tools: list[Tool] = []
        if settings.mcp_servers and settings.llm_model and settings.agent == "auto":
            from plugins.mcp.gateway import McpGateway

            gateway = McpGateway(settings.mcp_servers)
            await gateway.start()
            closeables.append(gateway)
            mcp_tools = gateway.tools()
        # desk: the LLM agent's token use and cost feed the analytics page (bot.desk).
        from bot.desk.store import DeskStore

        agent = default_agent(
            settings,
            retriever,
            extra_tools=mcp_tools,
            on_usage=DeskStore(store).usage_recorder(),
        )
        embedder = getattr(retriever, "embedder", None)  # a knowledge.KnowledgeBase
        if settings.agent == "auto" and embedder is not None:
            # Approved answers come before retrieval and generation (knowledge.answers).
            from knowledge.answers import CuratedAnswers, CuratedFirstAgent

            agent = CuratedFirstAgent(agent, CuratedAnswers.for_settings(settings, embedder))
    if channels is None:
        from bot.registry import load_channels

        channels = [cls(settings) for cls in load_channels() if cls.enabled(settings)]
    return Hub(
        settings,
        store=store,
        lanes=lanes,
        agent=agent,
        tickets=tickets,
        retriever=retriever,
        channels=channels,
        closeables=closeables,
        consume=consume,
        events=events,
        marks=marks,
        receive=receive,
        lease_client=lease_client,
        delivery=delivery,
        crm=crm,
        subject_holders=holders,
    )


def _default_lanes(settings: Settings) -> LaneQueue:
    """Lanes by ``settings.lane_backend``: ``redis`` (shared) or ``memory`` (this process)."""
    lane_config = LaneConfig(
        max_concurrent_turns=settings.max_concurrent_turns,
        lane_cap=settings.lane_cap,
        debounce_ms=settings.debounce_ms,
        lane_idle_s=settings.lane_idle_s,
    )
    if settings.lane_backend == "redis":
        from bot.lanes.redis import RedisLaneQueue

        assert settings.redis_url is not None
        return RedisLaneQueue(lane_config, settings.redis_url, lease_s=settings.lane_lease_s)
    from bot.lanes.memory import MemoryLaneQueue

    return MemoryLaneQueue(lane_config)


def default_agent(
    settings: Settings,
    retriever: Retriever | None,
    *,
    extra_tools: Sequence[Tool] = (),
    on_usage: UsageFn | None = None,
) -> SupportAgent:
    """The agent ``settings`` ask for (``on_usage``: the LLM's token use, :mod:`bot.agent.usage`).

    ``agent: scripted``: the zero-latency scripted agent. Otherwise ``LLMAgent`` with the
    registered tools (``lookup_customer`` only when a CRM is configured) and ``extra_tools``
    (the MCP gateway's) when ``llm_model`` is set, else the extractive agent over ``retriever``
    (a retriever that finds nothing when None), answering above the knowledge base's
    recommended confidence (0.5 without a knowledge base).
    """
    if settings.agent == "scripted":
        from bot.agent.scripted import ScriptedAgent

        return ScriptedAgent()
    from bot.agent import ExtractiveAgent, LLMAgent, load_tools

    if settings.llm_model:
        from plugins.escalation.registry import builtin_tools

        tools = [
            t
            for t in load_tools(fallback=builtin_tools)
            if t.name != "lookup_customer" or settings.crm_backend != "none"
        ]
        return LLMAgent(settings, [*tools, *extra_tools], on_usage=on_usage)
    threshold = 0.5
    if retriever is not None:
        from knowledge import RECOMMENDED_MIN_CONFIDENCE

        threshold = RECOMMENDED_MIN_CONFIDENCE
    return ExtractiveAgent(settings, retriever or NoKnowledge(), min_confidence=threshold)


async def build_chat_hub(settings: Settings) -> tuple[Hub, MemoryChannel]:
    """The hub of ``switchboard chat``: every default, and the memory channel as its only channel.

    Returns:
        The hub (not started) and its memory channel (``push_message`` / ``pop_message``).
    """
    from channels.memory.plugin import MemoryChannel

    channel = MemoryChannel(settings)
    return await build_hub(settings, channels=[channel]), channel


# --- ticket backends and integration checks (issue 12) -------------------------------------
def ticket_backend(settings: Settings, store: Store) -> TicketBackend:
    """The ticket backend ``settings.ticket_backend`` names, on the store's database.

    ``local``: tickets in the hub's database. ``zendesk``/``jira``: the product through its SDK,
    linked to sessions (and deferred while it is down) in the hub's database
    (:class:`plugins.ticketing.synced.SyncedTicketBackend`).

    Raises:
        bot.errors.ConfigError: for missing Zendesk/Jira settings, or a store that is not SQL.
    """
    if settings.ticket_backend == "local":
        from plugins.ticketing.local import LocalTicketBackend

        return LocalTicketBackend.for_store(store)
    from plugins.ticketing.synced import SyncedTicketBackend

    if settings.ticket_backend == "zendesk":
        from plugins.ticketing.zendesk import ZendeskTickets

        return SyncedTicketBackend.for_store(ZendeskTickets(settings), store, settings)
    if settings.ticket_backend == "jira":
        from plugins.ticketing.jira_sm import JiraTickets

        return SyncedTicketBackend.for_store(JiraTickets(settings), store, settings)
    raise ConfigError(f"unknown ticket backend {settings.ticket_backend!r}")


def integration_checks(settings: Settings) -> list[CheckFn]:
    """Probes of every configured external system, for ``switchboard doctor``.

    Each probe builds its client, asks the system who the configured credentials are, closes
    the client and returns a :class:`~bot.tools.BackendCheck` (it never raises: a bad setting
    is a failed check). Nothing is probed for ``ticket_backend: local``; the CRM and each
    MCP server are probed by :func:`plugins.doctor_checks.crm_and_mcp_checks`.
    """
    checks: list[CheckFn] = []
    if settings.ticket_backend in ("zendesk", "jira"):
        name = settings.ticket_backend

        async def tickets() -> BackendCheck:
            try:
                if name == "zendesk":
                    from plugins.ticketing.zendesk import ZendeskTickets

                    client: Any = ZendeskTickets(settings)
                else:
                    from plugins.ticketing.jira_sm import JiraTickets

                    client = JiraTickets(settings)
            except ConfigError as exc:
                return BackendCheck(name, False, str(exc))
            try:
                result: BackendCheck = await client.check()
                return result
            finally:
                await client.close()

        checks.append(tickets)
    from plugins.doctor_checks import crm_and_mcp_checks

    checks.extend(crm_and_mcp_checks(settings))
    return checks


# --- the knowledge base --------------------------------------------------------------------
async def knowledge_base(settings: Settings) -> KnowledgeBase:
    """Open the knowledge base's folder itself (``switchboard ingest`` and ``kb eval``).

    Raises:
        bot.errors.BackendUnavailable: when Qdrant fails (for one, when another process holds
            the local folder).
        bot.errors.ConfigError: see :meth:`knowledge.KnowledgeBase.open`.
    """
    from knowledge import KnowledgeBase

    return await KnowledgeBase.open(settings)


async def open_knowledge(settings: Settings) -> KnowledgeBase:
    """Open the knowledge base for serving (every process of a host opens the same index).

    The embedded index (``kb_index: edge``) is read by any number of processes in place, each
    switching to a newer published version after an ingest (see :mod:`knowledge.edge_index`);
    a Qdrant server (``qdrant_url``) is shared by every host. Only qdrant-client's local mode
    (``kb_index: local``) admits one process at a time.

    Raises:
        bot.errors.BackendUnavailable: when the index cannot be opened.
        bot.errors.ConfigError: see :meth:`knowledge.KnowledgeBase.open`.
    """
    from knowledge import KnowledgeBase

    return await KnowledgeBase.open(settings)


# --- data-subject requests ----------------------------------------------------------------
def subject_holders(settings: Settings, retriever: Retriever | None = None) -> list[SubjectHolder]:
    """The parts beyond the database and lanes that data-subject requests search and erase.

    The knowledge base (:class:`knowledge.subjects.KnowledgeSubjects`): curated answers,
    documents in the index, uploads left in ``data_dir``; through ``retriever`` when it is the
    process's open :class:`knowledge.KnowledgeBase`, else opened for each request. The hub
    keeps them (``Hub.subject_holders``) for the admin API and the console; the command line
    asks here.
    """
    return [_KnowledgeHolder(settings, retriever)]


class _KnowledgeHolder:
    """:class:`knowledge.subjects.KnowledgeSubjects`, imported at its first request.

    A hub that serves no knowledge base does not load the package for it.
    """

    def __init__(self, settings: Settings, retriever: Retriever | None) -> None:
        self._settings = settings
        self._retriever = retriever
        self._holder: SubjectHolder | None = None

    def _real(self) -> SubjectHolder:
        if self._holder is None:
            from knowledge import KnowledgeBase
            from knowledge.subjects import KnowledgeSubjects

            kb = self._retriever if isinstance(self._retriever, KnowledgeBase) else None
            self._holder = KnowledgeSubjects(self._settings, kb)
        return self._holder

    @property
    def name(self) -> str:
        """``knowledge_base``."""
        return self._real().name

    async def export(self, about: AboutSubject) -> dict[str, Any]:
        """See :meth:`knowledge.subjects.KnowledgeSubjects.export`."""
        return await self._real().export(about)

    async def erase(self, about: AboutSubject) -> HolderErasure:
        """See :meth:`knowledge.subjects.KnowledgeSubjects.erase`."""
        return await self._real().erase(about)
