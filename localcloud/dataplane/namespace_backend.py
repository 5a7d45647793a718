"""NamespaceBackend: converges real namespaces, bridges, routers and servers to a snapshot.

Layout (per localcloud instance, tag = hash of the state dir):
- ``lc<tag>-inet``: the internet, shared by the instance's clouds; holds each external
  network's gateway (203.0.113.1, 198.51.100.1, ...) and routes between them.
- ``lc<tag>-f<cloud>``: one fabric namespace per cloud with a bridge per network (tenant and
  external) and the fabric ends of every port's veth; security groups and port security
  are enforced here (see firewall.py).
- ``lc<tag>-r<router>``: one namespace per router: ``qg…`` leg on the external bridge,
  ``qr…`` legs on tenant bridges, SNAT, floating-IP DNAT/SNAT, extra routes.
- ``lc<tag>-s<server>``: one per server, with a holder process (see vm.py).
The root namespace gets nothing but ``unreachable`` routes for the simulated public ranges.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from localcloud.backend import CloudSnapshot, FloatingIP, Network, Port, Router, Subnet
from localcloud.backend import Server as ServerSpec
from localcloud.dataplane import firewall, names, vm
from localcloud.dataplane.cloudconfig import CloudInit, UserDataError, parse_user_data
from localcloud.dataplane.hostkeys import console_text, generate_host_keys
from localcloud.dataplane.netns import (
    DataplaneError,
    add_namespace,
    delete_namespace,
    ip,
    ip_batch,
    ip_json,
    is_alive,
    kill_pids,
    list_namespaces,
    nsexec,
    run,
    sysctl,
)
from localcloud.dataplane.state import (
    CloudRecord,
    DataplaneState,
    RouterRecord,
    ServerRecord,
    find_server,
    load_state,
    save_state,
)

log = logging.getLogger("localcloud.dataplane")

# Simulated public ranges (TEST-NET-2/3 and the benchmark range), never 192.0.2.0/24.
PUBLIC_RANGES = [
    ipaddress.ip_network(n) for n in ("203.0.113.0/24", "198.51.100.0/24", "198.18.0.0/15")
]
DEFAULT_UNREACHABLE = ["203.0.113.0/24", "198.51.100.0/24"]
# The bastion host's public network (see bastion.py): the last /24 of 198.18.0.0/15, which only
# a cloud with index 513 would take; the data plane refuses such a cloud. Its unreachable route
# is added with the first bastion and removed with the last one (of any instance).
BASTION_NETWORK = ipaddress.ip_network("198.19.255.0/24")
NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
LIVE_STATUSES = {"BUILD", "ACTIVE", "SHUTOFF", "REBOOT", "HARD_REBOOT", "RESIZE", "VERIFY_RESIZE"}


def _prefixlen(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).prefixlen


def _check_public(cidr: str, network: Network) -> None:
    net = ipaddress.ip_network(cidr, strict=False)
    if not any(net.subnet_of(r) for r in PUBLIC_RANGES):
        raise DataplaneError(
            f"external network {network.name!r}: subnet cidr {cidr} is not a simulated public "
            "range; use 203.0.113.0/24, 198.51.100.0/24 or a part of 198.18.0.0/15"
        )
    if net.overlaps(BASTION_NETWORK):
        raise DataplaneError(
            f"external network {network.name!r}: subnet cidr {cidr} overlaps "
            f"{BASTION_NETWORK}, which is reserved for localcloud's bastion host; "
            "use another part of 198.18.0.0/15"
        )


class NamespaceBackend:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.tag = names.instance_tag(self.state_dir)
        self.dir = self.state_dir / "dataplane"
        self._lock = threading.RLock()
        self.state = load_state(self.state_dir, self.tag)

    # ---------------------------------------------------------------- public API
    def apply(self, snapshot: CloudSnapshot) -> None:
        with self._lock:
            vm.reap()
            errors: list[str] = []
            self._ensure_instance()
            try:
                cloud = self._ensure_cloud(snapshot)
                self._converge_networks(snapshot, cloud, errors)
                self._converge_servers(snapshot, cloud, errors)
                self._converge_routers(snapshot, cloud, errors)
                self._remove_stray_port_links(snapshot, cloud)
                self._apply_firewall(snapshot, cloud, errors)
            finally:  # what was made is recorded even when a step failed
                save_state(self.state_dir, self.state)
            if errors:
                raise DataplaneError(f"cloud {snapshot.cloud}: " + "; ".join(errors))

    def console_log(self, cloud: str, server_id: str) -> str:
        path = self._console_path(server_id)
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        with self._lock:
            vm.reap()
            if self.dir.exists():
                save_state(self.state_dir, self.state)

    def destroy(self) -> None:
        with self._lock:
            pids = [s.pid for s in self.state.servers.values() if s.pid]
            kill_pids([p for p in pids if p and self._pid_is_ours(p)])
            from localcloud.dataplane import bastion  # it imports this module

            bastion.down(self.state_dir)
            for ns in list_namespaces():
                if ns.startswith(names.prefix(self.tag)):
                    delete_namespace(ns)
            self._remove_unreachable_routes()
            vm.reap()
            shutil.rmtree(self.dir, ignore_errors=True)
            self.state = DataplaneState(tag=self.tag)

    # ---------------------------------------------------------------- helpers for tools/tests
    def server_pid(self, server_ref: str, cloud: str | None = None) -> int:
        rec = find_server(self.state, server_ref, cloud)
        if not rec.pid or not is_alive(rec.pid, rec.ns):
            raise DataplaneError(f"server {rec.name} has no running holder")
        return rec.pid

    def exec(self, server_ref: str, argv: list[str], *, cloud: str | None = None, **kw):
        return vm.exec_in(self.server_pid(server_ref, cloud), argv, **kw)

    def namespaces(self) -> list[str]:
        return [ns for ns in list_namespaces() if ns.startswith(names.prefix(self.tag))]

    def bastion(
        self,
        authorized_keys: str | list[str],
        bastion_only: list[str] | None = None,
        *,
        add: bool = False,
    ):
        """A bastion host in this instance's internet (idempotent); see bastion.py."""
        from localcloud.dataplane import bastion

        return bastion.up(self.state_dir, authorized_keys, bastion_only or [], add=add)

    def flush_conntrack(self) -> None:
        """Forget every connection in this instance's namespaces (tests switch SG cases)."""
        for ns in self.namespaces():
            nsexec(ns, ["conntrack", "-F"], check=False)

    # ---------------------------------------------------------------- instance / cloud
    def _pid_is_ours(self, pid: int) -> bool:
        return any(s.pid == pid and is_alive(pid, s.ns) for s in self.state.servers.values())

    def _console_path(self, server_id: str) -> Path:
        return self.dir / "console" / f"{names.short(server_id, 16)}.log"

    def _ensure_instance(self) -> None:
        for d in (self.dir, self.dir / "console", self.dir / "logs"):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        inet = names.inet_ns(self.tag)
        if not os.path.exists(f"/run/netns/{inet}"):
            add_namespace(inet)
            sysctl(inet, {**NO_IPV6, "net.ipv4.ip_forward": "1"})
            ip(inet, "link", "set", "lo", "up")
        self._ensure_unreachable_routes()

    def _wanted_unreachable(self) -> list[str]:
        cidrs = set(DEFAULT_UNREACHABLE)
        for c in self.state.clouds.values():
            cidrs.update(c.external_cidrs)
        return sorted(cidrs)

    def _ensure_unreachable_routes(self) -> None:
        ensure_unreachable_routes(self._wanted_unreachable())

    def _remove_unreachable_routes(self) -> None:
        others = [
            ns
            for ns in list_namespaces()
            if names.INSTANCE_NS_RE.match(ns) and ns != names.inet_ns(self.tag)
        ]
        if others:
            return  # another localcloud instance still relies on them
        have = root_unreachable()
        for cidr in self._wanted_unreachable():
            if cidr in have:
                run(["ip", "route", "del", "unreachable", cidr], check=False)

    def _ensure_cloud(self, snap: CloudSnapshot) -> CloudRecord:
        rec = self.state.clouds.get(snap.cloud)
        fabric = names.fabric_ns(self.tag, snap.cloud)
        ext = []
        for net in snap.networks:
            if net.external:
                for sub in net.subnets:
                    _check_public(sub.cidr, net)
                    ext.append(str(ipaddress.ip_network(sub.cidr, strict=False)))
        if rec is None:
            rec = CloudRecord(name=snap.cloud, index=snap.index, fabric=fabric)
            self.state.clouds[snap.cloud] = rec
        rec.external_cidrs = sorted(set(ext))
        if not os.path.exists(f"/run/netns/{fabric}"):
            add_namespace(fabric)
            sysctl(
                fabric,
                {**NO_IPV6, "net.bridge.bridge-nf-call-iptables": "1",
                 "net.bridge.bridge-nf-call-ip6tables": "0"},
            )  # fmt: skip
            ip(fabric, "link", "set", "lo", "up")
        self._ensure_unreachable_routes()
        return rec

    # ---------------------------------------------------------------- networks
    def _converge_networks(
        self, snap: CloudSnapshot, cloud: CloudRecord, errors: list[str]
    ) -> None:
        fabric = cloud.fabric
        inet = names.inet_ns(self.tag)
        links = {link["ifname"]: link for link in ip_json(fabric, "-d", "link", "show")}
        want_br = {names.bridge(n.id): n for n in snap.networks}
        cmds = []
        for br, net in want_br.items():
            if br not in links:
                cmds += [f"link add {br} type bridge", f"link set {br} mtu {net.mtu} up"]
        ip_batch(fabric, cmds)
        # external networks: a veth from the bridge to the internet namespace
        want_up = {names.uplink(n.id): n for n in snap.networks if n.external and n.subnets}
        inet_links = {link["ifname"] for link in ip_json(inet, "link", "show")}
        for up, net in want_up.items():
            xl = names.inet_link(net.id)
            if up in links and xl in inet_links:
                continue
            try:
                if up in links:
                    ip(fabric, "link", "del", up)
                sub = net.subnets[0]
                gw = sub.gateway_ip or str(next(ipaddress.ip_network(sub.cidr).hosts()))
                ip(
                    fabric,
                    "link",
                    "add",
                    up,
                    "mtu",
                    str(net.mtu),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    xl,
                    "netns",
                    inet,
                )
                ip_batch(fabric, [f"link set {up} master {names.bridge(net.id)} up"])
                ip_batch(
                    inet,
                    [
                        f"link set {xl} mtu {net.mtu} up",
                        f"addr add {gw}/{_prefixlen(sub.cidr)} dev {xl}",
                    ],
                )
            except DataplaneError as exc:
                errors.append(f"external network {net.name}: {exc}")
        for name, link in links.items():
            kind = link.get("linkinfo", {}).get("info_kind")
            if (name.startswith("b") and kind == "bridge" and name not in want_br) or (
                name.startswith("u") and kind == "veth" and name not in want_up
            ):
                ip(fabric, "link", "del", name, check=False)

    # ---------------------------------------------------------------- ports (veths)
    def _plug(
        self, port: Port, net: Network, ns: str, ifname: str, cloud: CloudRecord,
        subnets: dict[str, Subnet], default_route: bool,
    ) -> None:  # fmt: skip
        fabric = cloud.fabric
        link = names.port_link(port.id)
        ip(fabric, "link", "del", link, check=False)
        ip(
            fabric,
            "link",
            "add",
            link,
            "mtu",
            str(net.mtu),
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            ns,
        )
        ip_batch(fabric, [f"link set {link} master {names.bridge(net.id)} up"])
        cmds = [f"link set {ifname} address {port.mac_address} mtu {net.mtu} up", "link set lo up"]
        for fip in port.fixed_ips:
            sub = subnets.get(fip.subnet_id)
            if sub:
                cmds.append(f"addr add {fip.ip_address}/{_prefixlen(sub.cidr)} dev {ifname}")
        ip_batch(ns, cmds)
        if default_route:
            for fip in port.fixed_ips:
                sub = subnets.get(fip.subnet_id)
                if sub and sub.gateway_ip and sub.gateway_ip != fip.ip_address:
                    ip(ns, "route", "replace", "default", "via", sub.gateway_ip, "dev", ifname)
                    break

    def _remove_stray_port_links(self, snap: CloudSnapshot, cloud: CloudRecord) -> None:
        """Fabric port veths whose port or owner is gone (e.g. after a crash mid-apply)."""
        wanted = set()
        for rec in self.state.servers.values():
            if rec.cloud == snap.cloud:
                wanted.update(names.port_link(p) for p in rec.ifaces)
        for r in snap.routers:
            if r.id in self.state.routers:
                wanted.update(
                    names.port_link(p) for p in [r.gateway_port_id, *r.interface_port_ids] if p
                )
        for link in ip_json(cloud.fabric, "link", "show"):
            name = link["ifname"]
            if name.startswith("t") and name not in wanted:
                ip(cloud.fabric, "link", "del", name, check=False)

    # ---------------------------------------------------------------- servers
    def _converge_servers(self, snap: CloudSnapshot, cloud: CloudRecord, errors: list[str]) -> None:
        ports = {p.id: p for p in snap.ports}
        nets = {n.id: n for n in snap.networks}
        subnets = {s.id: s for n in snap.networks for s in n.subnets}
        present = set()
        for spec in snap.servers:
            if spec.status.upper() not in LIVE_STATUSES:
                continue
            present.add(spec.id)
            try:
                self._ensure_server(spec, cloud, ports, nets, subnets)
            except (DataplaneError, OSError, ValueError) as exc:
                log.exception("server %s", spec.name)
                errors.append(f"server {spec.name}: {exc}")
        for sid, rec in list(self.state.servers.items()):
            if rec.cloud == snap.cloud and sid not in present:
                self._teardown_server(rec, cloud)

    def _ensure_server(
        self, spec: ServerSpec, cloud: CloudRecord, ports: dict[str, Port],
        nets: dict[str, Network], subnets: dict[str, Subnet],
    ) -> None:  # fmt: skip
        rec = self.state.servers.get(spec.id)
        ns = names.server_ns(self.tag, spec.id)
        if rec is not None and not is_alive(rec.pid, rec.ns):
            log.warning("server %s: holder gone, recreating", spec.name)
            self._teardown_server(rec, cloud)
            rec = None
        if rec is None:
            t0 = time.monotonic()
            delete_namespace(ns)  # leftovers of a crash
            add_namespace(ns)
            sysctl(ns, NO_IPV6)
            keys = generate_host_keys()
            logf = self.dir / "logs" / f"{names.short(spec.id, 16)}.log"
            pid = vm.start_holder(ns, spec.name, keys, logf)
            rec = ServerRecord(
                id=spec.id, cloud=cloud.name, name=spec.name, ns=ns, pid=pid,
                host_keys=[k.public_only() for k in keys],
            )  # fmt: skip
            self.state.servers[spec.id] = rec
            self._write_console(
                spec.id, f"[    0.000000] Linux version 6 (localcloud): booting {spec.name}\n"
            )
            log.info(
                "server %s: namespace ready in %.0f ms", spec.name, (time.monotonic() - t0) * 1e3
            )
        # ports: plug new ones, unplug removed ones
        used = set(rec.ifaces.values())
        for i, port_id in enumerate(spec.port_ids):
            port = ports.get(port_id)
            if port is None or port_id in rec.ifaces or port.network_id not in nets:
                continue
            n = 0
            while f"eth{n}" in used:
                n += 1
            ifname = f"eth{n}"
            self._plug(
                port, nets[port.network_id], ns, ifname, cloud, subnets, default_route=i == 0
            )
            rec.ifaces[port_id] = ifname
            used.add(ifname)
        for port_id in list(rec.ifaces):
            if port_id not in spec.port_ids or port_id not in ports:
                ip(cloud.fabric, "link", "del", names.port_link(port_id), check=False)
                del rec.ifaces[port_id]
        status = spec.status.upper()
        if status == "ACTIVE" and not rec.booted:
            self._boot(spec, rec, ports, subnets)
        elif status == "SHUTOFF" and rec.booted:
            self._power_off(rec)

    def _power_off(self, rec: ServerRecord) -> None:
        """SHUTOFF: every process but PID 1 ends (sshd, wireguard-go, ...), links go down.

        The server's files stay, like a VM's disk; `kill -1` only reaches its own PID namespace.
        """
        assert rec.pid
        vm.exec_in(rec.pid, ["sh", "-c", "rm -f /run/sshd.pid; kill -KILL -1; true"])
        ip_batch(rec.ns, [f"link set {ifname} down" for ifname in rec.ifaces.values()])
        rec.booted = False

    def _boot(
        self,
        spec: ServerSpec,
        rec: ServerRecord,
        ports: dict[str, Port],
        subnets: dict[str, Subnet],
    ) -> None:
        assert rec.pid
        if rec.cloud_init_done:  # power on again: links up, default route back, sshd
            ip_batch(rec.ns, [f"link set {ifname} up" for ifname in rec.ifaces.values()])
            first = ports.get(spec.port_ids[0]) if spec.port_ids else None
            for f in first.fixed_ips if first else []:
                sub = subnets.get(f.subnet_id)
                if sub and sub.gateway_ip and sub.gateway_ip != f.ip_address:
                    ip(rec.ns, "route", "replace", "default", "via", sub.gateway_ip, check=False)
                    break
        warnings = ""
        try:
            cloud_init = CloudInit() if rec.cloud_init_done else parse_user_data(spec.user_data)
        except UserDataError as exc:  # cloud-init boots anyway and says why on the console
            cloud_init, warnings = CloudInit(), f"cloud-init: {exc}\n"
        warnings += vm.boot(rec.pid, spec.name, spec.authorized_keys, cloud_init)
        if warnings:
            self._write_console(spec.id, warnings, append=True)
        rec.cloud_init_done = True
        vm.wait_listening(rec.ns)
        fixed = [f.ip_address for p in spec.port_ids if p in ports for f in ports[p].fixed_ips]
        self._write_console(spec.id, console_text(spec.name, rec.host_keys, fixed), append=True)
        rec.booted = True

    def _write_console(self, server_id: str, text: str, append: bool = False) -> None:
        path = self._console_path(server_id)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "a" if append else "w") as f:
            f.write(text)

    def _teardown_server(self, rec: ServerRecord, cloud: CloudRecord | None) -> None:
        if rec.pid and is_alive(rec.pid, rec.ns):
            kill_pids([rec.pid])
        fabric = cloud.fabric if cloud else None
        if fabric:
            for port_id in rec.ifaces:
                ip(fabric, "link", "del", names.port_link(port_id), check=False)
        delete_namespace(rec.ns)
        self._console_path(rec.id).unlink(missing_ok=True)
        (self.dir / "logs" / f"{names.short(rec.id, 16)}.log").unlink(missing_ok=True)
        self.state.servers.pop(rec.id, None)

    # ---------------------------------------------------------------- routers
    def _converge_routers(self, snap: CloudSnapshot, cloud: CloudRecord, errors: list[str]) -> None:
        present = set()
        for router in snap.routers:
            present.add(router.id)
            try:
                self._ensure_router(router, snap, cloud)
            except (DataplaneError, OSError, ValueError) as exc:
                log.exception("router %s", router.name)
                errors.append(f"router {router.name}: {exc}")
        for rid, rec in list(self.state.routers.items()):
            if rec.cloud == snap.cloud and rid not in present:
                for link in (
                    ip_json(rec.ns, "link", "show")
                    if os.path.exists(f"/run/netns/{rec.ns}")
                    else []
                ):
                    if link["ifname"].startswith("q"):
                        ip(rec.ns, "link", "del", link["ifname"], check=False)
                delete_namespace(rec.ns)
                del self.state.routers[rid]

    def _ensure_router(self, router: Router, snap: CloudSnapshot, cloud: CloudRecord) -> None:
        ns = self._router_namespace(router, snap.cloud)
        look = _Lookup.of(snap)
        gw_port = look.ports.get(router.gateway_port_id or "")
        gw_link = names.router_gw_link(gw_port.id) if gw_port else None
        legs = _router_legs(router, look, gw_port)
        self._sync_router_links(ns, legs, cloud)
        fips = [
            firewall.FloatingNat(floating_ip=f.floating_ip_address, fixed_ip=f.fixed_ip_address)
            for f in snap.floating_ips
            if gw_port and _router_handles(router, look, gw_port, f)
        ]
        self._sync_router_addresses(ns, legs, gw_link, fips, look)
        gw_ip, want_routes = _router_routes(router, look, gw_port)
        self._sync_routes(ns, want_routes)
        internal = [
            look.subnets[f.subnet_id].cidr
            for pid in router.interface_port_ids
            if pid in look.ports
            for f in look.ports[pid].fixed_ips
            if f.subnet_id in look.subnets
        ]
        script = firewall.render_router_nat(gw_link, gw_ip, internal, fips, router.enable_snat)
        nsexec(ns, ["nft", "-f", "-"], input=script)

    def _router_namespace(self, router: Router, cloud_name: str) -> str:
        """The router's namespace (made once: forwarding on, no redirects, no rp_filter)."""
        ns = names.router_ns(self.tag, router.id)
        if not os.path.exists(f"/run/netns/{ns}"):
            add_namespace(ns)
            sysctl(
                ns,
                {**NO_IPV6, "net.ipv4.ip_forward": "1", "net.ipv4.conf.all.send_redirects": "0",
                 "net.ipv4.conf.default.send_redirects": "0", "net.ipv4.conf.all.rp_filter": "0",
                 "net.ipv4.conf.default.rp_filter": "0"},
            )  # fmt: skip
            ip(ns, "link", "set", "lo", "up")
        self.state.routers[router.id] = RouterRecord(id=router.id, cloud=cloud_name, ns=ns)
        return ns

    @staticmethod
    def _sync_router_links(
        ns: str, legs: dict[str, tuple[Port, Network]], cloud: CloudRecord
    ) -> None:
        """Delete legs no longer wanted; add each missing one as a veth into its bridge."""
        have = {link["ifname"] for link in ip_json(ns, "link", "show")}
        for name in have:
            if name.startswith("q") and name not in legs:
                ip(ns, "link", "del", name, check=False)
        for name, (port, net) in legs.items():
            if name in have:
                continue
            link = names.port_link(port.id)
            ip(cloud.fabric, "link", "del", link, check=False)
            ip(
                cloud.fabric, "link", "add", link, "mtu", str(net.mtu),
                "type", "veth", "peer", "name", name, "netns", ns,
            )  # fmt: skip
            ip_batch(cloud.fabric, [f"link set {link} master {names.bridge(net.id)} up"])
            ip_batch(ns, [f"link set {name} address {port.mac_address} mtu {net.mtu} up"])

    def _sync_router_addresses(
        self,
        ns: str,
        legs: dict[str, tuple[Port, Network]],
        gw_link: str | None,
        fips: list[firewall.FloatingNat],
        look: _Lookup,
    ) -> None:
        """Each leg's fixed IPs; the gateway leg also holds the floating IPs (as /32)."""
        for name, (port, _net) in legs.items():
            want = {
                f"{f.ip_address}/{_prefixlen(look.subnets[f.subnet_id].cidr)}"
                for f in port.fixed_ips
                if f.subnet_id in look.subnets
            }
            if name == gw_link:
                want.update(f"{f.floating_ip}/32" for f in fips)
            removed = self._sync_addresses(ns, name, want)
            if name == gw_link:
                self._forget_nat(ns, [a.split("/")[0] for a in removed if a.endswith("/32")])

    @staticmethod
    def _forget_nat(ns: str, floating_ips: list[str]) -> None:
        """A floating IP left this router: drop its NAT state, as Neutron's L3 agent does, so
        the instance's flows stop being translated to an address it no longer has."""
        for fip in floating_ips:
            for flag in ("--orig-dst", "--reply-dst"):
                nsexec(ns, ["conntrack", "-D", flag, fip], check=False)

    @staticmethod
    def _sync_addresses(ns: str, dev: str, want: set[str]) -> set[str]:
        have = set()
        for entry in ip_json(ns, "addr", "show", "dev", dev):
            for a in entry.get("addr_info", []):
                if a.get("family") == "inet":
                    have.add(f"{a['local']}/{a['prefixlen']}")
        cmds = [f"addr del {a} dev {dev}" for a in sorted(have - want)]
        cmds += [f"addr add {a} dev {dev}" for a in sorted(want - have)]
        ip_batch(ns, cmds)
        return have - want

    @staticmethod
    def _sync_routes(ns: str, want: dict[str, str]) -> None:
        have = {}
        for r in ip_json(ns, "route", "show"):
            if r.get("protocol") == "kernel" or "gateway" not in r:
                continue
            have[r["dst"]] = r["gateway"]
        cmds = [f"route del {dst}" for dst in have if dst not in want]
        errors = []
        ip_batch(ns, cmds)
        for dst, via in want.items():
            if have.get(dst) != via:
                res = ip(ns, "route", "replace", dst, "via", via, check=False)
                if res.returncode != 0:
                    errors.append(f"route {dst} via {via}: {res.stderr.strip()}")
        if errors:
            raise DataplaneError("; ".join(errors))

    # ---------------------------------------------------------------- firewall
    def _apply_firewall(self, snap: CloudSnapshot, cloud: CloudRecord, errors: list[str]) -> None:
        groups = {g.id: g for g in snap.security_groups}
        members = firewall.group_members(snap.ports)
        plugged = {
            p for rec in self.state.servers.values() if rec.cloud == snap.cloud for p in rec.ifaces
        }
        protected = [
            firewall.protected_port(p, names.port_link(p.id), groups, members)
            for p in snap.ports
            if p.id in plugged and p.port_security_enabled
        ]
        try:
            nsexec(cloud.fabric, ["nft", "-f", "-"], input=firewall.render_fabric(protected))
        except DataplaneError as exc:
            errors.append(f"security groups: {exc}")


