"""The steps of add_remote_site, in the order of the seed tutorial (docs/architecture.md §4):
validate, pre-flight, allocate, network, launch, open UDP, SSH, keys, wg0 on both ends with
the pairs and routes, verify, record. Each ends at its checkpoint (`ADD_SITE_STEPS`); what
does not depend on something else runs at the same time (`asyncio.gather`).

Everything is found again by name and tags, so a rerun after any failure converges and a rerun
of a finished site changes nothing."""

from __future__ import annotations

import asyncio
import time

from prefect import get_run_logger

from hybridgrid import desired, naming
from hybridgrid.access import behind
from hybridgrid.blocks.loading import ssh_key
from hybridgrid.blocks.registry import allocate_site, load_registry, update_registry
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
from hybridgrid.flows.artifacts import publish
from hybridgrid.flows.checkpoints import checkpoint
from hybridgrid.flows.forms import AddSiteOptions, SiteForm
from hybridgrid.flows.home import master_with_floating_ip, require_home, topology_for
from hybridgrid.flows.hub import apply_hub, hub_lock
from hybridgrid.flows.scheduler import join_site, verify_site_jobs
from hybridgrid.flows.site_run import (
    HostKeys,
    Link,
    Logins,
    Network,
    Preflight,
    Request,
    Servers,
    SiteRun,
    site_summary,
    site_update,
    site_wiring,
    tunnel_ends,
    workers_across,
)
from hybridgrid.flows.ssh_access import door, find_ssh_key, host_keys, make_ssh_key
from hybridgrid.flows.verification import VerificationFailed, verify_site
from hybridgrid.model import MAX_ADDRESS_PAIRS, plan
from hybridgrid.records import FloatingIPRecord, PortRecord, ServerRecord
from hybridgrid.registry_data import RegistryData, SiteUpdate, Verification
from hybridgrid.report import SiteSummary
from hybridgrid.tasks import node_tasks as nodes
from hybridgrid.tasks import site_tasks as st

# ---------------------------------------------------------------- 1. validate


async def validate(site: SiteForm, options: AddSiteOptions) -> Request:
    """The site planned against the registry: pure, nothing created yet."""
    data = await load_registry(options.registry)
    home = require_home(data, options.registry)
    topo = topology_for(data, home, [site])
    req = Request(
        site=site,
        options=options,
        data=data,
        home=home,
        topo=topo,
        draft=plan(topo, data.allocations()).site(site.name),
        key_block=options.ssh_key_block or naming.resource_name(site.name, "ssh"),
    )
    get_run_logger().info(
        "Site %s: subnet %s, WireGuard %s (%s run)",
        site.name,
        req.draft.subnet,
        req.draft.wg_address,
        "first" if req.is_new else "repeat",
    )
    checkpoint("validated")
    return req


# ---------------------------------------------------------------- 2. pre-flight


async def preflight(req: Request) -> Preflight:
    """Both clouds, the master and the key blocks at once: a doomed run fails before it
    creates anything. A missing site key block is made only after allocation (step 3)."""
    home = req.home
    _, _, (master, home_key, problems), site_key, _ = await asyncio.gather(
        st.preflight_cloud(_site_preflight(req)),
        st.preflight_cloud(
            PreflightRequest(cloud=home.cloud, external_network=home.external_network)
        ),
        _check_master(req),
        find_ssh_key(req.key_block),  # a block without a usable key fails here
        nodes.check_access(req.site.cloud),  # a bastion that refuses us fails here, not later
    )
    if problems:
        raise PreflightError(PreflightReport(cloud=home.cloud, ok=False, problems=problems))
    get_run_logger().info("Pre-flight passed on %s and %s", req.site.cloud, home.cloud)
    checkpoint("preflight")
    return Preflight(master=master, home_key=home_key, site_key=site_key)


def _site_preflight(req: Request) -> PreflightRequest:
    """Image, flavors and external network; quotas only when the servers are still to come."""
    site = req.site
    worker_flavors = {site.worker_flavor: site.workers} if site.workers else {}
    return PreflightRequest(
        cloud=site.cloud,
        image=site.image,
        flavors=[site.vpn_flavor, *worker_flavors],
        external_network=site.external_network,
        instances_by_flavor={site.vpn_flavor: 1, **worker_flavors} if req.is_new else {},
        needs=Needs(
            instances=1 + site.workers, floating_ips=1, networks=1, routers=1, security_groups=1
        )
        if req.is_new
        else Needs(),
    )


