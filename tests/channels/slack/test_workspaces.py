"""Several workspaces (configured tokens, OAuth installs in our database) and Socket Mode."""

from __future__ import annotations

import re

import pytest

from channels.slack.translate import slack_session_key
from tests.channels.slack.conftest import SlackServer
from tests.channels.slack.harness import DM_CHANNEL, dm, event_callback, post_signed
from tests.fakes.slack_api import BotIdentity, FakeSlackApi


# slack-sdk's oauth.v2.access passes aiohttp.BasicAuth, deprecated in aiohttp 3.14.
@pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")
async def test_oauth_install_stores_the_workspace_and_its_token_answers_it(
    slack_server: SlackServer, slack_api: FakeSlackApi
) -> None:
    slack_api.bots["xoxb-T222-installed"] = BotIdentity("T222", "UBOT2", "BBOT2")
    slack_api.oauth_access = {
        "ok": True,
        "app_id": "A111",
        "authed_user": {"id": "UINSTALLER"},
        "scope": "chat:write,im:history",
        "token_type": "bot",
        "access_token": "xoxb-T222-installed",
        "bot_user_id": "UBOT2",
        "team": {"id": "T222", "name": "Other"},
        "enterprise": None,
        "is_enterprise_install": False,
    }
    hub, client = await slack_server(
        slack_bot_token="T111=xoxb-T111-test",
        slack_client_id="111.222",
        slack_client_secret="client-secret",
        public_url="https://support.example.com",
    )
    resp = await client.get("/slack/install")
    assert resp.status == 200
    page = await resp.text()
    match = re.search(r"state=([\w-]+)", page)
    assert match is not None
    assert "client_id=111.222" in page
    assert "chat:write" in page
    state = match.group(1)
    cookie = resp.headers["Set-Cookie"].split(";")[0]
    resp = await client.get(
        "/slack/oauth_redirect",
        params={"code": "c0de", "state": state},
        headers={"Cookie": cookie},
    )
    assert resp.status == 200, await resp.text()
    [access] = slack_api.of("oauth.v2.access")
    assert access.args["code"] == "c0de"
    assert access.args["redirect_uri"] == "https://support.example.com/slack/oauth_redirect"
    # an event from the new workspace is answered with the installed token
    body = event_callback(
        dm("hola", user="UOTHER", channel="DOTHER"), event_id="EvT2", team="T222"
    )
    body["authorizations"][0]["user_id"] = "UBOT2"
    assert (await post_signed(client, body))[0] == 200
    [reply] = await slack_api.wait_for("chat.postMessage", channel="DOTHER")
    assert reply.token == "xoxb-T222-installed"
    assert reply.section_text == "Echo: hola"
    key = slack_session_key(
        "T222", channel="DOTHER", user="UOTHER", is_direct=True, thread_ts=None
    )
    assert await hub.store.conversation(key) is not None
    # and the configured workspace keeps its own token
    assert (await post_signed(client, event_callback(dm("hi"), event_id="EvT1")))[0] == 200
    [reply] = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL)
    assert reply.token == "xoxb-T111-test"


async def test_unknown_workspace_is_not_answered(
    slack_server: SlackServer, slack_api: FakeSlackApi
) -> None:
    hub, client = await slack_server(slack_bot_token="T111=xoxb-T111-test")
    body = event_callback(dm("hi", channel="DX"), event_id="EvX", team="T999")
    status, _ = await post_signed(client, body)
    assert status == 200  # bolt acks and drops it: the app is not installed there
    assert slack_api.of("chat.postMessage") == []
    assert await hub.store.conversations() == []


async def test_socket_mode_envelopes_are_acked_after_ingest_and_answered(
    slack_server: SlackServer, slack_api: FakeSlackApi
) -> None:
    slack_api.bots["xapp-1-test"] = BotIdentity("T111", "UBOT", "BBOT")
    hub, _ = await slack_server(slack_app_token="xapp-1-test")
    assert slack_api.of("apps.connections.open")[0].token == "xapp-1-test"
    envelope = {
        "envelope_id": "env-1",
        "type": "events_api",
        "accepts_response_payload": False,
        "retry_attempt": 0,
        "payload": event_callback(dm("over the socket"), event_id="EvS1"),
    }
    await slack_api.push_socket_envelope(envelope)
    ack = await slack_api.wait_for_ack("env-1")
    assert ack["envelope_id"] == "env-1"
    stored = await hub.store.messages(
        slack_session_key("T111", channel=DM_CHANNEL, user="UCUST", is_direct=True, thread_ts=None)
    )
    assert [m.text for m in stored][:1] == ["over the socket"]
    [reply] = await slack_api.wait_for("chat.postMessage", channel=DM_CHANNEL)
    assert reply.section_text == "Echo: over the socket"
