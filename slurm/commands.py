"""The node-side shell for Slurm and munge (pure: each function returns a POSIX sh script run as
root): packages, the munge key, the daemons, the managed files, name entries, jobs.

A daemon runs under systemd where the node has it, and is started directly otherwise (the
servers of localcloud have no init system); either way its options come from
/etc/default/slurmd, so both ways start the same daemon. The munge key is only ever read from
or written to stdin/stdout: it never appears in a process argument or a file off the nodes.
"""

from __future__ import annotations

import shlex

from hybridgrid.scheduler import HOSTS_BEGIN, HOSTS_END, INCLUDE_LINE, SLURM_DIR

MUNGE_KEY = "/etc/munge/munge.key"
SLURM_CONF = f"{SLURM_DIR}/slurm.conf"
DEFAULTS = "/etc/default/slurmd"
_SYSTEMD = "[ -d /run/systemd/system ]"


def install_command(daemon: str) -> str:
    """The daemon (slurmctld or slurmd) and munge, from the distribution when missing."""
    packages = f"{daemon} munge slurm-client" if daemon == "slurmctld" else "slurmd munge"
    return f"""set -e
if command -v {daemon} >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
  echo present; exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "hybridgrid: {daemon} or munged is missing and this host has no apt-get;" \\
    "install Slurm ({daemon}) and munge" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -q -o DPkg::Lock::Timeout=300 update >&2
apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends {packages} >&2
echo installed
"""


def adopted_controller_command() -> str:
    """An adopted master must run Slurm already: slurm.conf, slurmctld and munge present."""
    return f"""for f in {SLURM_CONF} {MUNGE_KEY}; do
  test -e "$f" || {{ echo "hybridgrid: the adopted master has no $f: run Slurm on it first," \\
    "or bootstrap the home with scheduler: none" >&2; exit 3; }}
done
if ! command -v slurmctld >/dev/null 2>&1; then
  echo "hybridgrid: slurmctld is not installed on the adopted master" >&2; exit 3
fi
echo ok
"""


def _running(pidfile: str, name: str) -> str:
    """sh condition: the process in `pidfile` lives and is `name`."""
    return (
        f'{{ test -s {pidfile} && pid=$(cat {pidfile}) && test -d /proc/"$pid" '
        f'&& grep -qx {name} /proc/"$pid"/comm; }}'
    )


def _munged() -> str:
    return _running("/run/munge/munged.pid", "munged")


def _start_munged() -> str:
    return f"""if {_SYSTEMD}; then systemctl enable -q munge; systemctl restart munge
else
  if {_munged()}; then kill "$pid"; while test -d /proc/"$pid"; do sleep 0.1; done; fi
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
fi"""


def make_munge_key_command() -> str:
    """The cluster's key on the master: made once (1024 random bytes, 0400 munge), munged up.
    Prints only whether the key was made and a short fingerprint."""
    return f"""umask 077
set -e
made=kept
if ! test -s {MUNGE_KEY}; then
  tmp=$(mktemp /etc/munge/.munge.key.XXXXXX)
  head -c 1024 /dev/urandom > "$tmp"
  chown munge:munge "$tmp"; chmod 0400 "$tmp"; mv -f "$tmp" {MUNGE_KEY}
  made=made
fi
chown munge:munge {MUNGE_KEY}; chmod 0400 {MUNGE_KEY}
if [ "$made" = made ] || ! {_munged()}; then
{_start_munged()}
fi
echo "$made $(sha256sum {MUNGE_KEY} | cut -c1-16)"
"""


def read_munge_key_command() -> str:
    """The key as base64 on stdout (to be written to a node's stdin, never to a file here)."""
    return f"base64 -w0 {MUNGE_KEY}"


