from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from bot.config import Settings
from bot.errors import BackendUnavailable
from knowledge.embed import LiteLLMEmbedder, LocalEmbedder, Vectors, embedder_from_settings


async def test_local_vectors_are_unit_length_and_meaningful(local_embedder: LocalEmbedder) -> None:
    texts = [
        "How do I reset my password?",
        "Steps to change a forgotten password",
        "The recipe needs two cups of flour.",
    ]
    vectors = await local_embedder.embed(texts)

    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar = float(vectors[0] @ vectors[1])
    unrelated = float(vectors[0] @ vectors[2])
    assert similar > 0.5 > unrelated + 0.3


async def test_padding_does_not_change_a_vector(local_embedder: LocalEmbedder) -> None:
    short = "Turn on Wi-Fi calling."
    long = "Wi-Fi calling lets you make calls over a wireless network. " * 10
    alone = await local_embedder.embed([short])
    batched = await local_embedder.embed([short, long])
    assert np.allclose(alone[0], batched[0], atol=1e-4)


async def test_long_text_is_truncated_at_256_tokens(local_embedder: LocalEmbedder) -> None:
    head = "Bluetooth pairing with headphones. " * 60  # well over 256 word pieces
    a = await local_embedder.embed([head + "Completely different tail about cooking pasta."])
    b = await local_embedder.embed([head])
    assert np.allclose(a, b, atol=1e-5)  # the tail lies beyond the truncation point
    assert local_embedder.max_tokens == 256


async def test_embedding_runs_off_the_event_loop(local_embedder: LocalEmbedder) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await local_embedder.embed(["A fairly long sentence about settings and sounds. " * 10] * 8)
    task.cancel()
    assert ticks > 3  # the loop kept running while the model worked


@pytest.fixture
async def fake_embeddings() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible ``POST /v1/embeddings`` on 127.0.0.1:0 that records requests.

    API: https://platform.openai.com/docs/api-reference/embeddings/create
    """
    requests: list[dict[str, Any]] = []

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        requests.append({"body": body, "auth": request.headers.get("Authorization")})
        if body["input"] == ["fail"]:
            return web.json_response({"error": {"message": "boom"}}, status=400)
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), 0.0, 3.0]}
            for i, text in enumerate(body["input"])
        ]
        data.reverse()  # the client must order by index
        payload = {"object": "list", "data": data, "model": body["model"]}
        payload["usage"] = {"prompt_tokens": 1, "total_tokens": 1}
        return web.Response(text=json.dumps(payload), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", requests
    finally:
        await runner.cleanup()


async def test_litellm_embedder_through_a_fake_openai_server(
    fake_embeddings: tuple[str, list[dict[str, Any]]],
) -> None:
    base, requests = fake_embeddings
    settings = Settings(
        embedding_model="openai/test-embed",
        embedding_api_base=base,
        embedding_api_key="sk-test",  # type: ignore[arg-type]
    )
    embedder = embedder_from_settings(settings)
    assert isinstance(embedder, LiteLLMEmbedder)

    vectors = await embedder.embed(["abcd", "ab"])

    assert await embedder.dimension() == 3
    assert np.allclose(vectors[0], np.array([4.0, 0.0, 3.0]) / 5.0)
    assert np.allclose(vectors[1], np.array([2.0, 0.0, 3.0]) / np.sqrt(13.0))
    assert requests[0]["body"]["model"] == "test-embed"
    assert requests[0]["body"]["input"] == ["abcd", "ab"]
    assert requests[0]["auth"] == "Bearer sk-test"
    with pytest.raises(BackendUnavailable, match="test-embed"):
        await embedder.embed(["fail"])


def test_a_vector_does_not_depend_on_its_batch(local_embedder: LocalEmbedder) -> None:
    # embed_sync sorts by token count and pads each model batch to its longest text: a short
    # text batched with long ones must get the vector it gets alone.
    short = "Reset the router."
    long_ = "How do I pair my earbuds with the phone? " * 30
    alone = local_embedder.embed_sync([short])[0]
    mixed = local_embedder.embed_sync([long_, short, long_[:200], short + " Now."])
    assert float(alone @ mixed[1]) >= 0.9999
    assert float(mixed[0] @ local_embedder.embed_sync([long_])[0]) >= 0.9999
    assert float(alone @ mixed[3]) < 0.9999  # a different text gets another vector


async def test_concurrent_queries_share_model_calls_and_get_their_own_vectors(
    local_embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = [f"How do I reset the password of account {n}?" for n in range(20)]
    alone = [local_embedder.embed_sync([q])[0] for q in questions]
    calls: list[int] = []
    embed_sync = local_embedder.embed_sync

    def counting(texts: list[str]) -> Vectors:
        calls.append(len(texts))
        return embed_sync(texts)

    monkeypatch.setattr(local_embedder, "embed_sync", counting)

    results = await asyncio.gather(*(local_embedder.embed([q]) for q in questions))

    assert sum(calls) == 20
    assert len(calls) < 20  # queries that arrived while a call ran went in one call
    for got, expected in zip(results, alone, strict=True):
        assert got.shape == (1, 384)
        assert float(np.dot(got[0], expected)) > 0.999
