from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from bot.channel import Ignored, Parsed
from channels.slack.plugin import SlackChannel
from tests.channels.contract import ChannelContract, ChannelHarness
from tests.channels.slack.conftest import SlackServer
from tests.channels.slack.harness import SlackHarness, shared_payloads
from tests.fakes.slack_api import FakeSlackApi


class TestSlackContract(ChannelContract):
    @pytest_asyncio.fixture
    async def harness(
        self, slack_server: SlackServer, slack_api: FakeSlackApi
    ) -> AsyncIterator[SlackHarness]:
        hub, client = await slack_server()
        h = SlackHarness(hub, client, slack_api)
        yield h
        await h.close()

    def test_parse_recorded_payloads(self, harness: ChannelHarness) -> None:
        """The contract's check, over the recorded Slack payloads in ../shared."""
        parsed = 0
        for path in shared_payloads():
            data = path.read_bytes()
            result = SlackChannel.parse_payload(
                data, filename=path.name, settings=harness.hub.settings
            )
            assert isinstance(result, Parsed | Ignored), path.name
            if isinstance(result, Parsed):
                parsed += 1
                env = result.envelope
                assert env.channel == "slack"
                assert env.session_key.startswith("slack:")
                assert env.event_id
                assert env.text or env.action, path.name
                again = SlackChannel.parse_payload(
                    data, filename=path.name, settings=harness.hub.settings
                )
                assert isinstance(again, Parsed)
                assert again.envelope.event_id == env.event_id
        assert parsed >= 5
