"""An emulated server: a network namespace plus a holder process that owns private mount,
UTS, IPC and PID namespaces (PID 1 of the server), and sshd started inside at ACTIVE.

The holder makes the server look like its own machine: hostname = server name (its own UTS
namespace); tmpfs on /run (so /run/wireguard, /run/sshd and /run/munge are private), overlays
on /etc, /var, /opt and /usr/local (private, writable, gone on delete), tmpfs on /root,
/home, /tmp, /etc/wireguard and /srv (the data that lives at a site), a fresh /proc and /sys.
Slurm and munge get empty private state (tmpfs on /etc/slurm, /etc/munge, /var/lib/munge,
/var/log/munge, /var/spool/slurmd, /var/spool/slurmctld and /var/log/slurm), so no server
sees the host's munge key or another server's, and /sys/fs/cgroup mirrors the host's cgroup
mounts (slurmd 22.05 refuses to start without them). Killing PID 1 with SIGKILL ends every
process of the server at once.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from localcloud.dataplane import guest
from localcloud.dataplane.cloudconfig import CloudInit
from localcloud.dataplane.hostkeys import HostKey
from localcloud.dataplane.netns import NETNS_DIR, SAFE_PATH, DataplaneError, run

# The guest agent is passed as source (-c): the host's venv may live under /root, which is a
# private tmpfs inside servers. Ubuntu images have python3 too.
GUEST_SOURCE = Path(__file__).with_name("guest.py").read_text()
GUEST_PYTHON = next(
    (
        c
        for c in ("/usr/bin/python3", os.path.realpath(sys.executable))
        if os.path.exists(c) and not c.startswith(("/root/", "/home/", "/tmp/"))  # noqa: S108
    ),
    "/usr/bin/python3",
)

# Runs as PID 1 of the new PID namespace, inside the new mount/UTS namespaces.
HOLDER_SCRIPT = r"""
set -e
# The API process runs under umask 077 (its state files are secrets); a server is an Ubuntu
# machine with its usual 022, and directories that must stay private get explicit modes.
umask 022
hostname "$LC_HOSTNAME"
mount -t sysfs lcsys /sys
# The fresh sysfs has an empty /sys/fs/cgroup: mount the host's hierarchies again (best
# effort: a server without them still boots, only slurmd would not start).
for m in $LC_CGROUPS; do
  IFS='|'; set -- $m; unset IFS
  mkdir -p "$1" && mount -t "$2" -o "$3" "$4" "$1" || echo "cgroup mount $1 failed" >&2
done
mount -t tmpfs -o mode=755,size=64m lcrun /run
mkdir -p /run/sshd /run/lock /run/lc
mkdir -m 700 /run/wireguard
mount -t tmpfs -o mode=700,size=512m lcovl /run/lc
for d in etc var opt usr/local; do
  u=/run/lc/$(echo $d | tr / _)
  mkdir -p $u.up $u.work
  # the overlay's root takes the upper directory's mode and owner: those of the real /$d
  chmod --reference=/$d $u.up
  chown --reference=/$d $u.up
  mount -t overlay lcov -o lowerdir=/$d,upperdir=$u.up,workdir=$u.work /$d
done
mount -t tmpfs -o mode=700,size=16m lcwg /etc/wireguard
mount -t tmpfs -o mode=700,size=64m lcroot /root
mount -t tmpfs -o mode=755,size=64m lchome /home
mount -t tmpfs -o mode=1777,size=256m lctmp /tmp
mount -t tmpfs -o mode=755,size=512m lcsrv /srv
# Slurm's and munge's state starts empty (the guest agent sets owners and modes)
for d in $LC_STATE_DIRS; do
  mkdir -p $d
  mount -t tmpfs -o mode=700,size=64m lcstate $d
done
"$LC_PYTHON" -I -S -c "$LC_GUEST" prepare
echo ready
cd /
exec /bin/bash -c 'trap "" TERM INT HUP; while :; do sleep 86400 & wait $!; done' \
  </dev/null >/dev/null 2>&1
