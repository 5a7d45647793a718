"""The ``clouds.yaml`` localcloud writes for its clouds, and helpers to read it back.

Two entries per cloud: ``<cloud>`` (password auth) and ``<cloud>-appcred`` (application
credential). The file holds secrets, so it is written atomically with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from localcloud.runtime import Runtime

CLOUDS_YAML = "clouds.yaml"


def render_clouds(runtime: Runtime) -> dict[str, Any]:
    clouds: dict[str, Any] = {}
    for name, cloud in runtime.clouds.items():
        common = {
            "region_name": cloud.config.region,
            "interface": "public",
            "identity_api_version": 3,
        }
        meta = cloud.store.meta
        clouds[name] = {
            "auth_type": "password",
            "auth": {
                "auth_url": cloud.endpoint("identity"),
                "username": meta["user"]["name"],
                "password": meta["user"]["password"],
                "project_name": meta["project"]["name"],
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            **common,
        }
        clouds[f"{name}-appcred"] = {
            "auth_type": "v3applicationcredential",
            "auth": {
                "auth_url": cloud.endpoint("identity"),
                "application_credential_id": meta["appcred"]["id"],
                "application_credential_secret": meta["appcred"]["secret"],
            },
            **common,
        }
    return {"clouds": clouds}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_clouds_yaml(runtime: Runtime) -> Path:
    path = Path(runtime.state_dir) / CLOUDS_YAML
    write_private(path, yaml.safe_dump(render_clouds(runtime), sort_keys=False))
    return path


def load_clouds_yaml(state_dir: Path) -> dict[str, Any]:
    path = Path(state_dir) / CLOUDS_YAML
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run `localcloud up --state-dir {state_dir}`"
        )
    return yaml.safe_load(path.read_text())["clouds"]


def cloud_entry(state_dir: Path, name: str) -> dict[str, Any]:
    """One clouds.yaml entry, e.g. for ``openstack.connect(**entry)``-style use."""
    clouds = load_clouds_yaml(state_dir)
    if name not in clouds:
        raise KeyError(f"cloud {name!r} is not in {state_dir}/clouds.yaml (have: {sorted(clouds)})")
    return clouds[name]


def connect(state_dir: Path, name: str) -> Any:
    """An openstacksdk Connection to one of the state directory's clouds (no env needed)."""
    import openstack.config
    import openstack.connection

    config = openstack.config.OpenStackConfig(
        config_files=[str(Path(state_dir) / CLOUDS_YAML)], vendor_files=[]
    )
    return openstack.connection.Connection(config=config.get_one(cloud=name))
