"""The cloud access setting (pure): modes, validation with the field named, the SSH targets
front_door builds for each way in, and which setting an error names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hybridgrid.access import Bastion, CloudAccess, behind, front_door
from hybridgrid.sshclient.keys import generate_ssh_keypair

HOST_KEY = generate_ssh_keypair("host").public_key
NODE_KEY = generate_ssh_keypair("node").public_key


class Key:
    user = "ubuntu"
    proxy_command: str | None = None
    jump_host: str | None = None


def _bastion(**kw) -> Bastion:
    return Bastion(
        **{"host": "198.19.255.2", "user": "jump", "host_keys": [HOST_KEY], "key_block": "b", **kw}
    )


def test_modes_and_what_an_error_names() -> None:
    assert CloudAccess().mode == "direct"
    assert "direct (no ProxyCommand, no bastion)" in CloudAccess().describe("gi")
    proxy = CloudAccess(proxy_command="nc %h %p")
    assert proxy.mode == "proxy_command" and "ProxyCommand 'nc %h %p'" in proxy.describe("gi")
    both = CloudAccess(proxy_command="nc %h %p", bastion=_bastion())
    text = both.describe("gi")
    assert both.mode == "bastion" and "bastion jump@198.19.255.2:22" in text
    assert "access setting of cloud 'gi'" in text and "reached through ProxyCommand" in text


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValidationError, match="proxy_command must be one non-empty line"):
        CloudAccess(proxy_command="nc %h %p\nrm -rf /")
    with pytest.raises(ValidationError, match="host_keys"):
        _bastion(host_keys=[])
    with pytest.raises(ValidationError, match=r"host_keys\[0\] is not an OpenSSH public key"):
        _bastion(host_keys=["AAAA"])
    with pytest.raises(ValidationError, match="must be a DNS name or an IP address"):
        _bastion(host="bad host")
    with pytest.raises(ValidationError, match="user"):
        _bastion(user="Root!")
    # a known_hosts line (with the host in front) pins the same key
    known = f"[198.19.255.2]:22 {HOST_KEY}"
    assert _bastion(host_keys=[known]).host_keys == [" ".join(HOST_KEY.split()[:2])]


def test_front_door_for_each_way_in() -> None:
    direct = front_door("203.0.113.10", [NODE_KEY], Key(), CloudAccess(), "bi")
    assert direct.proxy_command is None and direct.jump is None
    assert "access setting of cloud 'bi'" in (direct.hint or "")

    proxied = front_door("203.0.113.10", [NODE_KEY], Key(), CloudAccess(proxy_command="nc %h %p"))
    assert proxied.proxy_command == "nc %h %p" and proxied.jump is None

    via = front_door(
        "198.51.100.7", [NODE_KEY], Key(), CloudAccess(proxy_command="nc %h %p", bastion=_bastion())
    )
    hop = via.jump
    assert via.proxy_command is None and hop is not None
    assert (hop.host, hop.user, hop.key_block, hop.proxy_command) == (
        "198.19.255.2",
        "jump",
        "b",
        "nc %h %p",
    )
    assert hop.host_keys == [" ".join(HOST_KEY.split()[:2])]
    worker = behind(via, "192.168.77.5", [NODE_KEY], "ubuntu")
    assert worker.jump == via and worker.jump.jump == hop and worker.key_block is None


def test_a_key_blocks_own_proxy_only_where_the_cloud_says_direct() -> None:
    old = Key()
    old.proxy_command = "old-proxy %h %p"
    assert front_door("203.0.113.10", [NODE_KEY], old, CloudAccess()).proxy_command == (
        "old-proxy %h %p"
    )
    cloud = CloudAccess(proxy_command="nc %h %p")
    assert front_door("203.0.113.10", [NODE_KEY], old, cloud).proxy_command == "nc %h %p"
    jumpy = Key()
    jumpy.jump_host = "admin@bastion"
    with pytest.raises(ValueError, match="jump_host is not used any more"):
        front_door("203.0.113.10", [NODE_KEY], jumpy, CloudAccess(), "gi")


def test_a_way_in_that_keeps_failing_ends_the_wait_early_naming_the_setting() -> None:
    """A ProxyCommand that exits at once (no packet leaves this machine): the SSH wait gives
    up after its path budget, not its timeout, and says which setting to fix."""
    import asyncio
    import time

    from hybridgrid.sshclient.connect import wait_for_ssh
    from hybridgrid.sshclient.errors import SSHAccessError

    access = CloudAccess(proxy_command="false %h %p")
    target = front_door("198.51.100.7", [NODE_KEY], Key(), access, "gi")
    client = generate_ssh_keypair("client").private_key
    started = time.monotonic()
    with pytest.raises(SSHAccessError) as info:
        asyncio.run(wait_for_ssh(target, client, timeout=120, path_budget=2))
    assert time.monotonic() - started < 20
    text = str(info.value)
    assert "the ProxyCommand exited before the server answered" in text, text
    assert "Fix the access setting of cloud 'gi'" in text and "'false %h %p'" in text
