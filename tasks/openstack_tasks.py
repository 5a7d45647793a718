"""Prefect tasks over `tasks.openstack` and `tasks.preflight`: thin, retrying only what is
transient (the policy in `tasks.retry`), taking the credentials block's *name* and typed
arguments, returning typed records (ids and addresses, never a secret).

A permanent API error (auth, quota, validation, not found) fails the task at once with one
sentence naming the cause and the fix (`friendly_error`); the original stays as `__cause__`.
Results are never cached: a rerun must look at the cloud again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import keystoneauth1.exceptions as ksa
import openstack.exceptions as osx
from prefect import task

from hybridgrid.tasks import openstack as ops
from hybridgrid.tasks.clouds import connection
from hybridgrid.tasks.preflight import PreflightError, PreflightReport, PreflightRequest, preflight
from hybridgrid.tasks.retry import TRANSIENT, PermanentError, friendly_error, is_transient

P = ParamSpec("P")
T = TypeVar("T")


class CloudError(PermanentError):
    """A permanent OpenStack error, said in one sentence with its fix."""


def _explained(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn permanent SDK/keystoneauth errors into a CloudError naming cause and fix."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (osx.SDKException, ksa.ClientException) as exc:
            if is_transient(exc):
                raise
            cloud = kwargs.get("cloud", args[0] if args else None)
            raise CloudError(friendly_error(exc, credentials_block=str(cloud))) from exc

    return wrapper


def _task(name: str):
    """`@task` with the retry policy, no caching and a run name saying what it does."""

    def deco(fn: Callable[P, T]) -> Callable[P, T]:
        return task(
            name=fn.__name__,
            task_run_name=name,
            **TRANSIENT,
        )(_explained(fn))

    return deco


# ---- network, subnet, router -------------------------------------------------------------


@_task("ensure network {name} on {cloud}")
def ensure_network(cloud: str, site: str, name: str) -> ops.NetworkRecord:
    return ops.ensure_network(connection(cloud), site, name)


@_task("ensure subnet {name} {cidr} on {cloud}")
def ensure_subnet(
    cloud: str,
    site: str,
    name: str,
    network_id: str,
    cidr: str,
    dns_nameservers: list[str] | None = None,
) -> ops.SubnetRecord:
    return ops.ensure_subnet(connection(cloud), site, name, network_id, cidr, dns_nameservers)


@_task("ensure router {name} on {cloud}")
def ensure_router(
    cloud: str, site: str, name: str, external_network_id: str, subnet_id: str
) -> ops.RouterRecord:
    return ops.ensure_router(connection(cloud), site, name, external_network_id, subnet_id)


@_task("ensure routes on router {router_id} on {cloud}")
def ensure_router_routes(cloud: str, router_id: str, routes: list[ops.Route]) -> ops.RoutesRecord:
    return ops.ensure_router_routes(connection(cloud), router_id, routes)


@_task("remove routes from router {router_id} on {cloud}")
def remove_router_routes(cloud: str, router_id: str, routes: list[ops.Route]) -> ops.RoutesRecord:
    return ops.remove_router_routes(connection(cloud), router_id, routes)


# ---- security groups -----------------------------------------------------------------------


@_task("ensure security group {name} on {cloud}")
def ensure_security_group(cloud: str, site: str, name: str) -> ops.SecurityGroupRecord:
    return ops.ensure_security_group(connection(cloud), site, name)


@_task("ensure rules of {owner_site} in group {group_id} on {cloud}")
def ensure_rules(
    cloud: str, group_id: str, owner_site: str, rules: list[ops.RuleSpec]
) -> list[ops.RuleRecord]:
    return ops.ensure_rules(connection(cloud), group_id, owner_site, rules)


@_task("remove rules of {owner_site} from group {group_id} on {cloud}")
def remove_rules(
    cloud: str, group_id: str, owner_site: str, keep: list[ops.RuleSpec] | None = None
) -> list[ops.RuleRecord]:
    return ops.remove_rules(connection(cloud), group_id, owner_site, keep)


# ---- key pairs and servers -----------------------------------------------------------------


@_task("ensure key pair {name} on {cloud}")
def ensure_keypair(cloud: str, name: str, public_key: str) -> ops.KeypairRecord:
    return ops.ensure_keypair(connection(cloud), name, public_key)


@_task("remove key pair {name} on {cloud}")
def remove_keypair(cloud: str, name: str, public_key: str) -> ops.KeypairRecord:
    return ops.remove_keypair(connection(cloud), name, public_key)


@_task("ensure server {spec.name} on {cloud}")
def ensure_server(
    cloud: str,
    spec: ops.ServerSpec,
    timeout: float = 600,
    poll: float = 1.0,
    max_replacements: int = 2,
) -> ops.ServerRecord:
    return ops.ensure_server(
        connection(cloud), spec, timeout=timeout, poll=poll, max_replacements=max_replacements
    )


@_task("console log of server {server_id} on {cloud}")
def console_output(cloud: str, server_id: str) -> str:
    return ops.console_output(connection(cloud), server_id)


@_task("look up server {name} on {cloud}")
def lookup_server(cloud: str, name: str, network: str | None = None) -> ops.ServerInfo:
    return ops.lookup_server(connection(cloud), name, network)


# ---- floating IPs and ports ----------------------------------------------------------------


@_task("ensure floating IP on port {port_id} on {cloud}")
def ensure_floating_ip(
    cloud: str, site: str, port_id: str, external_network_id: str
) -> ops.FloatingIPRecord:
    return ops.ensure_floating_ip(connection(cloud), site, port_id, external_network_id)


@_task("ensure allowed-address pairs on port {port_id} on {cloud}")
def ensure_allowed_address_pairs(cloud: str, port_id: str, cidrs: list[str]) -> ops.PortRecord:
    return ops.ensure_allowed_address_pairs(connection(cloud), port_id, cidrs)


@_task("remove allowed-address pairs from port {port_id} on {cloud}")
def remove_allowed_address_pairs(cloud: str, port_id: str, cidrs: list[str]) -> ops.PortRecord:
    return ops.remove_allowed_address_pairs(connection(cloud), port_id, cidrs)


@_task("ensure security groups on port {port_id} on {cloud}")
def ensure_port_security_groups(cloud: str, port_id: str, group_ids: list[str]) -> ops.PortRecord:
    return ops.ensure_port_security_groups(connection(cloud), port_id, group_ids)


# ---- removal and pre-flight ----------------------------------------------------------------


@_task("remove resources of site {site} on {cloud}")
def remove_site_resources(cloud: str, site: str, timeout: float = 300) -> list[ops.Record]:
    return ops.remove_site_resources(connection(cloud), site, timeout)


@_task("pre-flight on {cloud}")
def preflight_cloud(cloud: str, request: PreflightRequest) -> PreflightReport:
    """All problems of the cloud in one PreflightError (permanent), or the report."""
    report = preflight(connection(cloud), request.model_copy(update={"cloud": cloud}))
    if not report.ok:
        raise PreflightError(report)
    return report
