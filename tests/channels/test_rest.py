"""The REST contract of issue 2, against a real served hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from bot.envelope import Citation
from bot.hub import Hub
from bot.server import HUB_KEY
from bot.store.base import NewMessage, Role
from channels.memory.pytest_plugin import HubFactory, ScriptedAgent
from channels.rest.plugin import RestChannel
from channels.rest.translate import rest_session_key
from tests.channels.support import PAYLOADS, serve_hub

Client = TestClient[web.Request, web.Application]
URL = "/api/v1/conversations/{}/messages"


@pytest_asyncio.fixture
async def client(hub_factory: HubFactory) -> AsyncIterator[Client]:
    hub = await hub_factory(channels=(RestChannel,), max_message_bytes=100)
    async with serve_hub(hub) as c:
        yield c


def hub_of(client: Client) -> Hub:
    assert client.app is not None
    return client.app[HUB_KEY]


async def post(client: Client, conv: str, body: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(URL.format(conv), json=body, **kw)
    return resp.status, await resp.json()


async def get(client: Client, conv: str, **params: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.get(URL.format(conv), params={k: str(v) for k, v in params.items()})
    return resp.status, await resp.json()


async def answers(client: Client, conv: str, after: int = 0, wait: float = 5) -> list[Any]:
    """Non-customer messages after ``after``, long-polling until at least one exists."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    found: list[Any] = []
    while not found and loop.time() < deadline:
        status, page = await get(client, conv, after=after, wait=round(deadline - loop.time(), 3))
        assert status == 200
        for m in page["messages"]:
            after = max(after, m["seq"])
            if m["role"] != "customer":
                found.append(m)
    return found


async def test_post_is_accepted_and_answered_with_citations(client: Client) -> None:
    status, body = await post(client, "conv-1", {"text": "hi there", "user": {"id": "u1"}})
    assert status == 202
    assert body["session_key"] == "rest:default:conv-1"
    assert len(body["event_id"]) == 32  # generated
    assert body["duplicate"] is False
    status, page = await get(client, "conv-1", wait=5)
    assert status == 200
    assert page["mode"] == "bot"
    first = page["messages"][0]
    assert (first["seq"], first["role"], first["text"], first["kind"]) == (
        1,
        "customer",
        "hi there",
        "message",
    )
    if len(page["messages"]) == 1:  # the answer may land after the first read
        page["messages"] += await answers(client, "conv-1", after=1)
    answer = page["messages"][1]
    assert answer["role"] == "bot"
    assert answer["text"] == "Echo: hi there"
    assert answer["reply_to"] == body["event_id"]
    assert answer["citations"] == [
        {
            "doc_id": "guide",
            "title": "User guide",
            "url": "https://docs.example.com/guide",
            "score": 1.0,
        }
    ]
    assert datetime.fromisoformat(answer["created_at"]).tzinfo is not None


async def test_repeated_event_id_is_accepted_once_and_answered_once(client: Client) -> None:
    body = {"text": "where is my parcel", "user": {"id": "u1"}, "event_id": "e-1"}
    s1, r1 = await post(client, "conv-d", body)
    s2, r2 = await post(client, "conv-d", body)
    assert (s1, s2) == (202, 202)
    assert (r1["duplicate"], r2["duplicate"]) == (False, True)
    assert r1["event_id"] == r2["event_id"] == "e-1"
    assert len(await answers(client, "conv-d")) == 1
    await asyncio.sleep(0.3)  # a second answer would have landed by now
    _, page = await get(client, "conv-d")
    assert [m["role"] for m in page["messages"]] == ["customer", "bot"]
    agent = hub_of(client).agent
    assert isinstance(agent, ScriptedAgent)
    assert len(agent.turns) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": {"id": "u1"}}, "text"),
        ({"text": 5, "user": {"id": "u1"}}, "text"),
        ({"text": "", "user": {"id": "u1"}}, "text"),
        ({"text": "hi"}, "user"),
        ({"text": "hi", "user": {}}, "user.id"),
        ({"text": "hi", "user": {"id": ""}}, "user.id"),
        ({"text": "hi", "user": {"id": "u", "email": 3}}, "user.email"),
        ({"text": "hi", "user": {"id": "u"}, "event_id": ""}, "event_id"),
        (["not", "an", "object"], None),
    ],
)
async def test_schema_violation_is_400_naming_the_field(
    client: Client, body: Any, field: str | None
) -> None:
    status, answer = await post(client, "conv-v", body)
    assert status == 400
    assert answer.get("field") == field
    assert answer["error"]
    assert (await get(client, "conv-v"))[0] == 404, "nothing may be stored"


