"""The API process: ``python -m localcloud.api_main --state-dir DIR`` (``localcloud up``
starts it).

Reads ``DIR/localcloud.yaml``, opens each cloud's SQLite store, seeds new clouds, writes
``DIR/clouds.yaml`` and serves every cloud on 127.0.0.1:<port>. Secrets are never passed on
the command line; they live in the state directory (mode 0600).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import secrets
import sys
from pathlib import Path

import uvicorn

from localcloud.app import create_app
from localcloud.backend import Backend, NullBackend
from localcloud.clientconf import write_clouds_yaml, write_private
from localcloud.config import LocalcloudConfig, load_config
from localcloud.faults import FaultInjector, faults_from_env
from localcloud.runtime import Cloud, Runtime
from localcloud.seed import seed_cloud
from localcloud.store import Store

BACKEND_FILE = "backend"


def dataplane_wanted() -> bool:
    flag = os.environ.get("LOCALCLOUD_DATAPLANE", "").strip().lower()
    if flag in ("0", "off", "false", "no"):
        return False
    return importlib.util.find_spec("localcloud.dataplane") is not None


def make_backend(state_dir: Path, kind: str) -> Backend:
    """`kind` is "dataplane" (part 2: real namespaces) or "null" (API objects only)."""
    if kind == "dataplane":
        from localcloud.dataplane import make_backend as make_dataplane  # type: ignore

        return make_dataplane(Path(state_dir))
    return NullBackend()


def _secret(path: Path, make: bytes) -> bytes:
    if not path.exists():
        write_private(path, make.hex())
    return bytes.fromhex(path.read_text().strip())


def build_runtime(state_dir: Path, config: LocalcloudConfig, backend: Backend) -> Runtime:
    state_dir = Path(state_dir)
    key = _secret(state_dir / "secret.key", secrets.token_bytes(32))
    admin = _secret(state_dir / "admin.token", secrets.token_bytes(24)).hex()
    runtime = Runtime(
        state_dir=state_dir,
        port=config.port,
        backend=backend,
        token_key=key,
        admin_token=admin,
        faults=FaultInjector(state_dir),
    )
    for cc in config.clouds:
        store = Store(state_dir / f"{cc.name}.db")
        cloud = Cloud(cc, store, f"http://127.0.0.1:{config.port}/{cc.name}", runtime)
        seed_cloud(cloud)
        runtime.clouds[cc.name] = cloud
    write_clouds_yaml(runtime)
    return runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.api_main")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    os.umask(0o077)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    state_dir: Path = args.state_dir.resolve()
    config = load_config(state_dir)
    if config is None or not config.clouds:
        print(f"no clouds configured in {state_dir}: run `localcloud up`", file=sys.stderr)
        return 2
    faults_from_env(state_dir)
    kind = "dataplane" if dataplane_wanted() else "null"
    backend = make_backend(state_dir, kind)
    (state_dir / BACKEND_FILE).write_text(kind + "\n")
    runtime = build_runtime(state_dir, config, backend)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime),
            host="127.0.0.1",
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
