"""The test PostgreSQL: the session's server answers on loopback and every test gets its own empty database."""

from __future__ import annotations

import pytest

from slawatch.testing.postgres import PostgresServer

pytestmark = [pytest.mark.peer("postgresql"), pytest.mark.timeout(60)]


async def test_fresh_database_per_test(postgres: PostgresServer, pg_dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        assert (await conn.fetchval("SHOW server_version")).startswith("15")
        await conn.execute("CREATE TABLE mine (x int)")
    finally:
        await conn.close()
    assert pg_dsn.startswith(f"postgresql://slawatch@127.0.0.1:{postgres.port}/")
    assert postgres.create_database() != pg_dsn