async def test_malformed_json_is_400(client: Client) -> None:
    resp = await client.post(
        URL.format("conv-m"),
        data=b'{"text": "hi", "user": ',
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert "malformed JSON" in (await resp.json())["error"]


async def test_text_over_max_message_bytes_is_413(client: Client) -> None:
    ok = "é" * 50  # 50 characters, 100 bytes: at the limit
    assert (await post(client, "conv-s", {"text": ok, "user": {"id": "u"}}))[0] == 202
    status, answer = await post(client, "conv-s", {"text": ok + "e", "user": {"id": "u"}})
    assert status == 413
    assert answer["field"] == "text"


async def test_unknown_conversation_is_404(client: Client) -> None:
    status, answer = await get(client, "never-seen")
    assert status == 404
    assert "never-seen" in answer["error"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "x"}, "after"),
        ({"after": -1}, "after"),
        ({"wait": "soon"}, "wait"),
        ({"wait": "nan"}, "wait"),
    ],
)
async def test_bad_query_is_400(client: Client, params: dict[str, Any], field: str) -> None:
    await post(client, "conv-q", {"text": "hi", "user": {"id": "u"}})
    status, answer = await get(client, "conv-q", **params)
    assert status == 400
    assert answer["field"] == field


async def test_long_poll_returns_as_soon_as_the_answer_lands(
    client: Client, scripted_agent: ScriptedAgent
) -> None:
    scripted_agent.delay_s = 0.4
    await post(client, "conv-l", {"text": "slow one", "user": {"id": "u"}})
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, page = await get(client, "conv-l", after=1, wait=10)
    elapsed = loop.time() - started
    assert status == 200
    assert [m["text"] for m in page["messages"]] == ["Echo: slow one"]
    assert 0.2 < elapsed < 5