async def _check_master(req: Request) -> tuple[st.NodeFacts, SSHKey, list[str]]:
    """The master's port facts and home key, and what keeps it from being this site's hub:
    too many pairs for its port, another program on the hub's UDP port (one SSH call)."""
    home = req.home
    master, home_key = await asyncio.gather(
        st.lookup_node(home.cloud, home.master), ssh_key(home.ssh_key_block)
    )
    problems: list[str] = []
    if master.port_security:
        pairs = [str(n) for n in desired.home_side(req.data, req.draft.subnet)]
        problems += pair_limit_problems(
            f"master {home.master}",
            master.port_id,
            master.allowed_address_pairs,
            pairs,
            MAX_ADDRESS_PAIRS,
        )
    if master.floating_ip is not None:  # none yet: step 4 allocates it, nothing to reach
        target = door(home.cloud, str(master.floating_ip), home.master_host_keys, home_key)
        port = await nodes.udp_port_state(target, home.ssh_key_block, home.listen_port)
        problems += hub_port_problems(f"the master {home.master} ({target.label})", port)
    return master, home_key, problems


# ---------------------------------------------------------------- 3. allocate


async def allocate(req: Request, pre: Preflight) -> SiteRun:
    """Subnet and WireGuard address, under the registry lock (a concurrent run gets others);
    the site's SSH key block made if missing."""
    resolved = await allocate_site(req.topo, req.site.name, req.options.registry)
    site_key = pre.site_key or await make_ssh_key(req.key_block, req.site.ssh_user)
    checkpoint("allocated")
    return SiteRun(**vars(req), resolved=resolved, site_key=site_key, home_key=pre.home_key)


# ---------------------------------------------------------------- 4. network


async def network(run: SiteRun, master: st.NodeFacts) -> Network:
    """Site network, group and key pair, and every home-side lookup, at once. The UDP rules
    join once the floating IPs are known (step 6)."""
    site, home = run.site, run.home
    unlinked = desired.wiring(run.data, desired.facts_for(run.resolved))
    net, site_sg, keypair, master, home_sg, home_workers = await asyncio.gather(
        st.ensure_site_network(
            site.cloud, site.name, str(run.resolved.subnet), site.external_network
        ),
        st.ensure_group(site.cloud, site.name, _group(site.name), unlinked.site_rules),
        st.ensure_keypair(
            site.cloud, naming.resource_name(site.name, naming.KEY), run.site_key.public_key
        ),
        master_with_floating_ip(home, master),
        st.ensure_group(
            home.cloud, home.name, _group(home.name), unlinked.home_rules, rule_owner=site.name
        ),
        asyncio.gather(*(st.lookup_node(home.cloud, w) for w in home.workers)),
    )
    # a too-small underlay fails here, before any server boots
    mtu = site_wiring(run, net.network.mtu, master, None).tunnel_mtu
    master_target = door(home.cloud, str(master.floating_ip), home.master_host_keys, run.home_key)
    checkpoint("network")
    return Network(
        net=net,
        site_sg=site_sg,
        keypair=keypair,
        home_sg=home_sg,
        master=master,
        home_workers=list(home_workers),
        master_target=master_target,
        tunnel_mtu=mtu,
    )


def _group(owner: str) -> str:
    return naming.resource_name(owner, naming.SG)


# ---------------------------------------------------------------- 5. launch


async def launch(run: SiteRun, net: Network) -> Servers:
    """The VPN node (then its floating IP), the hub's WireGuard key and the workers, at once."""
    site, log = run.site, get_run_logger()
    specs = [
        _server(run, net, naming.WORKER, i, site.worker_flavor) for i in range(1, site.workers + 1)
    ]
    log.info("Launching %s and %d worker(s) on %s", f"hg-{site.name}-vpn", site.workers, site.cloud)
    launched = time.monotonic()
    (vpn, vpn_fip), hub_public_key, *workers = await asyncio.gather(
        _vpn_node(run, net),
        nodes.ensure_node_key(net.master_target, run.home.ssh_key_block),
        *(st.ensure_server(site.cloud, s, timeout=run.options.boot_timeout) for s in specs),
    )
    boot_wait = time.monotonic() - launched
    log.info("VPN node %s is ACTIVE at %s (fixed %s)", vpn.name, vpn_fip.address, vpn.fixed_ip)
    checkpoint("servers-launched")
    return Servers(
        vpn=vpn,
        vpn_fip=vpn_fip,
        workers=list(workers),
        hub_public_key=hub_public_key,
        boot_wait=boot_wait,
        wiring=site_wiring(run, net.net.network.mtu, net.master, str(vpn_fip.address)),
    )


