"""The audit log's hash chain on SQLite and PostgreSQL: verify, tampering, two writers, upgrade."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.cli import main
from bot.config import Settings
from bot.envelope import session_key
from bot.store import migrate, open_store
from bot.store.engine import make_engine
from tests.fakes.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings on a new, empty database; the CLI finds it through the environment too."""
    data_dir = tmp_path / "data"
    monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
    if request.param == "sqlite":
        return Settings(data_dir=data_dir)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", url)
    return Settings(data_dir=data_dir, database_url=url)


def _sql(settings: Settings, sql: str, **params: object) -> list[sa.Row[object]]:
    async def run() -> list[sa.Row[object]]:
        engine = make_engine(settings.resolved_database_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(sql), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _append(settings: Settings, entries: list[tuple[str, str, dict[str, object]]]) -> None:
    key = session_key("telegram", "bot1", dm_peer="618020145")

    async def run() -> None:
        store = await open_store(settings)
        try:
            for actor, action, detail in entries:
                await store.audit(actor, action, key, detail)
        finally:
            await store.close()

    asyncio.run(run())


def _verify(
    settings: Settings, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    code = main(["audit", "verify", "--data-dir", str(settings.data_dir), *extra])
    return code, capsys.readouterr().out


def test_verify_names_the_first_edited_entry(
    fresh: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(fresh, [(f"agent{i}", "reply", {"seq": i}) for i in range(1, 6)])
    code, out = _verify(fresh, capsys)
    assert code == 0, out
    assert "intact: 5 entries" in out
    head = out.rsplit("head ", 1)[1].strip()

    # The personal part (outside the chain's hash, under the seal) of entry 3.
    if fresh.database_url:
        _sql(fresh, """update audit set detail = '{"seq": 99}'::jsonb where seq = 3""")
    else:
        _sql(fresh, """update audit set detail = '{"seq": 99}' where seq = 3""")
    code, out = _verify(fresh, capsys)
    assert code == 1
    assert "first bad entry is seq 3 (edited)" in out

    # The public part of entry 4 too: the first bad entry is still 3, and 4 is listed.
    _sql(fresh, "update audit set actor = 'mallory' where seq = 4")
    code, out = _verify(fresh, capsys, "--json")
    assert code == 1
    assert '"seq": 3' in out
    assert '"seq": 4' in out

    # Deleting the newest entry leaves a valid shorter chain: the recorded head catches it.
    _sql(fresh, "update audit set actor = 'agent4', detail = detail where seq = 4")
    _sql(fresh, "delete from audit where seq = 5")
    code, out = _verify(fresh, capsys, "--expect-head", head)
    assert code == 1
    assert "truncated" in out


def _writer(name: str, data_dir: Path, url: str | None, n: int) -> None:
    """One writing process: opens its own store, waits for ``go``, appends ``n`` entries."""

    async def main() -> None:
        store = await open_store(Settings(data_dir=data_dir, database_url=url))
        try:
            (data_dir / f"ready-{name}").touch()
            while not (data_dir / "go").exists():  # noqa: ASYNC110 - a file from another process
                await asyncio.sleep(0.01)
            for i in range(n):
                await store.audit(name, "tool:lookup", None, {"i": i})
                await asyncio.sleep(0.005)  # let the other process in, even on a busy machine
        finally:
            await store.close()

    asyncio.run(main())


def test_two_processes_appending_do_not_fork_the_chain(
    fresh: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(fresh, [("system", "start", {})])  # the schema exists before both start
    # Forked: the children share nothing with this process but the database.
    fork = multiprocessing.get_context("fork")
    procs = [
        fork.Process(target=_writer, args=(name, fresh.data_dir, fresh.database_url, 40))
        for name in ("writer-a", "writer-b")
    ]
    for proc in procs:
        proc.start()
    ready = [fresh.data_dir / f"ready-{name}" for name in ("writer-a", "writer-b")]
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    (fresh.data_dir / "go").touch()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    code, out = _verify(fresh, capsys)
    assert code == 0, out
    assert "intact: 81 entries" in out
    seqs = [r[0] for r in _sql(fresh, "select seq from audit order by seq")]
    assert seqs == list(range(1, 82))
    actors = [r[0] for r in _sql(fresh, "select actor from audit order by seq")]
    assert set(actors) == {"system", "writer-a", "writer-b"}
    switches = sum(a != b for a, b in itertools.pairwise(actors[1:]))
    assert switches >= 2, "the two writers did not overlap"


def test_entries_written_before_the_chain_are_chained(
    fresh: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0003 database: its audit rows get chained; the store upgrades its schema on open."""
    assert asyncio.run(migrate.upgrade(fresh, "0003")) == "0003"
    at = "now()" if fresh.database_url else "'2026-01-01 00:00:00.000001'"
    for actor in ("old-a", "old-b"):
        _sql(
            fresh,
            f"insert into audit (at, actor, action, session_key, detail)"
            f" values ({at}, :actor, 'login', null, '{{}}')",
            actor=actor,
        )
    _append(fresh, [("agent", "claim", {"from": "queue"})])
    assert asyncio.run(migrate.current(fresh)) == migrate.head_revision()
    code, out = _verify(fresh, capsys)
    assert code == 0, out
    assert "intact: 3 entries (0 erased, 0 not yet chained)" in out
    rows = _sql(fresh, "select actor from audit order by seq")
    assert [r[0] for r in rows] == ["old-a", "old-b", "agent"]
