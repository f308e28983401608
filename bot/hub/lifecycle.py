"""The :class:`Hub`: one process's parts, wired together, started and stopped in order.

The hub holds the store, lanes, agent, handoff, channels and event feed it was built with (see
:func:`bot.compose.build_hub`) and joins its parts: :class:`~bot.hub.ingest.Ingress` (the door
in), :class:`~bot.hub.deliver.Egress` (the door out), :class:`~bot.hub.outbox.Outbox`,
:class:`~bot.hub.recovery.Recovery`, the :class:`~bot.router.Router` that runs turns and the
pull receivers (:class:`bot.leader.PullReceivers`) and the retention sweeper
(:class:`~bot.hub.retention.RetentionSweeper`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.agent import SupportAgent
from bot.assignment_sweeper import AssignmentSweeper
from bot.channel import ChannelPlugin, IngestReceipt
from bot.config import Settings
from bot.envelope import InboundMessage, OutboundMessage, SessionKey
from bot.errors import BackendUnavailable, Draining
from bot.events import EventBus, HubEvent
from bot.handoff import Handoff
from bot.hub.deliver import Egress
from bot.hub.ingest import IngestTimes, Ingress
from bot.hub.outbox import Outbox
from bot.hub.policy import DeliveryPolicy
from bot.hub.recovery import Recovery
from bot.hub.retention import RetentionSweeper
from bot.lanes.base import LaneQueue
from bot.leader import PullReceivers
from bot.observability import Metrics
from bot.retrieval import NoKnowledge, Retriever
from bot.router import Router
from bot.store.base import Store, StoredMessage
from bot.store.sql import SqlStore
from bot.subjects import SubjectHolder, SubjectRequests
from bot.tools import CrmBackend, TicketBackend

if TYPE_CHECKING:
    from bot.events_redis import EnqueueMarks

log = logging.getLogger(__name__)


class Hub:
    """One hub process: see :mod:`bot.hub`. Implements :class:`bot.channel.HubAPI`."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        lanes: LaneQueue,
        agent: SupportAgent,
        tickets: TicketBackend,
        retriever: Retriever | None = None,
        channels: Sequence[ChannelPlugin] = (),
        metrics: Metrics | None = None,
        closeables: Sequence[Any] = (),
        consume: bool = True,
        events: EventBus | None = None,
        marks: EnqueueMarks | None = None,
        receive: bool = True,
        lease_client: Any = None,
        delivery: DeliveryPolicy | None = None,
        crm: CrmBackend | None = None,
        subject_holders: Sequence[SubjectHolder] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.lanes = lanes
        self.agent = agent
        self.tickets = tickets
        self.crm = crm
        """The CRM backend of the agent's tools and the console's customer panel, if any."""
        self.retriever = retriever
        self.subject_holders = list(subject_holders)
        """Parts outside the database and lanes in data-subject requests (the knowledge base)."""
        self.channels: dict[str, ChannelPlugin] = {c.name: c for c in channels}
        self.metrics = metrics or Metrics()
        self.consume = consume
        """True when this process runs turns (starts the lanes' consumers)."""
        self.receives = receive
        """True when this process takes platform traffic (not ``switchboard worker``)."""
        self.receivers = PullReceivers(
            self.channels.values(), client=lease_client, lease_s=settings.receiver_lease_s
        )
        """Pull receivers, under Redis leases when ``lease_client`` is given (bot.leader)."""
        self.retention = RetentionSweeper(settings, store, lease_client)
        """Deletes what is past its ``retention_*_days`` (receiving processes, one at a time)."""
        self.events = events if events is not None else EventBus()
        self.marks = marks
        """Enqueued marks of shared lanes (None: memory lanes, recovery from the store)."""
        self.handoff = Handoff(
            settings, store, self.events, tickets, self.deliver, metrics=self.metrics
        )
        self.sweeper = AssignmentSweeper(
            self.handoff.assignment,
            interval_s=settings.assignment_sweep_s,
            lease_client=lease_client,
            lease_s=settings.receiver_lease_s,
        )
        """Presence expiry, waiting queue, SLA breaches (one process: bot.assignment_sweeper)."""
        self.router = Router(self)
        self.ready = False
        self._draining = False
        self._stopping = False
        self._closeables = list(closeables)
        self._no_knowledge = NoKnowledge()
        self.delivery = delivery or DeliveryPolicy()
        """Inline retries and the outbox's schedule."""
        self._times = IngestTimes()
        self._ingress = Ingress(
            settings,
            store=store,
            lanes=lanes,
            events=self.events,
            metrics=self.metrics,
            marks=marks,
            times=self._times,
            consume=consume,
        )
        self._recovery = Recovery(store, self._ingress, marks)
        self._outbox = Outbox(
            settings,
            store=store,
            channels=self.channels,
            metrics=self.metrics,
            policy=self.delivery,
            handoff=self.handoff,
        )
        self._egress = Egress(
            store=store,
            events=self.events,
            channels=self.channels,
            metrics=self.metrics,
            policy=self.delivery,
            outbox=self._outbox,
            times=self._times,
        )

    def subject_requests(self) -> SubjectRequests:
        """Data-subject export and erasure with this process's lanes and registered holders.

        The admin API and the console run requests through it (:mod:`bot.subjects`).

        Raises:
            bot.errors.BackendUnavailable: when the store is not the SQL store.
        """
        if not isinstance(self.store, SqlStore):
            raise BackendUnavailable("data-subject requests need the SQL store")
        return SubjectRequests(
            self.store,
            settings=self.settings,
            lanes=self.lanes,
            holders=self.subject_holders,
            counters=getattr(self.lanes, "client", None),  # Redis lanes: the counters' server
        )

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the event feed, the lanes (when consuming) and channels, then recover.

        Memory lanes: re-enqueue what was accepted but not handled. Shared lanes: start the
        recovery sweep (consuming processes; see :mod:`bot.hub`). Consuming processes also
        start the outbox loop, which sends what earlier sends (of any process) left.
        """
        start_events = getattr(self.events, "start", None)  # RedisEventBus: publisher/listener
        if start_events is not None:
            await start_events()
        if self.consume:
            await self.lanes.start(self.router.handle, self.router.on_overflow)
        for channel in self.channels.values():
            await channel.start(self)
        if self.receives:
            await self.receivers.start()
            self.retention.start()
        if self.marks is None:
            await self._recovery.requeue_unhandled()
        elif self.consume:
            self._recovery.start()
        if self.consume:
            self._outbox.start()
        await self.sweeper.start()
        self.ready = True
        log.info("hub.started", extra={"channels": sorted(self.channels), "consume": self.consume})

    async def stop(self, timeout_s: float | None = None) -> None:
        """Drain gracefully, then close everything.

        Stops the pull receivers first (what they fetched is ingested: a Discord gateway
        never redelivers), then refuses new messages, lets running turns finish (bounded by
        ``timeout_s``, default ``settings.drain_timeout_s`` seconds) and keeps what is queued:
        it stays stored as unhandled and is re-enqueued at the next start.
        """
        if self._stopping:
            return
        self._stopping = True
        self.ready = False
        await self.receivers.stop()
        await self.retention.stop()
        await self.sweeper.stop()
        self._draining = True
        timeout = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        await self._recovery.stop()
        await self._outbox.stop()  # an entry being sent is given back (due now)
        left = await self.lanes.drain(timeout)
        await self._outbox.finish_escalations(timeout)  # of undeliverable sessions
        log.info("hub.drained", extra={"kept_unhandled": len(left)})
        for channel in self.channels.values():
            try:
                await channel.stop()
            except Exception:
                log.exception("hub.channel_stop_failed", extra={"channel": channel.name})
        await self.lanes.close()
        for obj in self._closeables:
            try:
                await obj.close()
            except Exception:
                log.exception("hub.close_failed", extra={"object": type(obj).__name__})
        await self.store.close()

    @property
    def draining(self) -> bool:
        """True once :meth:`stop` refuses messages (after the pull receivers stopped)."""
        return self._draining

    @property
    def retriever_or_empty(self) -> Retriever:
        """The knowledge base, or a retriever that finds nothing."""
        return self.retriever if self.retriever is not None else self._no_knowledge

    # --- the doors in and out -----------------------------------------------------------------
    async def ingest(self, msg: InboundMessage) -> IngestReceipt:
        """Deduplicate, persist, publish and enqueue one customer message (:mod:`bot.hub.ingest`).

        Returns:
            A receipt; ``duplicate`` is True when this event was accepted before.

        Raises:
            Draining: the hub is shutting down (answer 503 so the platform retries).
            bot.errors.BackendUnavailable: the store cannot keep the message (503).
        """
        if self._draining:
            raise Draining("the hub is shutting down; retry later")
        return await self._ingress.ingest(msg)

    async def deliver(self, out: OutboundMessage) -> StoredMessage:
        """Store an outbound message, publish it, and send it (:meth:`Egress.deliver`).

        Returns:
            The stored message (the earlier one when ``idempotency_key`` was delivered before;
            then nothing is sent again).
        """
        return await self._egress.deliver(out)

    async def drain_outbox(self) -> int:
        """One pass of the outbox loop (:meth:`Outbox.drain`); how many entries were delivered.

        Raises:
            bot.errors.BackendUnavailable: when the store cannot be read or written.
        """
        return await self._outbox.drain()

    async def recover_unmarked(self) -> int:
        """One recovery sweep of shared lanes (:meth:`Recovery.recover_unmarked`).

        Returns:
            How many messages this sweep put back on their lanes.

        Raises:
            bot.errors.BackendUnavailable: when Redis or the store cannot be reached.
        """
        return await self._recovery.recover_unmarked()

    # --- what the router needs besides (bot.router.TurnHost) ----------------------------------
    def publish_typing(self, key: SessionKey) -> None:
        """Tell live viewers (web chat, console) that the bot is composing a reply."""
        self.events.publish(HubEvent("typing", key))

    def forget_ingest_times(self, key: SessionKey, messages: Sequence[InboundMessage]) -> None:
        """Drop latency bookkeeping of a finished turn's messages (bounded memory)."""
        self._times.forget(key, messages)
