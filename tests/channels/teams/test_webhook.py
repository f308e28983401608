"""The messaging endpoint: Bot Framework authentication and bad input, each stores nothing."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.channels.teams.harness import TeamsHarness, activity
from tests.fakes.botframework import FakeBotFramework, rsa_key


async def assert_nothing_stored(teams: TeamsHarness) -> None:
    assert await teams.hub.store.conversations() == []
    assert await teams.hub.store.unhandled() == []
    assert teams.hub.agent.turns == []


async def test_a_valid_token_is_accepted_and_the_message_answered(teams: TeamsHarness) -> None:
    resp = await teams.post(activity(teams.fake, text="hello", event_id="ok-1"))
    assert resp.status == 200
    assert (await resp.json())["session_key"] == teams.session_key
    answer = await teams.next_posted()
    assert answer.body["text"] == "Echo: hello"
    assert answer.reply_to == "ok-1"
    assert answer.authorization.startswith("Bearer bot-token-")
    # the outbound token came from the client credentials grant
    [form] = teams.fake.token_requests
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://api.botframework.com/.default"
    assert teams.fake.metadata_fetches == 1


async def test_the_second_path_works_too(teams: TeamsHarness) -> None:
    resp = await teams.post(
        activity(teams.fake, text="hello", event_id="ok-2"), path="/teams/messages"
    )
    assert resp.status == 200


TokenMaker = Callable[[FakeBotFramework], str]

FORGED: dict[str, TokenMaker] = {
    "wrong_key": lambda f: f.channel_token(key=rsa_key("forger")),
    "expired": lambda f: f.channel_token(expires_in_s=-3600),
    "wrong_audience": lambda f: f.channel_token(audience="someone-elses-app"),
    "wrong_issuer": lambda f: f.channel_token(issuer="https://evil.example.com"),
    "unsigned_alg_none": lambda f: f.channel_token(algorithm="none"),
    "service_url_mismatch": lambda f: f.channel_token(service_url="https://evil.example.com/"),
    "unknown_kid": lambda f: f.sign(
        {"iss": "https://api.botframework.com", "aud": f.app_id, "serviceurl": f.service_url},
        kid="not-a-published-key",
    ),
    "hs256_with_public_key": lambda f: f.sign(
        {"iss": "https://api.botframework.com", "aud": f.app_id, "serviceurl": f.service_url},
        algorithm="HS256",
        key=b"k" * 32,  # type: ignore[arg-type]
    ),
}


REASONS = {
    "wrong_key": "Signature verification failed",
    "expired": "Signature has expired",
    "wrong_audience": "Invalid AppId",
    "wrong_issuer": "not issued by the Bot Framework",
    "unsigned_alg_none": "algorithm not in allowed list",
    "service_url_mismatch": "Invalid 'serviceurl' claim",
    "unknown_kid": "unknown key",
    "hs256_with_public_key": "algorithm not in allowed list",
}


@pytest.mark.parametrize("case", sorted(FORGED))
async def test_invalid_tokens_are_rejected_with_401(teams: TeamsHarness, case: str) -> None:
    token = FORGED[case](teams.fake)
    resp = await teams.post(
        activity(teams.fake, text="let me in", event_id=f"bad-{case}"), token=token
    )
    assert resp.status == 401, await resp.text()
    assert REASONS[case] in (await resp.json())["error"]
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    await assert_nothing_stored(teams)
    assert teams.fake.posted == []


@pytest.mark.parametrize(
    "authorization", ["", "Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-jwt", "bearer x.y.z"]
)
async def test_missing_or_malformed_authorization_is_401(
    teams: TeamsHarness, authorization: str
) -> None:
    resp = await teams.post(activity(teams.fake, text="hi"), authorization=authorization)
    assert resp.status == 401
    await assert_nothing_stored(teams)


async def test_a_key_not_endorsed_for_the_channel_is_rejected(teams: TeamsHarness) -> None:
    doc = activity(teams.fake, text="hi", channelId="webchat")
    resp = await teams.post(doc)
    assert resp.status == 401
    await assert_nothing_stored(teams)


async def test_truncated_json_is_400(teams: TeamsHarness) -> None:
    body = json.dumps(activity(teams.fake, text="hello")).encode()
    resp = await teams.post(body[: len(body) // 2])
    assert resp.status == 400
    await assert_nothing_stored(teams)


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"{}", b'{"type": 5}'])
async def test_bodies_that_are_no_activity_are_400(teams: TeamsHarness, body: bytes) -> None:
    resp = await teams.post(body)
    assert resp.status == 400
    await assert_nothing_stored(teams)


async def test_an_activity_without_service_url_is_400(teams: TeamsHarness) -> None:
    doc = activity(teams.fake, text="hello")
    del doc["serviceUrl"]
    resp = await teams.post(doc)
    assert resp.status == 400
    await assert_nothing_stored(teams)


async def test_a_5_mb_body_is_413(teams: TeamsHarness) -> None:
    doc = activity(teams.fake, text="x" * (5 * 1024 * 1024))
    resp = await teams.post(doc)
    assert resp.status == 413
    await assert_nothing_stored(teams)


async def test_a_text_over_the_message_limit_is_413(teams: TeamsHarness) -> None:
    limit = teams.hub.settings.max_message_bytes
    resp = await teams.post(activity(teams.fake, text="y" * (limit + 1)))
    assert resp.status == 413
    await assert_nothing_stored(teams)


@pytest.mark.parametrize(
    "extra",
    [
        {"type": "messageReaction", "reactionsAdded": [{"type": "like"}]},
        {"type": "typing"},
        {"type": "installationUpdate", "action": "add"},
        {"type": "messageUpdate", "text": "edited"},
    ],
    ids=["reaction", "typing", "installation", "edit"],
)
async def test_non_message_activities_are_acked_and_ignored(
    teams: TeamsHarness, extra: dict[str, object]
) -> None:
    resp = await teams.post(activity(teams.fake, **extra))  # type: ignore[arg-type]
    assert resp.status == 200
    await assert_nothing_stored(teams)
    assert [p for p in teams.fake.posted if p.type == "message"] == []


async def test_the_bots_own_message_is_ignored(teams: TeamsHarness) -> None:
    doc = activity(teams.fake, text="Echo: loop?")
    doc["from"] = {"id": f"28:{teams.fake.app_id}", "name": "Switchboard"}
    resp = await teams.post(doc)
    assert resp.status == 200
    await assert_nothing_stored(teams)


async def test_an_unhandled_invoke_gets_the_sdk_answer_and_nothing_is_stored(
    teams: TeamsHarness,
) -> None:
    doc = activity(teams.fake, type="invoke", name="adaptiveCard/action", value={"action": {}})
    resp = await teams.post(doc)
    assert resp.status == 501
    await assert_nothing_stored(teams)