def install_munge_key_command() -> str:
    """The key from stdin into place (0400 munge); munged restarted when it changed or is down.
    Prints changed|unchanged and a short fingerprint."""
    return f"""umask 077
set -e
mkdir -p /etc/munge && chown munge:munge /etc/munge && chmod 700 /etc/munge
tmp=$(mktemp /etc/munge/.munge.key.XXXXXX)
trap 'rm -f "$tmp"' EXIT
base64 -d > "$tmp"
test -s "$tmp" || {{ echo "hybridgrid: empty munge key" >&2; exit 3; }}
state=unchanged
if ! cmp -s "$tmp" {MUNGE_KEY}; then
  chown munge:munge "$tmp"; chmod 0400 "$tmp"; mv -f "$tmp" {MUNGE_KEY}
  state=changed
fi
if [ "$state" = changed ] || ! {_munged()}; then
{_start_munged()}
fi
echo "$state $(sha256sum {MUNGE_KEY} | cut -c1-16)"
"""


def munge_fingerprint_command() -> str:
    return f"sha256sum {MUNGE_KEY} | cut -c1-16"


def write_if_absent_command(path: str) -> str:
    """stdin to `path` (0644) only when there is no such file: a file that is the operator's
    once written."""
    p = shlex.quote(path)
    return f"""set -e
if test -e {p}; then cat >/dev/null; echo kept; exit 0; fi
mkdir -p "$(dirname {p})"
tmp=$(mktemp {p}.XXXXXX)
cat > "$tmp"; chmod 0644 "$tmp"; mv -f "$tmp" {p}
echo written
"""


def write_managed_command(path: str) -> str:
    """stdin to `path` (0644, atomic); prints changed|unchanged."""
    p = shlex.quote(path)
    return f"""set -e
mkdir -p "$(dirname {p})"
tmp=$(mktemp {p}.XXXXXX)
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"; chmod 0644 "$tmp"
if cmp -s "$tmp" {p}; then echo unchanged; exit 0; fi
mv -f "$tmp" {p}
echo changed
"""


def include_managed_command() -> str:
    """The one line hybridgrid adds to slurm.conf, when missing (never any other change)."""
    conf, line = shlex.quote(SLURM_CONF), shlex.quote(INCLUDE_LINE)
    return f"""set -e
test -f {conf} || {{ echo "hybridgrid: {SLURM_CONF} is missing" >&2; exit 3; }}
if grep -qxF {line} {conf}; then echo present; exit 0; fi
printf '\\n# added by hybridgrid: its partitions of the remote sites\\n%s\\n' {line} >> {conf}
echo added
"""


def _slurmctld() -> str:
    return _running("/run/slurmctld.pid", "slurmctld")


def controller_up_command(reconfigure: bool, timeout: int = 30) -> str:
    """slurmctld started when down, or told to re-read its files (`reconfigure`); then
    waits (bounded) until `scontrol ping` answers UP. Prints started|reconfigured|running."""
    return f"""set -e
if {_SYSTEMD} && systemctl is-enabled -q slurmctld 2>/dev/null; then managed=systemd; fi
if {_slurmctld()} || {{ [ "$managed" = systemd ] && systemctl is-active -q slurmctld; }}; then
  if [ {int(reconfigure)} = 1 ]; then scontrol reconfigure; state=reconfigured
  else state=running; fi
else
  if {_SYSTEMD}; then systemctl enable -q slurmctld; systemctl start slurmctld
  else slurmctld </dev/null >/dev/null 2>&1; fi
  state=started
fi
i=0
until scontrol ping 2>/dev/null | grep -q 'is UP'; do
  i=$((i + 1))
  if [ $i -gt {timeout * 5} ]; then
    echo "hybridgrid: slurmctld does not answer after {timeout} s" \\
      "(see /var/log/slurm/slurmctld.log)" >&2
    tail -5 /var/log/slurm/slurmctld.log >&2 2>/dev/null || true
    exit 4
  fi
  sleep 0.2
done
echo "$state"
"""


def controller_config_command() -> str:
    """What an adopted controller allows: its SlurmctldParameters and MaxNodeCount lines."""
    return "scontrol show config | grep -E '^(SlurmctldParameters|MaxNodeCount|SLURM_VERSION) '"


def _slurmd() -> str:
    return _running("/run/slurmd.pid", "slurmd")


