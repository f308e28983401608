"""A small handoff test bench.

The real SqlStore, the local SQL ticket backend, an event bus and a recording ``deliver`` that
stores like the hub does. It also satisfies the console's ``ConsoleHub``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.envelope import InboundMessage, OutboundKind, OutboundMessage, Participant, SessionKey
from bot.envelope import session_key as make_key
from bot.events import EventBus, HubEvent
from bot.handoff import Handoff
from bot.store.base import NewMessage, Role, StoredMessage
from bot.store.sql import SqlStore
from bot.subjects import SubjectRequests
from bot.tools import CrmBackend
from plugins.ticketing.local import LocalTicketBackend

_ROLE = {
    OutboundKind.ANSWER: Role.BOT,
    OutboundKind.AGENT: Role.AGENT,
}


@dataclass
class Desk:
    settings: Settings
    store: SqlStore
    events: EventBus
    tickets: LocalTicketBackend
    sent: list[OutboundMessage] = field(default_factory=list)
    crm: CrmBackend | None = None
    handoff: Handoff = field(init=False)

    def __post_init__(self) -> None:
        self.handoff = Handoff(self.settings, self.store, self.events, self.tickets, self.deliver)

    def subject_requests(self) -> SubjectRequests:
        """Data-subject requests on the desk's store (it has no lanes, nothing registered)."""
        return SubjectRequests(self.store, settings=self.settings, lanes=None)

    async def deliver(self, out: OutboundMessage) -> StoredMessage:
        """What the hub's deliver does, minus the channel: store, publish, record the send."""
        [stored] = await self.store.append(
            [
                NewMessage(
                    session_key=out.session_key,
                    role=_ROLE.get(out.kind, Role.SYSTEM),
                    text=out.text,
                    kind=out.kind.value,
                    author=out.author,
                    citations=out.citations,
                    event_id=out.idempotency_key,
                )
            ]
        )
        self.events.publish(
            HubEvent(
                "message",
                out.session_key,
                stored.seq,
                data={"role": stored.role.value, "kind": stored.kind},
            )
        )
        self.sent.append(out)
        return stored

    async def customer_says(
        self, text: str, *, chat: str = "c1", name: str = "Dana Customer", event_id: str = ""
    ) -> SessionKey:
        """Store one customer message on ``rest:default:{chat}``; returns the session key."""
        key = make_key("rest", "default", chat=chat)
        n = len(await self.store.messages(key)) + 1
        msg = InboundMessage(
            event_id=event_id or f"{chat}-{n}",
            channel="rest",
            account="default",
            session_key=key,
            sender=Participant(id=f"user-{chat}", name=name),
            text=text,
        )
        await self.store.append_inbound(msg)
        return key

    def sent_to(self, key: SessionKey) -> list[OutboundMessage]:
        return [o for o in self.sent if o.session_key == key]


@asynccontextmanager
async def open_desk(data_dir: Path, **overrides: Any) -> AsyncIterator[Desk]:
    """A desk on a fresh SQLite database in ``data_dir``; closed on exit."""
    settings = Settings(data_dir=data_dir, **overrides)
    store = SqlStore(settings)
    await store.open()
    tickets = LocalTicketBackend.for_store(store, settings)
    await tickets.open()
    try:
        yield Desk(settings, store, EventBus(), tickets)
    finally:
        await tickets.close()
        await store.close()