"""

# Slurm's and munge's private directories, each an empty tmpfs (owners and modes: guest.py);
# /srv has its own, larger one.
STATE_DIRS = tuple(d for d in guest.STATE_DIRS if d != "/srv")
CGROUP_ROOT = "/sys/fs/cgroup"


@functools.cache
def cgroup_mounts() -> str:
    """The host's mounts on /sys/fs/cgroup, as `target|fstype|options|source` words for the
    holder, parents first. A v1 hierarchy is mounted with its own controllers (mounting an
    existing combination again is allowed; another one is not, e.g. `cpu,cpuacct` when the
    host has them apart); a named one without controllers (name=systemd) needs `none`."""
    words = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        target = fields.split()[4]
        fstype, _source, options = [*tail.split(), "", "", ""][:3]
        if not (target == CGROUP_ROOT or target.startswith(CGROUP_ROOT + "/")):
            continue
        if fstype == "tmpfs":
            words.append(f"{target}|tmpfs|mode=755,size=1m|lccgroup")
        elif fstype == "cgroup2":
            words.append(f"{target}|cgroup2|rw|cgroup2")
        elif fstype == "cgroup":
            words.append(f"{target}|cgroup|{_v1_options(options)}|cgroup")
    return " ".join(words)


def _v1_options(options: str) -> str:
    keep = [o for o in options.split(",") if o in _controllers() or o.startswith("name=")]
    if not any(o in _controllers() for o in keep):
        keep.insert(0, "none")
    return ",".join(keep)


@functools.cache
def _controllers() -> frozenset[str]:
    lines = Path("/proc/cgroups").read_text().splitlines()[1:]
    return frozenset(line.split()[0] for line in lines if line.strip())


NSENTER_ALL = ("-m", "-u", "-i", "-n", "-p", "-r", "-w")


def start_holder(ns: str, hostname: str, host_keys: list[HostKey], log_path: Path) -> int:
    """Start the server's PID 1 inside netns `ns`; return its PID (as seen from the host)."""
    env = {
        "PATH": SAFE_PATH,
        "LC_ALL": "C",
        "LC_HOSTNAME": hostname,
        "LC_PYTHON": GUEST_PYTHON,
        "LC_GUEST": GUEST_SOURCE,
        "LC_HOLDER": HOLDER_SCRIPT,
        "LC_CGROUPS": cgroup_mounts(),
        "LC_STATE_DIRS": " ".join(STATE_DIRS),
    }
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = subprocess.Popen(
            [
                "nsenter", f"--net={NETNS_DIR / ns}", "--",
                "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child",
                "--mount-proc", "--propagation", "private", "--",
                "/bin/sh", "-c", 'eval "$LC_HOLDER"',
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,
            close_fds=True,
        )  # fmt: skip
    finally:
        os.close(log)
    assert proc.stdin is not None and proc.stdout is not None
    payload = {"hostname": hostname, "host_keys": [k.model_dump() for k in host_keys]}
    proc.stdin.write(json.dumps(payload).encode())
    proc.stdin.close()
    line = proc.stdout.readline()
    proc.stdout.close()
    if line.strip() != b"ready":
        proc.kill()
        proc.wait()
        raise DataplaneError(f"server {hostname}: holder failed: {log_path.read_text()[-500:]}")
    _ADOPTED.append(proc)
    # The unshare process forks PID 1 of the new namespace: that child is the server.
    for _ in range(200):
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except FileNotFoundError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.005)
    raise DataplaneError(f"server {hostname}: cannot find the holder's PID 1")


# Popen objects of holders started by this process, polled so they do not stay zombies.
_ADOPTED: list[subprocess.Popen] = []


def reap() -> None:
    _ADOPTED[:] = [p for p in _ADOPTED if p.poll() is None]


def enter_argv(pid: int) -> list[str]:
    return ["nsenter", "-t", str(pid), *NSENTER_ALL, "--"]


def guest_env() -> dict[str, str]:
    return {
        "PATH": SAFE_PATH,
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "LANG": "C.UTF-8",
    }


def boot(pid: int, hostname: str, authorized_keys: list[str], cloud_init: CloudInit) -> str:
    """ACTIVE: authorized keys, write_files, sshd, runcmd; returns cloud-init's warnings."""
    payload = {
        "authorized_keys": [*authorized_keys, *cloud_init.ssh_authorized_keys],
        "write_files": [
            {
                "path": f.path,
                "content_b64": base64.b64encode(f.content).decode(),
                "permissions": f.permissions,
                "owner": f.owner,
                "append": f.append,
            }
            for f in cloud_init.write_files
        ],
        "runcmd": cloud_init.runcmd,
    }
    proc = subprocess.run(
        [*enter_argv(pid), GUEST_PYTHON, "-I", "-S", "-c", GUEST_SOURCE, "boot"],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=guest_env(),
        timeout=30,
    )
    if proc.returncode != 0:
        raise DataplaneError(f"server {hostname}: boot failed: {proc.stderr.strip()[-800:]}")
    return proc.stderr


def exec_in(
    pid: int, argv: list[str], *, input: str | None = None, timeout: float | None = 60
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as root inside the server (the operator's console)."""
    return subprocess.run(
        [*enter_argv(pid), *argv],
        input=input,
        capture_output=True,
        text=True,
        env=guest_env(),
        timeout=timeout,
    )


def wait_listening(ns: str, port: int = 22, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(["nsenter", f"--net={NETNS_DIR / ns}", "--", "ss", "-Hltn", f"sport = :{port}"])
        if out.stdout.strip():
            return
        time.sleep(0.02)
    raise DataplaneError(f"sshd in {ns} is not listening on port {port}")
