"""The throwaway PostgreSQL server of tests/postgres_server.py: its URLs work with a real client,
and every test gets a database of its own, empty, dropped afterwards."""

from __future__ import annotations

import subprocess
from urllib.parse import urlsplit

import pytest

from tests.postgres_server import PostgresServer


def psql(server: PostgresServer, url: str, sql: str) -> str:
    """Run SQL through psql given only the URL (as an application would connect)."""
    done = subprocess.run(
        [str(server.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_url_reaches_a_working_server(postgres_server: PostgresServer, postgres_url: str) -> None:
    assert psql(postgres_server, postgres_url, "SELECT 1") == "1"
    psql(postgres_server, postgres_url, "CREATE TABLE tips (id serial PRIMARY KEY, body text NOT NULL)")
    psql(postgres_server, postgres_url, "INSERT INTO tips (body) VALUES ('été'), ('second')")
    assert psql(postgres_server, postgres_url, "SELECT string_agg(body, ',' ORDER BY id) FROM tips") == "été,second"
    assert psql(postgres_server, postgres_url, "SHOW server_encoding") == "UTF8"
    assert psql(postgres_server, postgres_url, "SHOW fsync") == "off"  # the session server is the fast kind


seen: list[str] = []


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_a_new_empty_database(postgres_server: PostgresServer, postgres_url: str, turn: str) -> None:
    name = urlsplit(postgres_url).path.lstrip("/")
    assert psql(postgres_server, postgres_url, "SELECT current_database()") == name
    assert psql(postgres_server, postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
    databases = psql(postgres_server, postgres_server.url, "SELECT datname FROM pg_database").split()
    assert name in databases
    for earlier in seen:  # another test's database: a different one, and dropped when that test ended
        assert earlier != name
        assert earlier not in databases
    seen.append(name)
    psql(postgres_server, postgres_url, "CREATE TABLE left_behind (x int)")  # the next turn must not see it
