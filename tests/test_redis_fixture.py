"""The redis fixture starts a real server that later issues rely on."""

from __future__ import annotations


def test_redis_fixture_is_a_real_server(redis_server) -> None:
    client = redis_server.client()
    client.set("mlpipe:probe", b"1")
    assert client.get("mlpipe:probe") == b"1"
    info = client.info("server")
    assert info["tcp_port"] == redis_server.port


def test_redis_fixture_restarts_on_the_same_port(redis_server) -> None:
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.client().ping() is True
