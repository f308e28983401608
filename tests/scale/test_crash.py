"""Crash safety of the scaled-out hub, on real Redis and PostgreSQL servers.

One ingress process (``serve --workers 0``), two ``switchboard worker`` processes, 2,000
messages over 200 REST conversations in ``followup`` mode. In the middle, a worker is
SIGKILLed (its leases expire and the other worker resumes its sessions) or Redis is killed and
restarted from its AOF (ingress answers 503, the client retries like a platform, workers
reconnect). Afterwards every message has exactly one bot reply, in the order sent.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.scale.cluster import Deployment, Proc, RestDriver

pytestmark = pytest.mark.timeout(180)  # a guard: several processes start; CI machines vary

CONVERSATIONS = 200
PER_CONVERSATION = 10
TOTAL = CONVERSATIONS * PER_CONVERSATION


async def _start(dep: Deployment) -> tuple[RestDriver, list[Proc]]:
    await dep.create_schema()
    ingress = dep.start("ingress", "serve", "--workers", "0", "--no-sample-kb")
    workers = [dep.start(f"worker{i}", "worker") for i in range(2)]
    await dep.wait_ready(ingress, *workers)
    return RestDriver(ingress.port, CONVERSATIONS, PER_CONVERSATION), workers


async def _all_answered(dep: Deployment, driver: RestDriver) -> None:
    """Wait for every bot reply; on failure, say which messages and what the logs say of them."""
    if await dep.wait_replies(TOTAL, timeout_s=40) == TOTAL:
        return
    missing = await driver.missing()
    evidence = []
    for c, ids in list(missing.items())[:3]:
        needle = f"conv{c}" + '"'  # the session key's end, in the JSON logs
        evidence.append(f"conv{c} {ids}:\n{dep.log_lines(needle)}")
    evidence_text = "\n".join(evidence)
    raise AssertionError(f"unanswered after 40 s: {missing}\n{evidence_text}")


async def test_worker_sigkill_loses_duplicates_and_reorders_nothing(
    deployment: Deployment,
) -> None:
    driver, workers = await _start(deployment)
    sending = asyncio.create_task(driver.run())
    reached = await deployment.wait_replies(TOTAL // 4, timeout_s=40)
    assert reached >= TOTAL // 4, "workers answered too little before the crash"
    assert not sending.done(), "the crash must happen while messages still arrive"
    workers[0].kill()
    await sending
    await _all_answered(deployment, driver)
    await asyncio.sleep(0.5)  # a duplicate answer would land now
    await driver.check()


async def test_redis_restart_loses_nothing_accepted(deployment: Deployment) -> None:
    driver, _ = await _start(deployment)
    sending = asyncio.create_task(driver.run())
    await deployment.wait_replies(TOTAL // 4, timeout_s=40)
    assert not sending.done()
    deployment.redis.stop(kill=True)  # SIGKILL: only what AOF (fsync always) holds survives
    await asyncio.sleep(1.0)
    deployment.redis.restart()
    await sending
    assert driver.retries > 0, "the outage must have been seen by the client"
    await _all_answered(deployment, driver)
    await asyncio.sleep(0.5)
    await driver.check()
