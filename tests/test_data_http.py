"""The admin API of data-subject requests: export and erase one customer over HTTP."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.compose import build_hub
from bot.envelope import InboundMessage, Participant, session_key
from bot.server import make_app
from bot.store.sql import SqlStore
from channels.memory.pytest_plugin import ScriptedAgent, make_settings
from tests.channels.support import serve

Client = TestClient[web.Request, web.Application]
ADMIN = {"Authorization": "Bearer admin-key-123"}
PREFIX = "/api/v1/admin/privacy"
KAI = Participant(id="U0KAI77", name="Kai Lindqvist", email="kai.l@example.com")


async def test_export_and_erase_through_the_admin_api(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data", api_keys=["channel-key-456"], admin_api_keys=["admin-key-123"]
    )
    settings.data_dir.mkdir(parents=True)
    hub = await build_hub(settings, agent=ScriptedAgent(), load_knowledge=False, channels=[])
    store = hub.store
    assert isinstance(store, SqlStore)
    key = session_key("slack", "T1", dm_peer=KAI.id)
    await store.open()
    msg = InboundMessage(
        event_id="Ev1", channel="slack", account="T1", session_key=key, sender=KAI, text="hi!"
    )
    await store.append_inbound(msg)
    body = {"channel": "slack", "user_id": KAI.id}
    try:
        async with serve(make_app(hub)) as client:
            channel_key = {"Authorization": "Bearer channel-key-456"}
            assert (await client.post(f"{PREFIX}/export", json=body)).status == 401
            resp = await client.post(f"{PREFIX}/export", json=body, headers=channel_key)
            assert resp.status == 401
            resp = await client.post(f"{PREFIX}/export", json={}, headers=ADMIN)
            assert resp.status == 400

            resp = await client.post(f"{PREFIX}/export", json=body, headers=ADMIN)
            assert resp.status == 200
            doc = await resp.json()
            assert doc["sessions"] == [key]
            assert [m["text"] for m in doc["tables"]["messages"]] == ["hi!"]

            resp = await client.post(f"{PREFIX}/erase", json=body, headers=ADMIN)
            assert resp.status == 400  # no confirmation
            assert await store.conversation(key) is not None
            resp = await client.post(
                f"{PREFIX}/erase", json={**body, "confirm": True}, headers=ADMIN
            )
            assert resp.status == 200
            report = await resp.json()
            assert report["deleted"] == {"conversations": 1, "messages": 1}
    finally:
        await store.close()
    store = SqlStore(settings)
    await store.open()
    try:
        assert await store.conversation(key) is None
        actions = [(r.actor, r.action) for r in await store.audit_records()]
        assert actions == [("admin-api", "privacy.erase"), ("admin-api", "privacy.export")]
    finally:
        await store.close()
