"""Benchmark: localcloud API latency without injected faults (issue 4: both well under 20 ms).

Starts a private localcloud (API-only backend) on a free loopback port, then measures over
real HTTP with a keep-alive session: the median of a Keystone token issue, and of a Nova
server create + show round trip. Prints the figures and their ratio to the 20 ms bound.

    .venv/bin/python bench/localcloud_api.py [--rounds N]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import requests

from localcloud import control as server
from localcloud.clientconf import cloud_entry

BOUND_MS = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.9)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    big = {"instances": -1, "cores": -1, "ram": -1, "port": -1}
    with tempfile.TemporaryDirectory(prefix="lc-bench-") as tmp:
        state = Path(tmp)
        handle = server.start(
            state, clouds=["bench"], port=_free_port(), dataplane=False,
            cloud_options={"bench": {"quotas": big}},
        )  # fmt: skip
        try:
            auth = cloud_entry(state, "bench")["auth"]
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {"name": auth["username"], "domain": {"name": "Default"},
                                     "password": auth["password"]},
                        },
                    },
                    "scope": {"project": {"name": auth["project_name"],
                                          "domain": {"name": "Default"}}},
                }
            }  # fmt: skip
            http = requests.Session()
            token_url = auth["auth_url"] + "/auth/tokens"
            for _ in range(10):  # warm-up
                http.post(token_url, json=body, timeout=10)
            token_times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                resp = http.post(token_url, json=body, timeout=10)
                token_times.append(time.perf_counter() - t0)
                assert resp.status_code == 201
            token = resp.headers["X-Subject-Token"]
            hdr = {"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.96"}

            net_url = handle.clouds["bench"].network + "/v2.0"
            net = http.post(
                f"{net_url}/networks", json={"network": {"name": "bench"}}, headers=hdr, timeout=10
            ).json()["network"]
            http.post(
                f"{net_url}/subnets",
                json={"subnet": {"network_id": net["id"], "cidr": "10.50.0.0/16", "ip_version": 4}},
                headers=hdr,
                timeout=10,
            )
            compute = handle.clouds["bench"].compute
            image = http.get(
                handle.clouds["bench"].image + "/v2/images?name=ubuntu-22.04",
                headers=hdr,
                timeout=10,
            ).json()["images"][0]["id"]
            flavor = next(
                f["id"]
                for f in http.get(compute + "/flavors", headers=hdr, timeout=10).json()["flavors"]
                if f["name"] == "de.NBI tiny"
            )
            spec = {
                "server": {
                    "name": "b",
                    "imageRef": image,
                    "flavorRef": flavor,
                    "networks": [{"uuid": net["id"]}],
                }
            }
            server_times = []
            rounds = min(args.rounds, 200)
            for i in range(rounds + 5):
                spec["server"]["name"] = f"bench-{i}"
                t0 = time.perf_counter()
                created = http.post(compute + "/servers", json=spec, headers=hdr, timeout=10)
                shown = http.get(
                    f"{compute}/servers/{created.json()['server']['id']}", headers=hdr, timeout=10
                )
                elapsed = time.perf_counter() - t0
                assert created.status_code == 202 and shown.status_code == 200
                if i >= 5:  # warm-up rounds excluded
                    server_times.append(elapsed)
        finally:
            server.down(state)
    for label, samples in (("token issue", token_times), ("server create+show", server_times)):
        median, p90 = _ms(samples)
        print(
            f"{label:<20} median {median:6.2f} ms  p90 {p90:6.2f} ms  (n={len(samples)})  "
            f"ratio to {BOUND_MS:.0f} ms bound: {median / BOUND_MS:.2f}"
        )


if __name__ == "__main__":
    main()
