"""The scheduler's pure parts: partition options checked early, the managed Slurm file and the
name entries computed from the registry, the node-side scripts free of key material."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from pydantic import ValidationError

from hybridgrid import desired
from hybridgrid.model import RemoteSite
from hybridgrid.registry_data import HomeEntry, RegistryData, SiteEntry
from hybridgrid.scheduler import (
    INCLUDE_LINE,
    PartitionOptions,
    base_conf,
    hosts_block,
    managed_conf,
)
from hybridgrid.slurm import commands


def _data() -> RegistryData:
    home = HomeEntry(
        name="bielefeld",
        cloud="bielefeld",
        subnet=IPv4Network("192.168.66.0/24"),
        wg_address=IPv4Address("10.0.0.1"),
        master="hg-bielefeld-master",
        scheduler="slurm",
        node_addresses={
            "hg-bielefeld-master": IPv4Address("192.168.66.10"),
            "hg-bielefeld-worker-1": IPv4Address("192.168.66.11"),
        },
    )
    site = SiteEntry(
        cloud="giessen",
        subnet=IPv4Network("192.168.77.0/24"),
        wg_address=IPv4Address("10.0.0.2"),
        spec=RemoteSite(name="giessen", partition={"max_time": "1-00:00:00", "default": True}),
        fixed_ips={"vpn": IPv4Address("192.168.77.3"), "worker-1": IPv4Address("192.168.77.4")},
    )
    return RegistryData(home=home, sites={"giessen": site})


def test_a_bad_time_limit_names_the_field_and_the_fix():
    with pytest.raises(ValidationError) as err:
        RemoteSite(name="giessen", partition={"max_time": "soon"})
    text = str(err.value)
    assert "partition.max_time" in text and "D-HH:MM:SS" in text


def test_partition_options_accept_slurm_time_forms():
    for v in ("60", "30:00", "1-00:00:00", "unlimited"):
        PartitionOptions(max_time=v)
    assert PartitionOptions(max_time="unlimited").max_time == "UNLIMITED"


def test_the_managed_file_has_one_partition_per_site_with_its_options():
    conf = managed_conf(desired.slurm_partitions(_data()))
    assert "NodeSet=giessen Feature=giessen\n" in conf
    assert "PartitionName=giessen Nodes=giessen MaxTime=1-00:00:00 Default=YES State=UP" in conf


def test_the_created_masters_slurm_conf_is_configless_and_includes_the_managed_file():
    conf = base_conf("bielefeld", "hg-bielefeld-master", IPv4Address("192.168.66.10"), "bielefeld")
    assert "SlurmctldHost=hg-bielefeld-master(192.168.66.10)" in conf
    assert "SlurmctldParameters=enable_configless" in conf and "MaxNodeCount=" in conf
    assert "PartitionName=bielefeld Nodes=bielefeld" in conf
    assert conf.rstrip().endswith(INCLUDE_LINE)


def test_name_entries_master_sees_every_worker_a_site_worker_the_master_and_its_peers():
    data = _data()
    on_master = hosts_block(desired.slurm_hosts(data))
    assert "192.168.77.4 hg-giessen-worker-1" in on_master
    assert "192.168.66.11 hg-bielefeld-worker-1" in on_master
    on_site = hosts_block(desired.slurm_hosts(data, "giessen"))
    assert "192.168.66.10 hg-bielefeld-master" in on_site
    assert "hg-bielefeld-worker-1" not in on_site
    assert "192.168.77.3" not in on_site  # the VPN node is no Slurm node


def test_the_munge_key_travels_only_on_stdin_and_stdout():
    # the scripts name the key's path, never its content: nothing to leak in argv
    assert commands.read_munge_key_command() == "base64 -w0 /etc/munge/munge.key"
    script = commands.install_munge_key_command()
    assert 'base64 -d > "$tmp"' in script and "chmod 0400" in script
