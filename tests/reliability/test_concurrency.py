"""Concurrency: 4 sites added by 4 concurrent flow runs against ONE fresh home (its own registry
``reliab-conc``, master hg-paderborn-master in the same cloud as the suite's home). All four
must end verified, the master must hold exactly 4 peers (one per site, the registered keys),
and the registry must hold 4 distinct subnets and overlay addresses.

The home and its sites use narrow SSH sources (the runner's address as localcloud's internet
sees it), which test_privilege.py checks rule by rule.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from reliab_support import (
    HOME_CLOUD,
    SITE_CLOUD,
    SUMMARY,
    registered_spokes,
    site_problems,
)

from hybridgrid.blocks.registry import load_registry
from hybridgrid.flows.add_remote_site import AddSiteOptions, add_remote_site
from hybridgrid.flows.bootstrap_home import HomeOptions, bootstrap_home
from hybridgrid.model import HomeSite, MasterSpec, RemoteSite

pytestmark = pytest.mark.dataplane

CONC_REGISTRY = "reliab-conc"
HOME2 = "paderborn"
SITES = ("kassel", "siegen", "trier", "hanau")
# Where the flows' SSH comes from: localcloud's internet namespace holds each external
# network's gateway (.1) and connects from it.
HOME_SSH_SOURCE = [ipaddress.IPv4Network("203.0.113.1/32")]
SITE_SSH_SOURCE = [ipaddress.IPv4Network("198.51.100.1/32")]


@pytest.fixture(scope="module")
def concurrent(rel):
    rel.watch.ensure()
    rel.key_block(HOME2)
    for s in SITES:
        rel.key_block(s)
    home = HomeSite(
        name=HOME2,
        cloud=HOME_CLOUD,
        master=MasterSpec(create=True),
        subnet=ipaddress.IPv4Network("192.168.50.0/24"),
        workers=1,
    )
    asyncio.run(
        bootstrap_home(
            home, options=HomeOptions(registry=CONC_REGISTRY, ssh_source=HOME_SSH_SOURCE)
        )
    )
    options = AddSiteOptions(registry=CONC_REGISTRY)

    async def all_four():
        runs = [
            add_remote_site(
                RemoteSite(name=s, cloud=SITE_CLOUD, workers=1, ssh_source=SITE_SSH_SOURCE),
                options,
            )
            for s in SITES
        ]
        return await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 600)

    results = dict(zip(SITES, asyncio.run(all_four()), strict=True))
    for r in results.values():
        if isinstance(r, BaseException):
            rel.watch.text(r)
    return results


def test_all_four_verified(concurrent):
    for site, result in concurrent.items():
        assert not isinstance(result, BaseException), (site, repr(result))
        assert result.verified, (site, result.summary.layers)


def test_master_holds_exactly_the_four_peers(rel, concurrent):
    rc, out = rel.exec(f"hg-{HOME2}-master", "wg show wg0 peers", HOME_CLOUD)
    assert rc == 0, out
    spokes = registered_spokes(CONC_REGISTRY)
    assert sorted(spokes) == sorted(SITES)
    assert sorted(out.split()) == sorted(spokes.values())
    SUMMARY.other.append(
        f"Concurrency: {len(SITES)} concurrent add-site runs, all verified; master "
        f"hg-{HOME2}-master holds {len(out.split())} peers"
    )


def test_registry_consistent(concurrent):
    data = asyncio.run(load_registry(CONC_REGISTRY))
    entries = [data.sites[s] for s in SITES]
    subnets = [e.subnet for e in entries] + [data.home.subnet]
    assert len(set(subnets)) == 5
    for i, a in enumerate(subnets):
        assert not any(a.overlaps(b) for b in subnets[i + 1 :]), subnets
    addresses = {e.wg_address for e in entries} | {data.home.wg_address}
    assert len(addresses) == 5
    assert all(e.last_verification and e.last_verification.ok for e in entries)
    assert len({e.spoke_public_key for e in entries}) == 4


def test_no_duplicate_and_no_orphan(rel, concurrent):
    for site in SITES:
        assert site_problems(rel, site, SITE_CLOUD, workers=1, registry=CONC_REGISTRY) == []