def _server(run: SiteRun, net: Network, role: str, n: int | None, flavor: str) -> ServerSpec:
    site = run.site
    return ServerSpec(
        name=naming.resource_name(site.name, role, n),
        site=site.name,
        role=role if n is None else f"{role}-{n}",
        image=site.image,
        flavor=flavor,
        network_id=net.net.network.id,
        key_name=net.keypair.name,
        security_groups=[_group(site.name)],
    )


async def _vpn_node(run: SiteRun, net: Network) -> tuple[ServerRecord, FloatingIPRecord]:
    site = run.site
    spec = _server(run, net, naming.VPN, None, site.vpn_flavor)
    vpn = await st.ensure_server(site.cloud, spec, timeout=run.options.boot_timeout)
    fip = await st.ensure_floating_ip(site.cloud, site.name, vpn.port_id, site.external_network)
    return vpn, fip


# ---------------------------------------------------------------- 6. open UDP


async def open_udp(run: SiteRun, net: Network, servers: Servers) -> HostKeys:
    """UDP to each end from the other's /32 and the host keys from the console logs, at once;
    then the home group on the master's and home workers' ports."""
    site, home, wiring = run.site, run.home, servers.wiring
    _, _, vpn_keys, *worker_keys = await asyncio.gather(
        st.ensure_rules(site.cloud, net.site_sg.group.id, site.name, wiring.site_rules),
        st.ensure_rules(home.cloud, net.home_sg.group.id, site.name, wiring.home_rules),
        host_keys(run.data, site.name, site.cloud, servers.vpn.id, servers.vpn.name, "vpn"),
        *(
            host_keys(run.data, site.name, site.cloud, w.id, w.name, f"worker-{i}")
            for i, w in enumerate(servers.workers, 1)
        ),
    )
    await asyncio.gather(
        *(
            st.ensure_port(home.cloud, n.port_id, [], [net.home_sg.group.id])
            for n in [net.master, *net.home_workers]
        )
    )
    checkpoint("rules")
    return HostKeys(vpn=vpn_keys, workers=list(worker_keys))


# ---------------------------------------------------------------- 7. SSH


async def log_in(run: SiteRun, net: Network, servers: Servers, keys: HostKeys) -> Logins:
    """The VPN node at its floating IP and the site's workers through it, until SSH answers;
    the home workers through the master."""
    vpn = door(run.site.cloud, str(servers.vpn_fip.address), keys.vpn, run.site_key)
    workers = [
        behind(vpn, str(w.fixed_ip), k, run.site.ssh_user)
        for w, k in zip(servers.workers, keys.workers, strict=True)
    ]
    timeout = run.options.boot_timeout
    await asyncio.gather(
        *(nodes.ssh_ready(t, run.key_block, timeout=timeout) for t in [vpn, *workers])
    )
    checkpoint("ssh-ready")
    home = run.home
    home_workers = [
        behind(
            net.master_target, str(w.fixed_ip), home.host_keys.get(w.name, []), run.home_key.user
        )
        for w in net.home_workers
    ]
    return Logins(vpn=vpn, workers=workers, home_workers=home_workers)


# ---------------------------------------------------------------- 8. keys


async def spoke_key(run: SiteRun, logins: Logins) -> str:
    """The spoke's WireGuard key, made on the VPN node (its private key never leaves it)."""
    public_key = await nodes.ensure_node_key(logins.vpn, run.key_block)
    checkpoint("spoke-key")
    return public_key


# ---------------------------------------------------------- 9. wg0 on both ends, pairs, routes


async def link(
    run: SiteRun, net: Network, servers: Servers, keys: HostKeys, logins: Logins, spoke_pub: str
) -> Link:
    """Everything that links the site, at once: wg0 on the VPN node (the hub its only peer),
    the site's peer on the hub (live, under the hub lock), the pairs, the workers' routes."""
    update = site_update(run, net, servers, keys, spoke_pub)
    spoke, master_port, vpn_port = await asyncio.gather(
        _spoke(run, servers, logins),
        _hub(run, net, servers, update),
        _pairs_and_routes(run, net, servers, logins),
    )
    if spoke.public_key != spoke_pub:  # only if someone re-keyed the node meanwhile
        raise RuntimeError(
            f"the WireGuard key of {servers.vpn.name} changed during the run: "
            "run add-remote-site again"
        )
    return Link(spoke_public_key=spoke.public_key, master_port=master_port, vpn_port=vpn_port)


