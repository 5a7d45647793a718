"""Host keys: pinned once from the console, never re-trusted silently.

1. The VPN node's sshd gets NEW host keys (regenerated inside the server, sshd reloaded): a
   rerun of add_remote_site stops at SSH with one clear error naming the host and the two
   possible causes; nothing is run on the server.
2. Man in the middle: the real sshd is stopped and a second sshd with its own host key answers
   on the same address and port; hybridgrid's SSH (`hybridgrid.sshclient`) refuses it before
   logging in.
The server's original keys and sshd are restored afterwards (finally).
"""

from __future__ import annotations

import asyncio

import pytest
from reliab_support import REGISTRY, SITE_CLOUD, SUMMARY

from hybridgrid.blocks.loading import ssh_key
from hybridgrid.blocks.registry import load_registry
from hybridgrid.flows.ssh_access import door
from hybridgrid.model import RemoteSite
from hybridgrid.sshclient.connect import wait_for_ssh
from hybridgrid.sshclient.errors import HostKeyMismatch

pytestmark = pytest.mark.dataplane

SITE = "fulda-1"  # made by the fault soak; made here when this module runs alone
VPN = f"hg-{SITE}-vpn"
BACKUP = "/etc/ssh/hk-backup"  # /etc is the server's own overlay

NEW_KEYS = f"""set -e
mkdir -p {BACKUP} && cp -p /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub {BACKUP}/
rm -f /etc/ssh/ssh_host_ed25519_key* /etc/ssh/ssh_host_ecdsa_key*
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key
kill -HUP "$(cat /run/sshd.pid)"; sleep 1
ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub; ssh-keygen -lf /etc/ssh/ssh_host_ecdsa_key.pub
"""
RESTORE_KEYS = f"""set -e
cp -p {BACKUP}/* /etc/ssh/ && rm -rf {BACKUP}
kill -HUP "$(cat /run/sshd.pid)"; sleep 1
"""
IMPOSTOR = """set -e
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/impostor_ed25519_key
sed -e '/^HostKey/d' -e 's#^PidFile.*#PidFile /run/impostor.pid#' /etc/ssh/sshd_config \
  > /etc/ssh/impostor_config
echo 'HostKey /etc/ssh/impostor_ed25519_key' >> /etc/ssh/impostor_config
kill "$(cat /run/sshd.pid)"; sleep 0.5
/usr/sbin/sshd -f /etc/ssh/impostor_config; sleep 0.5
ssh-keygen -lf /etc/ssh/impostor_ed25519_key.pub
"""
REAL_BACK = """kill "$(cat /run/impostor.pid)" 2>/dev/null; sleep 0.5
rm -f /etc/ssh/impostor_* /run/impostor.pid /run/sshd.pid
/usr/sbin/sshd; sleep 0.5
"""


@pytest.fixture(scope="module")
def site(rel):
    data = asyncio.run(load_registry(REGISTRY))
    if SITE not in data.sites or not data.sites[SITE].spoke_public_key:
        rel.key_block(SITE)
        assert rel.add_site(RemoteSite(name=SITE, cloud=SITE_CLOUD, workers=1)).verified
        data = asyncio.run(load_registry(REGISTRY))
    return data.sites[SITE]


def _target(entry):
    key = asyncio.run(ssh_key(entry.ssh_key_block))
    return door(entry.cloud, str(entry.public_ips["vpn"]), entry.host_keys[VPN], key), key


def test_changed_host_key_stops_the_rerun(rel, site):
    rc, out = rel.exec(VPN, NEW_KEYS, SITE_CLOUD)
    assert rc == 0, out
    try:
        rel.handle.reset_stats()
        with pytest.raises(Exception) as info:
            rel.add_site(RemoteSite(name=SITE, cloud=SITE_CLOUD, workers=1), timeout=180)
        message = str(info.value)
        rel.watch.text(message)
        SUMMARY.other.append(f"Host key changed after pinning: refused - {message[:160]}")
        assert isinstance(info.value, HostKeyMismatch), repr(info.value)
        assert f"host key of ubuntu@{site.public_ips['vpn']}:22 does not match" in message
        assert "intercepting" in message and "rebuilt" in message
        assert info.value.presented and info.value.presented in out  # the new key answered
    finally:
        rc, out = rel.exec(VPN, RESTORE_KEYS, SITE_CLOUD)
        assert rc == 0, out
    # the original keys are back: the pinned target is accepted again
    target, key = _target(site)
    asyncio.run(wait_for_ssh(target, key.private_key, timeout=60))


def test_second_sshd_on_the_same_address_is_refused(rel, site):
    target, key = _target(site)
    rc, out = rel.exec(VPN, IMPOSTOR, SITE_CLOUD)
    try:
        assert rc == 0, out
        with pytest.raises(HostKeyMismatch) as info:
            asyncio.run(wait_for_ssh(target, key.private_key, timeout=30))
        rel.watch.text(info.value)
        # the impostor's key is named by fingerprint: the operator can compare it
        assert info.value.presented and info.value.presented in out  # the impostor answered
        SUMMARY.other.append(
            "Man in the middle (second sshd, same address and port): refused before login"
        )
    finally:
        rc, out = rel.exec(VPN, REAL_BACK, SITE_CLOUD)
        assert rc == 0, out
    asyncio.run(wait_for_ssh(target, key.private_key, timeout=60))
