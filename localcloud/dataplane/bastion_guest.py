"""Runs INSIDE the bastion host (its own mount/UTS/PID/net namespaces): stdlib only.

``python -I -S -c <this source>`` with JSON on stdin: the source of the servers' guest agent
(guest.py, whose helpers write files exactly as in servers), the login user and uid, its
authorized keys and sshd's config. Makes the user, writes its keys and sshd's config, and
starts sshd unless it already runs. Idempotent: every ``localcloud bastion up`` runs it.
No private key passes through here (the host key was written by guest.py ``prepare``).
"""

import json
import os
import subprocess
import sys


def load_guest(source):
    """guest.py's functions without running its ``__main__`` dispatch."""
    namespace = {"__name__": "localcloud_guest"}
    exec(compile(source, "guest.py", "exec"), namespace)  # noqa: S102 - our own module's source
    return namespace


def add_user(guest, user, uid):
    def same(parts):
        return parts[0] == user or (len(parts) > 2 and parts[2] == str(uid))

    home = "/home/" + user
    guest["edit_db"]("/etc/passwd", same, [f"{user}:x:{uid}:{uid}:bastion login:{home}:/bin/sh"])
    guest["edit_db"]("/etc/group", same, [f"{user}:x:{uid}:"])
    # "*" (no password) rather than "!" (locked): without PAM, sshd refuses locked accounts
    guest["edit_db"]("/etc/shadow", lambda p: p[0] == user, [f"{user}:*:20000:0:99999:7:::"])
    for path, mode in ((home, 0o750), (home + "/.ssh", 0o700)):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        os.chown(path, uid, uid)
    return home


def sshd_running():
    try:
        with open("/run/sshd.pid") as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "sshd"
    except (OSError, ValueError):
        return False


def main():
    d = json.loads(sys.stdin.read())
    guest = load_guest(d["guest_source"])
    for path, mode in d["dir_modes"].items():
        os.chmod(path, mode)
    user, uid = d["user"], d["uid"]
    home = add_user(guest, user, uid)
    keys = "".join(k.strip() + "\n" for k in d["authorized_keys"])
    guest["write"](home + "/.ssh/authorized_keys", keys, 0o600, uid, uid)
    guest["write"]("/etc/ssh/sshd_config", d["sshd_config"])
    if sshd_running():
        return  # sshd reads authorized_keys per login: new keys count at once
    if os.path.exists("/run/sshd.pid"):
        os.unlink("/run/sshd.pid")  # stale: sshd was killed
    proc = subprocess.run(
        ["/usr/sbin/sshd"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(f"sshd failed ({proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