async def test_long_poll_times_out_with_an_empty_list(client: Client) -> None:
    await post(client, "conv-t", {"text": "hi", "user": {"id": "u"}})
    last = (await answers(client, "conv-t"))[-1]["seq"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, page = await get(client, "conv-t", after=last, wait=0.5)
    assert status == 200
    assert page == {"mode": "bot", "messages": []}
    assert loop.time() - started >= 0.45


async def test_internal_notes_are_never_shown_and_mode_is_reported(client: Client) -> None:
    hub = hub_of(client)
    await post(client, "conv-n", {"text": "hi", "user": {"id": "u"}})
    await answers(client, "conv-n")
    key = rest_session_key("conv-n")
    await hub.store.append(
        [
            NewMessage(
                key, Role.AGENT, "customer seems angry", kind="note", author="ann", internal=True
            )
        ]
    )
    await hub.handoff.escalate(key, "customer_request")
    _, page = await get(client, "conv-n")
    assert page["mode"] == "queued"
    texts = [m["text"] for m in page["messages"]]
    assert "customer seems angry" not in texts
    assert page["messages"][-1]["role"] == "system"


async def test_agent_reply_shows_author(client: Client) -> None:
    from bot.envelope import OutboundKind, OutboundMessage

    hub = hub_of(client)
    await post(client, "conv-a", {"text": "hi", "user": {"id": "u"}})
    seq = (await answers(client, "conv-a"))[-1]["seq"]
    await hub.deliver(
        OutboundMessage(
            session_key=rest_session_key("conv-a"),
            text="Hello, Ann here.",
            kind=OutboundKind.AGENT,
            author="Ann",
            citations=(Citation(doc_id="d", title="D"),),
        )
    )
    [m] = await answers(client, "conv-a", after=seq)
    assert (m["role"], m["kind"], m["author"], m["text"]) == (
        "agent",
        "agent",
        "Ann",
        "Hello, Ann here.",
    )
    assert m["citations"] == [{"doc_id": "d", "title": "D", "url": None, "score": 0.0}]


async def test_bearer_api_keys(hub_factory: HubFactory) -> None:
    hub = await hub_factory(channels=(RestChannel,), api_keys="key-one,key-two")
    async with serve_hub(hub) as c:
        body = {"text": "hi", "user": {"id": "u7"}}
        url = URL.format("conv-k")
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": "key-one"},
            {"Authorization": "Basic key-one"},
            {"Authorization": "Bearer "},
        ):
            resp = await c.post(url, json=body, headers=headers)
            assert resp.status == 401, headers
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert "error" in await resp.json()
        resp = await c.get(url)
        assert resp.status == 401
        resp = await c.post(url, json=body, headers={"Authorization": "Bearer key-two"})
        assert resp.status == 202
        conv = await hub.store.conversation(rest_session_key("conv-k"))
        assert conv is not None
        assert conv.customer.id == "u7"
        assert conv.customer.verified is True  # an API key vouches for the user id
        resp = await c.get(url, headers={"Authorization": "Bearer key-one"})
        assert resp.status == 200
        resp = await c.get("/api/v1/openapi.json")
        assert resp.status == 200
        assert (await resp.json())["security"] == [{"apiKey": []}]


async def test_openapi_document_is_valid_and_matches_answers(client: Client) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    validate(doc)
    assert set(doc["paths"]["/api/v1/conversations/{conversation_id}/messages"]) >= {
        "post",
        "get",
    }

    def check(instance: Any, schema_name: str) -> None:
        schema = {
            "$ref": f"#/components/schemas/{schema_name}",
            "components": doc["components"],
        }
        jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)

    _, accepted = await post(client, "conv-o", {"text": "hi", "user": {"id": "u"}})
    check(accepted, "MessageAccepted")
    await answers(client, "conv-o")
    _, page = await get(client, "conv-o")
    check(page, "MessagePage")
    _, error = await post(client, "conv-o", {"text": "hi"})
    check(error, "ErrorBody")
    check(json.loads((PAYLOADS / "rest" / "post_full.json").read_text()), "PostMessage")
    with pytest.raises(jsonschema.ValidationError):
        check({"text": "hi", "user": {}}, "PostMessage")


def test_parse_payload_uses_the_parsed_conversation(hub_settings: Any) -> None:
    data = (PAYLOADS / "rest" / "post_full.json").read_bytes()
    result = RestChannel.parse_payload(data, filename="post_full.json", settings=hub_settings)
    env = result.envelope  # type: ignore[union-attr]
    assert env.session_key == "rest:default:parsed"
    assert env.event_id == "evt-0001"
    assert (env.sender.id, env.sender.name, env.sender.email) == (
        "cust-7",
        "Ada Lovelace",
        "ada@example.com",
    )
    assert env.raw["user"]["id"] == "cust-7"


async def test_hub_stop_ends_open_long_polls_with_503(hub_factory: HubFactory) -> None:
    hub = await hub_factory(channels=(RestChannel,))
    async with serve_hub(hub) as c:
        await post(c, "conv-x", {"text": "hi", "user": {"id": "u"}})
        last = (await answers(c, "conv-x"))[-1]["seq"]
        loop = asyncio.get_running_loop()
        started = loop.time()
        poll = asyncio.create_task(c.get(URL.format("conv-x"), params={"after": last, "wait": 20}))
        await asyncio.sleep(0.2)
        await hub.stop(timeout_s=1)
        resp = await poll
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert loop.time() - started < 5