async def _spoke(run: SiteRun, servers: Servers, logins: Logins) -> nodes.NodeSetup:
    config = desired.spoke_config(run.data, servers.wiring, servers.hub_public_key)
    res = await nodes.apply_wireguard(logins.vpn, run.key_block, config)
    get_run_logger().info(
        "wg0 on %s: %s (public key %s)", servers.vpn.name, res.action, res.public_key
    )
    checkpoint("spoke")
    return res


async def _hub(run: SiteRun, net: Network, servers: Servers, update: SiteUpdate) -> PortRecord:
    """Record the site, render and apply the hub's wg0, set the master's pairs: one editor of
    the hub at a time."""
    home, pairs = run.home, [str(n) for n in servers.wiring.master_pairs]
    async with hub_lock(home.name):
        res = await apply_hub(
            run.options.registry,
            run.site.name,
            update,
            net.master_target,
            home.ssh_key_block,
            net.tunnel_mtu,
        )
        port = await st.ensure_port(home.cloud, net.master.port_id, pairs, [net.home_sg.group.id])
    get_run_logger().info("Peer %s on the hub %s: %s", run.site.name, home.master, res.action)
    checkpoint("hub")
    return port


async def _pairs_and_routes(
    run: SiteRun, net: Network, servers: Servers, logins: Logins
) -> PortRecord:
    """Pairs on the VPN node's port; routes on the site's workers (via the VPN node) and on
    the home workers with pinned host keys (via the master)."""
    vpn, wiring, home = servers.vpn, servers.wiring, run.home
    port, *_ = await asyncio.gather(
        st.ensure_port(run.site.cloud, vpn.port_id, [str(n) for n in wiring.vpn_pairs], []),
        *(
            nodes.ensure_routes(t, run.key_block, wiring.site_routes, vpn.fixed_ip)
            for t in logins.workers
        ),
        *(
            nodes.ensure_routes(t, home.ssh_key_block, wiring.home_routes, net.master.fixed_ip)
            for t in logins.home_workers
            if t.host_keys
        ),
    )
    checkpoint("routes")
    return port


# ---------------------------------------------------------------- 10. the scheduler


async def scheduler(run: SiteRun, net: Network, servers: Servers, logins: Logins) -> None:
    """With a Slurm home: the site's partition, name entries and workers as nodes."""
    if run.home.scheduler != "slurm":
        return
    await join_site(
        run.options.registry,
        run.site.name,
        net.master_target,
        net.master.fixed_ip,
        logins.workers,
        run.key_block,
    )


# ---------------------------------------------------------------- 11. verify


async def verify(
    run: SiteRun, net: Network, servers: Servers, logins: Logins, link: Link
) -> SiteSummary:
    """The site's summary, with the layered verification when the options ask for it."""
    summary = site_summary(run, net, servers, link)
    if run.options.verify:
        hub, spoke = tunnel_ends(run, net, servers, logins, link)
        workers = workers_across(run, net, servers, logins)
        summary.layers = await verify_site(hub, spoke, servers.wiring.tunnel_mtu, workers)
        if run.home.scheduler == "slurm":
            workers = dict(zip([w.name for w in servers.workers], logins.workers, strict=True))
            summary.layers.append(
                await verify_site_jobs(
                    run.site.name, net.master_target, run.home.ssh_key_block, workers, run.key_block
                )
            )
    return summary


# ---------------------------------------------------------------- 12. record


async def record(run: SiteRun, summary: SiteSummary) -> None:
    """The verdict into the registry, the summary and resource table as artifacts; a failed
    verification then fails the run (the site stays built and recorded)."""
    verdict = Verification(
        ok=summary.verified,
        summary="; ".join(f"{x.layer}: {x.mark}" for x in summary.layers) or "not verified",
    )

    def record_verdict(d: RegistryData) -> None:
        d.sites[run.site.name].last_verification = verdict

    # One after the other: two concurrent writes make a SQLite Prefect server answer 503 and
    # the client back off ~2 s (measured at the end of every run).
    await update_registry(record_verdict, run.options.registry)
    await publish(summary)
    checkpoint("recorded")
    for layer in summary.layers:
        get_run_logger().info(
            "verify %-12s %s %s", layer.layer, layer.mark, "; ".join(layer.problems)
        )
    if run.options.verify and not summary.verified:
        failed = [x for x in summary.layers if x.ok is False]
        raise VerificationFailed(
            f"site {run.site.name} is built but not verified: "
            + " | ".join(f"{x.layer}: {'; '.join(x.problems)}" for x in failed)
        )
