"""Runs INSIDE an emulated server (its mount/UTS/PID/net namespaces): stdlib only.

``python -I -S guest.py prepare`` (at BUILD) makes the server look like an Ubuntu cloud
image: user ``ubuntu`` with passwordless sudo, hostname, SSH host keys and sshd config, all in
the server's private /etc overlay, and the owners and modes of Slurm's and munge's private
directories. ``guest.py boot`` (at ACTIVE) installs authorized keys,
writes user-data files, starts sshd and launches runcmd. Input is JSON on stdin, so host
private keys never appear in argv.
"""

import base64
import json
import os
import subprocess
import sys

UID = 1000

SSHD_CONFIG = """\
# localcloud: this server's own sshd
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ecdsa_key
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
UseDNS no
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def write(path, data, mode=0o644, uid=0, gid=0, append=False):
    if isinstance(data, str):
        data = data.encode()
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | os.O_NOFOLLOW
    fd = os.open(path, flags, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def edit_db(path, drop, extra, member_of=()):
    """Rewrite an /etc/passwd-like file: drop entries, append lines, add ubuntu to groups."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if ln and not drop(ln.split(":"))]
    out = []
    for ln in lines:
        parts = ln.split(":")
        if parts[0] in member_of:
            members = [m for m in parts[-1].split(",") if m]
            parts[-1] = ",".join([*members, "ubuntu"])
        out.append(":".join(parts))
    st = os.stat(path)
    write(path, "\n".join(out + extra) + "\n", st.st_mode & 0o7777, st.st_uid, st.st_gid)


def prepare(d):
    removed = set()

    def drop_user(p):
        if p[0] == "ubuntu" or (len(p) > 2 and p[2] == str(UID)):
            removed.add(p[0])
            return True
        return False

    edit_db("/etc/passwd", drop_user, [f"ubuntu:x:{UID}:{UID}:Ubuntu:/home/ubuntu:/bin/bash"])
    edit_db(
        "/etc/group",
        lambda p: p[0] in removed or p[0] == "ubuntu" or p[2] == str(UID),
        [f"ubuntu:x:{UID}:"],
        member_of=("sudo", "adm"),
    )
    edit_db("/etc/shadow", lambda p: p[0] in removed, ["ubuntu:*:20000:0:99999:7:::"])
    edit_db("/etc/gshadow", lambda p: p[0] == "ubuntu", ["ubuntu:!::"], member_of=("sudo", "adm"))
    # root must not be locked ("!"), or sshd refuses its public keys without PAM
    with open("/etc/shadow") as f:
        shadow = f.read().splitlines()
    shadow = ["root:*:" + ln.split(":", 2)[2] if ln.startswith("root:!") else ln for ln in shadow]
    write("/etc/shadow", "\n".join(shadow) + "\n", 0o640, 0, 42)
    os.makedirs("/etc/sudoers.d", exist_ok=True)
    write("/etc/sudoers.d/90-cloud-init-users", "ubuntu ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    name = d["hostname"]
    write("/etc/hostname", name + "\n")
    write("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
    for home, uid, mode in (("/home/ubuntu", UID, 0o750), ("/root", 0, 0o700)):
        os.makedirs(home + "/.ssh", exist_ok=True)
        for p, m in ((home, mode), (home + "/.ssh", 0o700)):
            os.chmod(p, m)
            os.chown(p, uid, uid)
    for fn in os.listdir("/etc/ssh"):
        if fn.startswith("ssh_host_"):
            os.unlink("/etc/ssh/" + fn)
    for key in d["host_keys"]:
        base = f"/etc/ssh/ssh_host_{key['kind']}_key"
        write(base, key["private"], 0o600)
        write(base + ".pub", f"{key['public']} root@{name}\n", 0o644)
    write("/etc/ssh/sshd_config", SSHD_CONFIG)
    own_state_dirs()
    for fn in ("/etc/ssh/sshd_config.d",):
        if os.path.isdir(fn):
            for sub in os.listdir(fn):
                os.unlink(os.path.join(fn, sub))


# Slurm's and munge's private directories (tmpfs, made by the holder): owner, mode. munged
# refuses a key directory or log directory that others can read or write, and wants its
# socket directory /run/munge traversable (clients connect to it).
STATE_DIRS = {
    "/etc/munge": ("munge", 0o700),
    "/var/lib/munge": ("munge", 0o711),
    "/var/log/munge": ("munge", 0o700),
    "/run/munge": ("munge", 0o755),
    "/etc/slurm": ("root", 0o755),
    "/var/spool/slurmd": ("root", 0o755),
    "/var/spool/slurmctld": ("slurm", 0o755),
    "/var/log/slurm": ("slurm", 0o755),
    "/srv": ("root", 0o755),
}


def own_state_dirs():
    """Owners and modes of STATE_DIRS; a user the image lacks (no munge installed) is root."""
    import pwd

    for path, (user, mode) in STATE_DIRS.items():
        try:
            entry = pwd.getpwnam(user)
            uid, gid = entry.pw_uid, entry.pw_gid
        except KeyError:
            uid, gid = 0, 0
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        os.chown(path, uid, gid)


def owner_ids(owner):
    import grp
    import pwd

    user, _, group = owner.partition(":")
    uid = pwd.getpwnam(user).pw_uid if user else 0
    gid = grp.getgrnam(group).gr_gid if group else pwd.getpwuid(uid).pw_gid
    return uid, gid


def boot(d):
    keys = "".join(k.strip() + "\n" for k in d["authorized_keys"])
    write("/root/.ssh/authorized_keys", keys, 0o600)
    write("/home/ubuntu/.ssh/authorized_keys", keys, 0o600, UID, UID)
    for f in d["write_files"]:
        try:  # as cloud-init: a bad entry is reported, the boot goes on
            uid, gid = owner_ids(f["owner"])
            content = base64.b64decode(f["content_b64"])
            write(f["path"], content, f["permissions"], uid, gid, append=f["append"])
        except (OSError, KeyError) as exc:
            print(f"cloud-init: write_files {f['path']}: {exc}", file=sys.stderr)
    if not os.path.exists("/run/sshd.pid"):
        subprocess.run(
            ["/usr/sbin/sshd"],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    if d["runcmd"]:
        first = d["runcmd"][0]
        script = first if first.startswith("#!") else "#!/bin/sh\n" + "\n".join(d["runcmd"]) + "\n"
        path = "/var/lib/cloud/instance/scripts/runcmd"
        write(path, script, 0o700)
        log = os.open(
            "/var/log/cloud-init-output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
        )
        subprocess.Popen(
            [path],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd="/root",
        )


if __name__ == "__main__":
    # Ubuntu's umask, whatever the host's: files made here without an explicit mode (and
    # by runcmd, which inherits it) are as on a cloud image; private ones set their own.
    os.umask(0o022)
    data = json.loads(sys.stdin.read())
    {"prepare": prepare, "boot": boot}[sys.argv[1]](data)
