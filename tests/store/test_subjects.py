"""Data-subject export and erasure: nothing of the customer is left in any table afterwards."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from bot.config import Settings
from bot.envelope import (
    InboundMessage,
    OutboundMessage,
    Participant,
    SessionKey,
    session_key,
    utcnow,
)
from bot.store.base import NewMessage, Role
from bot.store.engine import JsonType, make_engine
from bot.store.sql import SqlStore
from bot.store.subjects import Subject, export_document
from plugins.ticketing.local import LocalTicketBackend

ZOFIA = Participant(id="618020145", name="Zofia Wiśniewska", email="zofia.w@example.org")
OSKAR = Participant(id="733100200", name="Oskar Nowak", email="oskar.n@example.net")
ZOFIA_TEXTS = [
    "My card ending 4242 was charged twice, call me on +48 601 234 567",
    "Also the parcel to ul. Kwiatowa 7 never came",
    "hello group, quick question about invoices from Zofia",
]
ZOFIA_IDS = [ZOFIA.id, "Zofia Wiśniewska", "zofia.w@example.org", "+48 601 234 567", *ZOFIA_TEXTS]

# A plugin's own table (a CRM sync, say), unknown to the store: reflection must find it.
crm = sa.MetaData()
crm_contacts = sa.Table(
    "crm_contacts",
    crm,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("contact", JsonType, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)


def dm(who: Participant) -> SessionKey:
    """The Telegram direct conversation of ``who`` with the subject tests' bot."""
    return session_key("telegram", "bot1", dm_peer=who.id)


GROUP = session_key("telegram", "bot1", chat="-100200300")


def said(who: Participant, key: SessionKey, event_id: str, text: str) -> InboundMessage:
    """A Telegram message ``who`` wrote in ``key`` (the subject tests' cast writes there)."""
    return InboundMessage(
        event_id=event_id,
        channel="telegram",
        account="bot1",
        session_key=key,
        sender=who,
        text=text,
        raw={"message": {"from": {"id": int(who.id), "first_name": who.name}, "text": text}},
    )


async def _say(store: SqlStore, who: Participant, key: SessionKey, n: int, text: str) -> None:
    assert await store.append_inbound(said(who, key, f"{who.id}-{n}", text)) is not None


async def _populate(store: SqlStore) -> None:
    tickets = LocalTicketBackend.for_store(store)
    for who, texts in ((ZOFIA, ZOFIA_TEXTS[:2]), (OSKAR, ["Where is my refund for order 77?"])):
        key = dm(who)
        for n, text in enumerate(texts):
            await _say(store, who, key, n, text)
        await store.append(
            [NewMessage(key, Role.BOT, f"I will e-mail {who.email} shortly.", kind="answer")]
        )
        ticket = await tickets.create(
            subject="Refund",
            description=texts[0],
            requester=who,
            channel="telegram",
            session_key=key,
        )
        await tickets.comment(ticket.id, "ann", f"called {who.name}")
        await store.outbox_put(
            OutboundMessage(session_key=key, text=f"Dear {who.name}, update below"),
            error="TimeoutError()",
            next_attempt_at=utcnow() + timedelta(minutes=5),
        )
        await store.audit("ann", "claim", key, {"from": "queue"})
        await store.audit("bot", "tool:lookup_order", None, {"email": who.email})
    # A group chat both write in: Oskar's part stays, Zofia's goes.
    await _say(store, OSKAR, GROUP, 10, "anyone else waiting for refunds?")
    await _say(store, ZOFIA, GROUP, 11, ZOFIA_TEXTS[2])
    await _say(store, OSKAR, GROUP, 12, "ask zofia.w@example.org, Zofia knows")
    await store.audit("ann", "agent.create", None, {"agent": "bob"})
    async with store.engine.begin() as conn:
        await conn.run_sync(crm.create_all)
        await conn.execute(
            crm_contacts.insert(),
            [
                {"id": 1, "contact": {"email": ZOFIA.email, "tier": "gold"}, "note": "VIP"},
                {"id": 2, "contact": {"email": OSKAR.email, "tier": "std"}, "note": "ok"},
                {"id": 3, "contact": {}, "note": f"merged with {ZOFIA.name}'s account"},
            ],
        )


async def _dump(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, text and JSON as text (its own engine: reflection)."""
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:

            def read(sync: sa.Connection) -> dict[str, list[dict[str, Any]]]:
                meta = sa.MetaData()
                meta.reflect(sync)
                return {
                    name: [
                        {k: json.dumps(v, default=str, ensure_ascii=False) for k, v in r.items()}
                        for r in sync.execute(sa.select(table)).mappings()
                    ]
                    for name, table in meta.tables.items()
                }

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


def _holding(dump: dict[str, list[dict[str, Any]]], values: list[str]) -> list[str]:
    found = []
    for table, rows in dump.items():
        for row in rows:
            for column, text in row.items():
                if any(v in text or json.dumps(v)[1:-1] in text for v in values):
                    found.append(f"{table}.{column}")
    return found


def _untouched(dump: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows about Oskar (or no one) that never mention Zofia."""
    return sorted(
        (
            {"table": table, **row}
            for table, rows in dump.items()
            if table != "audit"
            for row in rows
            if not _holding({table: [row]}, ZOFIA_IDS)
        ),
        key=lambda r: json.dumps(r, sort_keys=True),
    )


async def test_export_then_erase_leaves_nothing_of_the_customer(
    store: SqlStore, settings: Settings
) -> None:
    """SQLite names her by channel and user id, PostgreSQL by e-mail: both forms, both DBs."""
    await _populate(store)
    subject = (
        Subject(email="Zofia.W@example.org")
        if settings.database_url
        else Subject(channel="telegram", user_id=ZOFIA.id)
    )
    before = await _dump(settings)
    assert len(_holding(before, ZOFIA_IDS)) > 10

    data = await store.export_subject(subject, actor="cli")
    exported = json.dumps(export_document(subject, data), default=str, ensure_ascii=False)
    for value in ZOFIA_IDS:
        assert value in exported
    assert "anyone else waiting" not in exported  # Oskar's group message is his
    assert "Where is my refund" not in exported
    assert {"conversations", "messages", "tickets", "ticket_comments", "outbox"} <= set(
        data.tables
    )
    assert {"audit", "crm_contacts"} <= set(data.tables)

    report = await store.erase_subject(subject, actor="cli")
    assert report.sessions == 1
    assert report.deleted["messages"] == 4  # two in her chat, the answer, her group message
    assert report.audit_erased == 2

    after = await _dump(settings)
    assert _holding(after, ZOFIA_IDS) == []
    untouched = _untouched(before)
    still = _untouched(after)
    assert [r for r in untouched if r not in still] == []
    kept = json.dumps(after, ensure_ascii=False)
    assert "anyone else waiting for refunds?" in kept
    assert "ask [erased], Zofia knows" in kept  # his words stay; her address goes

    check = await store.verify_audit()
    assert check.ok, check.chain.problems
    assert check.erased == 2
    assert check.chain.entries == 7  # 5 written, the export's, the erasure's
    erase_entry = (await store.audit_records(limit=1))[0]
    assert erase_entry.action == "privacy.erase"
    assert erase_entry.detail["request_id"] == report.request_id

    # The hub keeps working for her if she writes again: a new conversation.
    await _say(store, ZOFIA, dm(ZOFIA), 99, "hi again")
    (again,) = await store.messages(dm(ZOFIA))
    assert again.seq == 1
