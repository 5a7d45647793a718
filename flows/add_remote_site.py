"""add_remote_site — the main job (docs/architecture.md §4): one flow run per remote site.

validate → pre-flight both clouds → allocate (registry, locked) → site network, security
group, key pair and home-side lookups, all at once → VPN node and workers launched together
→ floating IP → UDP 51820 from each peer's /32 → host keys from the console → SSH → wg0 on the
VPN node → the peer on the master (live, under the hub lock) → allowed-address pairs → routes
on workers → layered verification → registry + artifacts.

Everything is found again by name and tags, so a rerun after any failure converges and a rerun
of a finished site changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridgrid import desired, naming
from hybridgrid.access import behind
from hybridgrid.blocks.loading import ssh_key
from hybridgrid.blocks.pickers import CloudBlock, SSHKeyBlock, no_default
from hybridgrid.blocks.registry import (
    DEFAULT_REGISTRY,
    allocate_site,
    load_registry,
    update_registry,
)
from hybridgrid.blocks.ssh import SSHKey
from hybridgrid.cloudops.preflight import (
    Needs,
    PreflightError,
    PreflightReport,
    PreflightRequest,
    hub_port_problems,
    pair_limit_problems,
)
from hybridgrid.cloudops.servers import ServerSpec
from hybridgrid.flows import common
from hybridgrid.flows.artifacts import publish
from hybridgrid.model import MAX_ADDRESS_PAIRS, RemoteSite, plan
from hybridgrid.registry_data import RegistryData, SiteEntry, Verification
from hybridgrid.report import NodeLine, SiteSummary
from hybridgrid.sshclient.pool import sharing_connections
from hybridgrid.tasks import node_tasks as nodes
from hybridgrid.tasks import site_tasks as st


class SiteForm(RemoteSite):
    """The site as the UI's form asks for it: the cloud is picked from the saved credentials
    blocks (the registry keeps its name)."""

    model_config = ConfigDict(title="RemoteSite")

    cloud: CloudBlock = Field(
        "",
        description="the cloud's credentials block (how it is reached is its access setting); "
        "empty: the block named like the site",
        json_schema_extra=no_default,
    )

    @model_validator(mode="before")
    @classmethod
    def _from_site(cls, data: Any) -> Any:
        # a RemoteSite (the registry's spec, a test's constant) is a valid form value
        return data.model_dump() if isinstance(data, RemoteSite) else data


class AddSiteOptions(BaseModel):
    registry: str = Field(DEFAULT_REGISTRY, description="SiteRegistry block name")
    ssh_key_block: SSHKeyBlock | None = Field(
        None,
        description="SSHKey block for the site's servers; empty: hg-NAME-ssh, made when missing",
    )
    boot_timeout: float = Field(600, gt=0, description="seconds to wait for servers to be ACTIVE")
    verify: bool = Field(True, description="run the layered verification at the end")


class AddSiteResult(BaseModel):
    site: str
    verified: bool
    summary: SiteSummary
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="seconds: total (the flow body), boot_wait (launch until the servers are "
        "ACTIVE and the VPN node has its floating IP)",
    )


def _run_name() -> str:
    return common.run_name_from("site")


@flow(
    name="add-remote-site",
    flow_run_name=_run_name,
    description="Join a remote OpenStack site to the home cluster over WireGuard (verified).",
    log_prints=False,
)
@sharing_connections  # one SSH connection per node for the whole run, not one per task
async def add_remote_site(site: SiteForm, options: AddSiteOptions | None = None) -> AddSiteResult:
    """Add (or converge) one remote site; the run is named after it.

    Args:
        site: the remote site: name, cloud block, subnet (omit to allocate), flavors, workers
        options: registry, SSH key block, boot timeout, whether to verify
    """
    started = time.monotonic()
    options = options or AddSiteOptions()
    log = get_run_logger()
    await common.tag_run("site", site.name)
    calls_before = common.call_counts()

    # 1. validate against the registry: pure, nothing created yet
    data = await load_registry(options.registry)
    home = common.require_home(data, options.registry)
    topo = common.topology_for(data, [site])
    others = {n: e.allocation() for n, e in data.sites.items() if n != site.name}
    draft = plan(topo, {**others, **_own(data, site.name)}).site(site.name)
    is_new = site.name not in data.sites
    log.info(
        "Site %s: subnet %s, WireGuard %s (%s run)",
        site.name,
        draft.subnet,
        draft.wg_address,
        "first" if is_new else "repeat",
    )
    common.checkpoint("validated")

    # 2. pre-flight, both clouds at once: a doomed run fails before it creates anything
    n_servers = 1 + site.workers
    site_req = PreflightRequest(
        cloud=site.cloud,
        image=site.image,
        flavors=[site.vpn_flavor] + ([site.worker_flavor] if site.workers else []),
        external_network=site.external_network,
        instances_by_flavor=(
            {site.vpn_flavor: 1, **({site.worker_flavor: site.workers} if site.workers else {})}
            if is_new
            else {}
        ),
        needs=Needs(instances=n_servers, floating_ips=1, networks=1, routers=1, security_groups=1)
        if is_new
        else Needs(),
    )
    home_req = PreflightRequest(cloud=home.cloud, external_network=home.external_network)
    assert home.master is not None and home.ssh_key_block is not None
    key_block = options.ssh_key_block or naming.resource_name(site.name, "ssh")

    async def the_master() -> tuple[st.NodeFacts, SSHKey, list[str]]:
        # The master's port facts, and who holds the hub's UDP port (read-only, one SSH call)
        master, home_key = await asyncio.gather(
            st.lookup_node(home.cloud, home.master), ssh_key(home.ssh_key_block)
        )
        problems: list[str] = []
        if master.port_security:
            pairs = [str(n) for n in desired.home_side(data, draft.subnet)]
            problems += pair_limit_problems(
                f"master {home.master}",
                master.port_id,
                master.allowed_address_pairs,
                pairs,
                MAX_ADDRESS_PAIRS,
            )
        if master.floating_ip is not None:  # none yet: step 4 allocates it, nothing to reach
            target = common.door(
                home.cloud, str(master.floating_ip), home.host_keys[home.master], home_key
            )
            port = await nodes.udp_port_state(target, home.ssh_key_block, home.listen_port)
            problems += hub_port_problems(f"the master {home.master} ({target.label})", port)
        return master, home_key, problems

    # The key blocks are read here too (a block without a usable key fails before anything is
    # reserved); a missing site block is made only after pre-flight and allocation passed.
    _, _, (master, home_key, master_problems), found_key, _ = await asyncio.gather(
        st.preflight_cloud(site_req),
        st.preflight_cloud(home_req),
        the_master(),
        common.find_ssh_key(key_block),
        nodes.check_access(site.cloud),  # a bastion that refuses us fails here, not later
    )
    if master_problems:
        raise PreflightError(PreflightReport(cloud=home.cloud, ok=False, problems=master_problems))
    log.info("Pre-flight passed on %s and %s", site.cloud, home.cloud)
    common.checkpoint("preflight")

    # 3. allocate under the registry lock (a concurrent run gets other addresses)
    resolved = await allocate_site(topo, site.name, options.registry)
    site_key = found_key or await common.make_ssh_key(key_block, site.ssh_user)
    wg = data.wireguard
    home_sg_name = naming.resource_name(home.name, naming.SG)
    site_sg_name = naming.resource_name(site.name, naming.SG)
    common.checkpoint("allocated")

    # 4. site network, group and key pair, and every home-side lookup, concurrently
    # The wiring is defined once, in hybridgrid.desired (plan, verification and the drift
    # check read the same); the UDP rules join once the floating IPs are known (step 6).
    unlinked = desired.wiring(data, desired.facts_for(resolved))
    net, site_sg, keypair, master, home_sg, home_workers = await asyncio.gather(
        st.ensure_site_network(site.cloud, site.name, str(resolved.subnet), site.external_network),
        st.ensure_group(site.cloud, site.name, site_sg_name, unlinked.site_rules),
        st.ensure_keypair(
            site.cloud, naming.resource_name(site.name, naming.KEY), site_key.public_key
        ),
        common.master_with_floating_ip(home, master),
        st.ensure_group(
            home.cloud, home.name, home_sg_name, unlinked.home_rules, rule_owner=site.name
        ),
        asyncio.gather(*(st.lookup_node(home.cloud, w) for w in home.workers)),
    )

    def wired(vpn_fip: str | None) -> desired.SiteWiring:
        facts = desired.facts_for(resolved, network_mtu=net.network.mtu, vpn_fip=vpn_fip)
        return desired.wiring(
            data, facts, master_fip=str(master.floating_ip), home_network_mtu=master.network_mtu
        )

    mtu = wired(None).tunnel_mtu  # a too-small underlay fails here, before any server boots
    master_target = common.door(
        home.cloud, str(master.floating_ip), home.host_keys[home.master], home_key
    )
    common.checkpoint("network")

    # 5. VPN node and workers launched together; the VPN node gets its floating IP
    def spec(role: str, n: int | None, flavor: str) -> ServerSpec:
        return ServerSpec(
            name=naming.resource_name(site.name, role, n),
            site=site.name,
            role=role if n is None else f"{role}-{n}",
            image=site.image,
            flavor=flavor,
            network_id=net.network.id,
            key_name=keypair.name,
            security_groups=[site_sg_name],
        )

    async def vpn_chain():
        vpn = await st.ensure_server(
            site.cloud, spec(naming.VPN, None, site.vpn_flavor), timeout=options.boot_timeout
        )
        fip = await st.ensure_floating_ip(site.cloud, site.name, vpn.port_id, site.external_network)
        return vpn, fip

    worker_specs = [spec(naming.WORKER, i, site.worker_flavor) for i in range(1, site.workers + 1)]
    log.info("Launching %s and %d worker(s) on %s", f"hg-{site.name}-vpn", site.workers, site.cloud)
    launched = time.monotonic()
    (vpn, vpn_fip), hub_pub, *workers = await asyncio.gather(
        vpn_chain(),
        nodes.ensure_node_key(master_target, home.ssh_key_block),
        *(st.ensure_server(site.cloud, s, timeout=options.boot_timeout) for s in worker_specs),
    )
    boot_wait = time.monotonic() - launched
    wiring = wired(str(vpn_fip.address))  # everything the link must be, the floating IPs known
    log.info("VPN node %s is ACTIVE at %s (fixed %s)", vpn.name, vpn_fip.address, vpn.fixed_ip)
    common.checkpoint("servers-launched")

    # 6. UDP 51820 from each peer's /32; the home group on the master's and workers' ports;
    #    host keys from the console logs
    _, _, vpn_keys, *worker_keys = await asyncio.gather(
        st.ensure_rules(site.cloud, site_sg.group.id, site.name, wiring.site_rules),
        st.ensure_rules(home.cloud, home_sg.group.id, site.name, wiring.home_rules),
        common.host_keys(data, site.name, site.cloud, vpn.id, vpn.name, "vpn"),
        *(
            common.host_keys(data, site.name, site.cloud, w.id, w.name, f"worker-{i}")
            for i, w in enumerate(workers, 1)
        ),
    )
    await asyncio.gather(
        *(
            st.ensure_port(home.cloud, n.port_id, [], [home_sg.group.id])
            for n in [master, *home_workers]
        )
    )
    common.checkpoint("rules")

    # 7. SSH: the VPN node at its floating IP, workers through it
    vpn_target = common.door(site.cloud, str(vpn_fip.address), vpn_keys, site_key)
    worker_targets = [
        behind(vpn_target, str(w.fixed_ip), keys, site.ssh_user)
        for w, keys in zip(workers, worker_keys, strict=True)
    ]
    await asyncio.gather(
        *(
            nodes.ssh_ready(t, key_block, timeout=options.boot_timeout)
            for t in [vpn_target, *worker_targets]
        )
    )
    common.checkpoint("ssh-ready")

    # 8. the spoke's WireGuard key, made on the node; then everything that links the site, at
    #    once: wg0 on the VPN node (the hub its only peer), the site's peer on the hub (live,
    #    under the per-master lock), pairs on the VPN node's port, routes on both sides' workers
    spoke_pub = await nodes.ensure_node_key(vpn_target, key_block)
    common.checkpoint("spoke-key")
    spoke_cfg = desired.spoke_config(data, wiring, hub_pub)
    entry_update = dict(
        spoke_public_key=spoke_pub,
        hub_public_key=hub_pub,
        spec=site,
        listen_port=resolved.listen_port,
        network_mtu=net.network.mtu,
        ssh_key_block=key_block,
        public_ips={"vpn": vpn_fip.address},
        fixed_ips={
            "vpn": vpn.fixed_ip,
            **{f"worker-{i}": w.fixed_ip for i, w in enumerate(workers, 1)},
        },
        host_keys={
            vpn.name: vpn_keys,
            **{w.name: k for w, k in zip(workers, worker_keys, strict=True)},
        },
        resource_ids={
            "net": net.network.id,
            "subnet": net.subnet.id,
            "router": net.router.id,
            "sg": site_sg.group.id,
            "vpn": vpn.id,
            "vpn-port": vpn.port_id,
            "vpn-fip": vpn_fip.id or "",
            **{f"worker-{i}": w.id for i, w in enumerate(workers, 1)},
        },
    )
    home_targets = [
        behind(master_target, str(w.fixed_ip), home.host_keys.get(w.name, []), home_key.user)
        for w in home_workers
    ]

    async def the_spoke():
        res = await nodes.apply_wireguard(vpn_target, key_block, spoke_cfg)
        log.info("wg0 on %s: %s (public key %s)", vpn.name, res.action, res.public_key)
        common.checkpoint("spoke")
        return res

    async def the_hub():
        async with common.hub_lock(home.name):
            res = await common.apply_hub(
                options.registry, site.name, entry_update, master_target, home.ssh_key_block, mtu
            )
            port = await st.ensure_port(
                home.cloud,
                master.port_id,
                [str(n) for n in wiring.master_pairs],
                [home_sg.group.id],
            )
        log.info("Peer %s on the hub %s: %s", site.name, home.master, res.action)
        common.checkpoint("hub")
        return port

    async def pairs_and_routes():
        port, *_ = await asyncio.gather(
            st.ensure_port(site.cloud, vpn.port_id, [str(n) for n in wiring.vpn_pairs], []),
            *(
                nodes.ensure_routes(t, key_block, wiring.site_routes, vpn.fixed_ip)
                for t in worker_targets
            ),
            *(
                nodes.ensure_routes(t, home.ssh_key_block, wiring.home_routes, master.fixed_ip)
                for t in home_targets
                if t.host_keys
            ),
        )
        common.checkpoint("routes")
        return port

    spoke, master_port, vpn_port = await asyncio.gather(the_spoke(), the_hub(), pairs_and_routes())
    if spoke.public_key != spoke_pub:  # only if someone re-keyed the node meanwhile
        raise RuntimeError(
            f"the WireGuard key of {vpn.name} changed during the run: run add-remote-site again"
        )

    # 11. verify, layer by layer
    summary = SiteSummary(
        site=site.name,
        home=home.name,
        wireguard_cidr=str(wg.cidr),
        listen_port=resolved.listen_port,
        tunnel_mtu=mtu,
        home_subnet=str(home.subnet),
        site_subnet=str(resolved.subnet),
        hub_allowed_ips=[str(n) for n in wiring.hub_allowed_ips],
        spoke_allowed_ips=[str(n) for n in wiring.spoke_allowed_ips],
        nodes=[
            NodeLine(
                role="master (hub)",
                cloud=home.cloud,
                name=home.master,
                fixed_ip=str(master.fixed_ip),
                floating_ip=str(master.floating_ip),
                wg_address=str(data.home.wg_address),
                public_key=hub_pub,
            ),
            NodeLine(
                role="VPN node (spoke)",
                cloud=site.cloud,
                name=vpn.name,
                fixed_ip=str(vpn.fixed_ip),
                floating_ip=str(vpn_fip.address),
                wg_address=str(resolved.wg_address),
                public_key=spoke.public_key,
            ),
            *(
                NodeLine(
                    role=f"worker-{i}", cloud=site.cloud, name=w.name, fixed_ip=str(w.fixed_ip)
                )
                for i, w in enumerate(workers, 1)
            ),
        ],
        resources=[
            *((site.cloud, r) for r in net.records),
            (site.cloud, site_sg.group),
            *((site.cloud, r) for r in site_sg.rules),
            (site.cloud, keypair),
            (site.cloud, vpn),
            (site.cloud, vpn_fip),
            *((site.cloud, w) for w in workers),
            (site.cloud, vpn_port),
            (home.cloud, home_sg.group),
            *((home.cloud, r) for r in home_sg.rules),
            (home.cloud, master_port),
        ],
    )
    if options.verify:
        summary.layers = await common.verify_site(
            home=home,
            site_name=site.name,
            site_cloud=site.cloud,
            master=master,
            master_target=master_target,
            home_key_block=home.ssh_key_block,
            hub_pub=hub_pub,
            vpn=vpn,
            vpn_fip=str(vpn_fip.address),
            vpn_target=vpn_target,
            site_key_block=key_block,
            spoke_pub=spoke.public_key,
            wiring=wiring,
            worker_targets=list(zip(workers, worker_targets, strict=True)),
            home_targets=list(zip(home_workers, home_targets, strict=True)),
        )
    summary.mutating_calls = common.calls_since(calls_before)
    common.checkpoint("verified")

    # 12. record and report
    verdict = Verification(
        ok=summary.verified,
        summary="; ".join(f"{x.layer}: {x.mark}" for x in summary.layers) or "not verified",
    )

    def record(d: RegistryData) -> None:
        d.sites[site.name].last_verification = verdict

    # One after the other: two concurrent writes make a SQLite Prefect server answer 503 and
    # the client back off ~2 s (measured at the end of every run).
    await update_registry(record, options.registry)
    await publish(summary)
    common.checkpoint("recorded")
    for layer in summary.layers:
        log.info("verify %-12s %s %s", layer.layer, layer.mark, "; ".join(layer.problems))
    if options.verify and not summary.verified:
        failed = [x for x in summary.layers if x.ok is False]
        raise common.VerificationFailed(
            f"site {site.name} is built but not verified: "
            + " | ".join(f"{x.layer}: {'; '.join(x.problems)}" for x in failed)
        )
    timings = {"total": round(time.monotonic() - started, 2), "boot_wait": round(boot_wait, 2)}
    log.info(
        "Done in %.1f s (servers booting: %.1f s, everything else: %.1f s)",
        timings["total"],
        timings["boot_wait"],
        timings["total"] - timings["boot_wait"],
    )
    return AddSiteResult(
        site=site.name, verified=summary.verified, summary=summary, timings=timings
    )


def _own(data: RegistryData, name: str) -> dict:
    entry: SiteEntry | None = data.sites.get(name)
    return {name: entry.allocation()} if entry else {}


__all__ = ["AddSiteOptions", "AddSiteResult", "SiteForm", "add_remote_site"]
