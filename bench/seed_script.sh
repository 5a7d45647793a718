#!/usr/bin/env bash
# The seed's steps as a person runs them: one remote site joined to a running home (its
# master is the WireGuard hub) with the unmodified `openstack` CLI and OpenSSH, one command
# after another. No orchestration, no rerun story, no verification beyond `wg show`.
# `make bench` (bench/run_all.py) runs it beside add_remote_site and times it; see
# bench/README.md ("The seed script").
#
# Settings come from the environment (the bench sets them; a person edits the defaults):
#   OS_CLIENT_CONFIG_FILE  clouds.yaml with both clouds
#   SITE_CLOUD, HOME_CLOUD clouds.yaml entries of the remote site and the home
#   MASTER, MASTER_IP      the home master (server name) and its public (floating) IP
#   HOME_SUBNET, HOME_SG   the home network and the security group of the master's port
#   HOME_WORKERS           fixed IPs of the home workers (space separated), reached via the master
#   SSH_KEY, SSH_USER      private key (its .pub beside it) and login user on every server
#   SSH_PROXY              ProxyCommand that reaches public IPs (localcloud's `proxy %h %p`)
#   WORK                   a private directory for ssh_config and known_hosts
# Each step prints "== <epoch seconds> step <n>: <what>" (and "== <epoch> done") for timing.
set -euo pipefail
umask 077  # ssh_config, known_hosts

SITE=${SITE:-marburg}
SITE_SUBNET=${SITE_SUBNET:-192.168.200.0/24}
WG_CIDR=${WG_CIDR:-10.0.0.0/24}
HUB_WG=${HUB_WG:-10.0.0.1}
SITE_WG=${SITE_WG:-10.0.0.250}
WG_PORT=${WG_PORT:-51820}
EXTERNAL_NET=${EXTERNAL_NET:-public}
IMAGE=${IMAGE:-ubuntu-22.04}
VPN_FLAVOR=${VPN_FLAVOR:-de.NBI tiny}
WORKER_FLAVOR=${WORKER_FLAVOR:-de.NBI small}
OPENSTACK=${OPENSTACK:-openstack}
SSH_USER=${SSH_USER:-ubuntu}
: "${SITE_CLOUD:?}" "${HOME_CLOUD:?}" "${MASTER:?}" "${MASTER_IP:?}" "${HOME_SUBNET:?}"
: "${HOME_SG:?}" "${SSH_KEY:?}" "${SSH_PROXY:?}" "${WORK:?}"
HOME_WORKERS=${HOME_WORKERS:-}

step() { printf '== %s step %s\n' "$(date +%s.%N)" "$*"; }
site() { "$OPENSTACK" --os-cloud "$SITE_CLOUD" "$@"; }
home() { "$OPENSTACK" --os-cloud "$HOME_CLOUD" "$@"; }
first_ip() { grep -oE '([0-9]{1,3}\.){3}[0-9]{1,3}' | head -n 1; }
on() { ssh -F "$WORK/ssh_config" "$1" sudo bash -s; }  # a root shell script on stdin

# Host keys: accept-new, as a person does on first contact (trust on first use; hybridgrid
# instead pins the key the console log printed at first boot).
write_ssh_config() {
  local ip
  {
    for ip in $HOME_WORKERS; do
      printf 'Host home-%s\n  HostName %s\n  ProxyJump master\n' "$ip" "$ip"
    done
    cat <<EOF
Host master
  HostName $MASTER_IP
  ProxyCommand $SSH_PROXY
Host vpn
  HostName ${VPN_IP:-none}
  ProxyCommand $SSH_PROXY
Host site-worker
  HostName ${WORKER_FIXED:-none}
  ProxyJump vpn
Host *
  User $SSH_USER
  IdentityFile $SSH_KEY
  IdentitiesOnly yes
  UserKnownHostsFile $WORK/known_hosts
  StrictHostKeyChecking accept-new
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
EOF
  } > "$WORK/ssh_config"
}

wait_ssh() {  # sshd starts at ACTIVE; bounded: 60 tries
  local i err
  for i in $(seq 60); do
    err=$(ssh -F "$WORK/ssh_config" "$1" true 2>&1) && return 0
    sleep 1
  done
  echo "seed: no SSH to $1 after 60 tries: $(tail -n 1 <<<"$err")" >&2
  return 1
}

step 1: network, subnet, router
site network create "$SITE-net" -f value -c id
site subnet create "$SITE-subnet" --network "$SITE-net" --subnet-range "$SITE_SUBNET" -f value -c id
site router create "$SITE-router" -f value -c id
site router set "$SITE-router" --external-gateway "$EXTERNAL_NET"
site router add subnet "$SITE-router" "$SITE-subnet"

step 2: security group and rules
site security group create "$SITE-sg" -f value -c id
rule() { site security group rule create "$SITE-sg" -f value -c id "$@"; }
rule --protocol tcp --dst-port 22
rule --protocol udp --dst-port "$WG_PORT" --remote-ip "$MASTER_IP/32"
for net in "$SITE_SUBNET" "$HOME_SUBNET" "$WG_CIDR"; do rule --protocol any --remote-ip "$net"; done
home security group rule create "$HOME_SG" --protocol any --remote-ip "$SITE_SUBNET" -f value -c id