def slurmd_command(options: str) -> str:
    """slurmd with `options` (in /etc/default/slurmd): started when down, restarted when the
    options changed. Prints started|restarted|running."""
    line = shlex.quote(f'SLURMD_OPTIONS="{options}"')
    dropin = "/etc/systemd/system/slurmd.service.d"
    return f"""set -e
mkdir -p /var/spool/slurmd /var/log/slurm
want={line}
have=$(grep '^SLURMD_OPTIONS=' {DEFAULTS} 2>/dev/null || true)
changed=0
if [ "$have" != "$want" ]; then
  printf '# managed by hybridgrid: a dynamic, configless node\\n%s\\n' "$want" > {DEFAULTS}
  changed=1
fi
if {_SYSTEMD}; then
  # Debian's unit skips a node without /etc/slurm/slurm.conf: configless nodes have none
  mkdir -p {dropin}
  printf '[Unit]\\nConditionPathExists=\\n' > {dropin}/hybridgrid.conf
  systemctl daemon-reload
  if systemctl is-active -q slurmd && [ $changed = 0 ]; then echo running; exit 0; fi
  systemctl enable -q slurmd; systemctl restart slurmd; echo started; exit 0
fi
. {DEFAULTS}
if {_slurmd()}; then
  if [ $changed = 0 ]; then echo running; exit 0; fi
  kill "$pid"; while test -d /proc/"$pid"; do sleep 0.1; done
  state=restarted
else
  state=started
fi
# shellcheck disable=SC2086  # the options are words
slurmd $SLURMD_OPTIONS </dev/null >/dev/null 2>&1
echo "$state"
"""


def slurmd_status_command() -> str:
    return f"if {_slurmd()}; then echo up; else echo down; fi"


def stop_slurmd_command() -> str:
    return f"""if {_SYSTEMD}; then systemctl disable -q --now slurmd 2>/dev/null || true
elif {_slurmd()}; then kill "$pid"; while test -d /proc/"$pid"; do sleep 0.1; done; fi
rm -f {DEFAULTS}
echo stopped
"""


def hosts_command() -> str:
    """The managed block (stdin) into /etc/hosts in place of the previous one; the other lines
    kept in order. Prints changed|unchanged."""
    begin, end = shlex.quote(HOSTS_BEGIN), shlex.quote(HOSTS_END)
    return f"""set -e
block=$(cat)
tmp=$(mktemp /etc/.hosts.XXXXXX)
trap 'rm -f "$tmp"' EXIT
awk -v b={begin} -v e={end} '$0 == b {{ skip = 1; next }} $0 == e {{ skip = 0; next }} !skip' \\
  /etc/hosts > "$tmp"
printf '%s\\n' "$block" >> "$tmp"
if cmp -s "$tmp" /etc/hosts; then echo unchanged; exit 0; fi
cat "$tmp" > /etc/hosts  # in place: /etc/hosts may be a mount point
echo changed
"""


def node_states_command(partition: str) -> str:
    """`NODE STATE` per line for the nodes of `partition` (nothing when it has none)."""
    return f"sinfo -h -N -p {shlex.quote(partition)} -o '%N %T' 2>&1"


def partitions_command() -> str:
    return "sinfo -h -o '%R' 2>&1 | sort -u"


def srun_command(partition: str, node: str, argv: list[str], timeout: int) -> str:
    """One job step on `node` of `partition` from the master, bounded twice: Slurm's time
    limit and a wall-clock timeout (a job waiting for a node that never comes ends too)."""
    minutes = max(1, (timeout + 59) // 60)
    words = " ".join(shlex.quote(a) for a in argv)
    return (
        f"timeout {timeout} srun --partition={shlex.quote(partition)} "
        f"--nodelist={shlex.quote(node)} --nodes=1 --ntasks=1 --time={minutes} "
        f"--job-name=hybridgrid-verify --quiet {words}"
    )


def drain_partition_command(partition: str) -> str:
    """No new job starts in `partition` (running ones go on)."""
    return f"scontrol update partitionname={shlex.quote(partition)} state=DRAIN"


def partition_jobs_command(partition: str) -> str:
    """`JOBID STATE` per line for the jobs of `partition` that are not finished."""
    return f"squeue -h -p {shlex.quote(partition)} -o '%i %T'"


def cancel_partition_command(partition: str) -> str:
    return f"scancel --partition={shlex.quote(partition)}"


def delete_node_command(node: str) -> str:
    return f"scontrol delete nodename={shlex.quote(node)}"