def ip_json_root(*args: str) -> list[dict]:
    import json

    out = run(["ip", "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def root_unreachable() -> set[str]:
    return {r["dst"] for r in ip_json_root("route", "show", "type", "unreachable")}


def ensure_unreachable_routes(cidrs: list[str]) -> None:
    """Safety: the root namespace must never send these ranges off the machine."""
    have = root_unreachable()
    for cidr in cidrs:
        if cidr not in have:  # the only thing ever added to the root namespace
            run(["ip", "route", "add", "unreachable", cidr])


@dataclass
class _Lookup:
    """A snapshot's ports, networks and subnets by id."""

    ports: dict[str, Port]
    nets: dict[str, Network]
    subnets: dict[str, Subnet]

    @classmethod
    def of(cls, snap: CloudSnapshot) -> _Lookup:
        return cls(
            ports={p.id: p for p in snap.ports},
            nets={n.id: n for n in snap.networks},
            subnets={s.id: s for n in snap.networks for s in n.subnets},
        )


def _router_legs(
    router: Router, look: _Lookup, gw_port: Port | None
) -> dict[str, tuple[Port, Network]]:
    """The legs a router wants: link name -> (port, network), gateway leg first."""
    legs: dict[str, tuple[Port, Network]] = {}
    if gw_port and gw_port.network_id in look.nets:
        legs[names.router_gw_link(gw_port.id)] = (gw_port, look.nets[gw_port.network_id])
    for pid in router.interface_port_ids:
        port = look.ports.get(pid)
        if port and port.network_id in look.nets:
            legs[names.router_if_link(pid)] = (port, look.nets[port.network_id])
    return legs


def _router_reaches(router: Router, look: _Lookup, address: str) -> bool:
    addr = ipaddress.ip_address(address)
    for pid in router.interface_port_ids:
        for f in look.ports[pid].fixed_ips if pid in look.ports else []:
            sub = look.subnets.get(f.subnet_id)
            if sub and addr in ipaddress.ip_network(sub.cidr, strict=False):
                return True
    return False


def _router_handles(router: Router, look: _Lookup, gw_port: Port, fip: FloatingIP) -> bool:
    """The floating IP is this router's: bound to it, or unbound on its external network
    with a fixed IP in one of its subnets."""
    if not (fip.port_id and fip.fixed_ip_address):
        return False
    if fip.router_id == router.id:
        return True
    return (
        fip.router_id is None
        and fip.floating_network_id == gw_port.network_id
        and _router_reaches(router, look, fip.fixed_ip_address)
    )


def _router_routes(
    router: Router, look: _Lookup, gw_port: Port | None
) -> tuple[str | None, dict[str, str]]:
    """(the gateway leg's address, routes: default via the external gateway + extra routes)."""
    want: dict[str, str] = {}
    gw_ip = None
    for f in gw_port.fixed_ips if gw_port else []:
        sub = look.subnets.get(f.subnet_id)
        if sub:
            gw_ip = f.ip_address
            if sub.gateway_ip:
                want["default"] = sub.gateway_ip
            break
    for route in router.routes:
        dst = str(ipaddress.ip_network(route.destination, strict=False))
        want["default" if dst == "0.0.0.0/0" else dst] = route.nexthop
    return gw_ip, want
