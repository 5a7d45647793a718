"""SSH connection reuse within a scope (`reuse_connections`, one flow run): one connection
per target and client key, host keys still pinned, dead connections replaced, all closed at
the end. Real OpenSSH servers on 127.0.0.1 (the fixtures of test_remote_ssh)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel
from test_remote_ssh import SSHD, client, servers, target  # noqa: F401 (fixtures)

from hybridgrid.ssh_target import SSHTarget
from hybridgrid.sshclient.connect import connect
from hybridgrid.sshclient.errors import HostKeyMismatch
from hybridgrid.sshclient.pool import reuse_connections

pytestmark = pytest.mark.skipif(
    not __import__("os").path.exists(SSHD) or __import__("os").geteuid() != 0,
    reason="needs root and OpenSSH sshd",
)


class Words(BaseModel):  # a flow parameter model (module level, as the flows' models are)
    first: str
    second: str = "two"


def _logins(s) -> int:
    return s.log.read_text().count("Accepted publickey")


def test_one_connection_per_target_in_a_scope(servers, client):  # noqa: F811
    a, b = servers["a"], servers["b"]
    ta = target(a)
    tb = target(b, jump=ta)
    before_a, before_b = _logins(a), _logins(b)

    async def go():
        async with reuse_connections() as pool:
            outs = []
            for t in (ta, ta, tb, tb):
                async with connect(t, client.private_key) as host:
                    outs.append((await host.run("echo ok", name="echo")).stdout)

            # concurrent holders share it too
            async def one(t):
                async with connect(t, client.private_key) as host:
                    return (await host.run("echo ok", name="echo")).stdout

            outs += await asyncio.gather(*(one(t) for t in (ta, tb, ta, tb)))
            conns = list(pool._conns.values())
        return outs, pool.opened, conns

    outs, opened, conns = asyncio.run(go())
    assert outs == ["ok\n"] * 8
    assert opened == 2  # a (also b's jump) and b
    assert _logins(a) - before_a == 1 and _logins(b) - before_b == 1
    assert all(c.is_closed() for c in conns)  # closed when the scope ended


def test_pins_stay_strict_and_a_closed_connection_is_replaced(servers, client):  # noqa: F811
    a, mitm = servers["a"], servers["mitm"]
    ta = target(a)
    # mitm's address with a's pins: a different target, never served by a's connection
    spoofed = SSHTarget(host="127.0.0.1", port=mitm.port, host_keys=[a.host_key_line])

    async def go():
        async with reuse_connections() as pool:
            async with connect(ta, client.private_key) as host:
                await host.run("true", name="true")
                host.conn.close()  # e.g. the server went away
                await host.conn.wait_closed()
            async with connect(ta, client.private_key) as host:
                again = (await host.run("echo again", name="echo")).stdout
            with pytest.raises(HostKeyMismatch):
                async with connect(spoofed, client.private_key) as host:
                    await host.run("touch /tmp/should-not-run", name="touch")
            return again, pool.opened

    again, opened = asyncio.run(go())
    assert again == "again\n" and opened == 2


def test_without_a_scope_every_connect_logs_in(servers, client):  # noqa: F811
    a = servers["a"]
    before = _logins(a)

    async def go():
        for _ in range(2):
            async with connect(target(a), client.private_key) as host:
                await host.run("true", name="true")

    asyncio.run(go())
    assert _logins(a) - before == 2


def test_tasks_of_a_flow_share_the_scope(servers, client, prefect_harness):  # noqa: F811
    from prefect import flow, task

    a = servers["a"]
    before = _logins(a)

    @task
    async def echo(t: SSHTarget, word: str) -> str:
        async with connect(t, client.private_key) as host:
            return (await host.run(f"echo {word}", name="echo")).stdout.strip()

    @flow
    async def two_tasks() -> tuple[list[str], int]:
        async with reuse_connections() as pool:
            words = await asyncio.gather(echo(target(a), "x"), echo(target(a), "y"))
            words.append(await echo(target(a), "z"))
            return words, pool.opened

    words, opened = asyncio.run(two_tasks())
    assert words == ["x", "y", "z"] and opened == 1
    assert _logins(a) - before == 1


def test_a_decorated_flow_keeps_its_parameters_and_shares(servers, client, prefect_harness):  # noqa: F811
    from prefect import flow, task

    from hybridgrid.sshclient.pool import sharing_connections

    a = servers["a"]
    before = _logins(a)

    @task
    async def echo(word: str) -> str:
        async with connect(target(a), client.private_key) as host:
            return (await host.run(f"echo {word}", name="echo")).stdout.strip()

    @flow(name="decorated")
    @sharing_connections
    async def decorated(words: Words, times: int = 1) -> list[str]:
        """Echo the words."""
        return [await echo(w) for _ in range(times) for w in (words.first, words.second)]

    out = asyncio.run(decorated({"first": "one"}, times=2))  # validated into Words
    assert out == ["one", "two", "one", "two"]
    assert _logins(a) - before == 1
    assert set(decorated.parameters.properties) == {"words", "times"}


def test_no_connection_outlives_its_scope(servers, client):  # noqa: F811
    """A task still running when its flow returned (the sibling of a failed step) gets a
    clear error instead of a connection nobody would close."""
    from hybridgrid.sshclient.errors import SSHConnectError

    a = servers["a"]
    before = _logins(a)

    async def go():
        async with reuse_connections() as pool, connect(target(a), client.private_key) as host:
            await host.run("true", name="true")
        try:
            async with connect(target(a), client.private_key):  # the scope is still current
                pass
        except SSHConnectError as exc:
            return pool, exc
        return pool, None

    async def orphaned():
        holder: dict = {}

        async def late():
            await asyncio.sleep(0.2)  # starts after the scope ended
            try:
                async with connect(target(a), client.private_key):
                    holder["connected"] = True
            except SSHConnectError as exc:
                holder["error"] = exc

        async with reuse_connections():
            task = asyncio.ensure_future(late())  # copies the context: sees the scope
        await task
        return holder

    pool, err = asyncio.run(go())
    holder = asyncio.run(orphaned())
    assert err is None  # outside the scope (context reset): a normal connection
    assert pool.closed and "ended" in str(holder["error"]) and "connected" not in holder
    assert _logins(a) - before == 2  # the scope's one connection and the normal one