step 3: the VPN node and one worker
site keypair create "$SITE-key" --public-key "$SSH_KEY.pub" -f value -c fingerprint
site server create "$SITE-vpn" --image "$IMAGE" --flavor "$VPN_FLAVOR" --network "$SITE-net" \
  --security-group "$SITE-sg" --key-name "$SITE-key" --wait -f value -c id
site server create "$SITE-worker-1" --image "$IMAGE" --flavor "$WORKER_FLAVOR" \
  --network "$SITE-net" --security-group "$SITE-sg" --key-name "$SITE-key" --wait -f value -c id

step 4: the floating IP
VPN_IP=$(site floating ip create "$EXTERNAL_NET" -f value -c floating_ip_address)
site server add floating ip "$SITE-vpn" "$VPN_IP"
home security group rule create "$HOME_SG" --protocol udp --dst-port "$WG_PORT" \
  --remote-ip "$VPN_IP/32" -f value -c id
VPN_PORT=$(site port list --server "$SITE-vpn" -f value -c ID -c "Fixed IP Addresses")
VPN_FIXED=$(first_ip <<<"${VPN_PORT#* }")
WORKER_FIXED=$(site port list --server "$SITE-worker-1" -f value -c "Fixed IP Addresses" | first_ip)
write_ssh_config
echo "VPN node $VPN_IP ($VPN_FIXED), worker $WORKER_FIXED"

step 5: wg genkey and wg pubkey on both nodes
# The private key is made on its node (umask 077) and never leaves it; the master keeps the
# key it already serves its sites with.
wg_key='umask 077; mkdir -p /etc/wireguard
[ -s /etc/wireguard/privatekey ] || wg genkey > /etc/wireguard/privatekey
wg pubkey < /etc/wireguard/privatekey'
MASTER_PUB=$(on master <<<"$wg_key")
wait_ssh vpn
VPN_PUB=$(on vpn <<<"$wg_key")

step 6: wg0.conf on both ends
on vpn <<EOF
umask 077
{
  echo "[Interface]"
  echo "Address = $SITE_WG/${WG_CIDR#*/}"
  echo "ListenPort = $WG_PORT"
  echo "PrivateKey = \$(cat /etc/wireguard/privatekey)"
  echo
  echo "[Peer]"
  echo "PublicKey = $MASTER_PUB"
  echo "Endpoint = $MASTER_IP:$WG_PORT"
  echo "AllowedIPs = $WG_CIDR, $HOME_SUBNET"
  echo "PersistentKeepalive = 25"
} > /etc/wireguard/wg0.conf
EOF
on master <<EOF
umask 077
cat >> /etc/wireguard/wg0.conf <<PEER
# >>> seed site $SITE
[Peer]
PublicKey = $VPN_PUB
Endpoint = $VPN_IP:$WG_PORT
AllowedIPs = $SITE_WG/32, $SITE_SUBNET
PersistentKeepalive = 25
# <<< seed site $SITE
PEER
EOF

step 7: wg-quick up on both ends
# The master's wg0 already serves other sites: a running interface takes the new peer with
# syncconf (and its route by hand, as wg-quick up would add it); a stopped one comes up.
on master <<EOF
sysctl -qw net.ipv4.ip_forward=1
if ip link show dev wg0 >/dev/null 2>&1; then
  wg syncconf wg0 <(wg-quick strip wg0)
  ip route replace $SITE_SUBNET dev wg0
else
  wg-quick up wg0
fi
EOF
on vpn <<EOF
sysctl -qw net.ipv4.ip_forward=1
wg-quick up wg0
EOF

step 8: the allowed-address pairs
MASTER_PORT=$(home port list --server "$MASTER" -f value -c ID -c "Fixed IP Addresses")
MASTER_FIXED=$(first_ip <<<"${MASTER_PORT#* }")
home port set "${MASTER_PORT%% *}" --allowed-address ip-address="$SITE_SUBNET"
site port set "${VPN_PORT%% *}" --allowed-address ip-address="$WG_CIDR" \
  --allowed-address ip-address="$HOME_SUBNET"

step 9: the routes on the workers
wait_ssh site-worker
on site-worker <<EOF
ip route replace $HOME_SUBNET via $VPN_FIXED
ip route replace $WG_CIDR via $VPN_FIXED
EOF
for ip in $HOME_WORKERS; do
  on "home-$ip" <<<"ip route replace $SITE_SUBNET via $MASTER_FIXED"
done

step 10: wg show until a handshake
for i in $(seq 60); do
  hs=$(on vpn <<<"wg show wg0 latest-handshakes" | awk '{print $2}')
  [ "${hs:-0}" -gt 0 ] && break
  [ "$i" -lt 60 ] || { echo "seed: no handshake on $SITE-vpn after 60 tries" >&2; exit 1; }
  sleep 1
done
on vpn <<<"wg show wg0"
printf '== %s done\n' "$(date +%s.%N)"
