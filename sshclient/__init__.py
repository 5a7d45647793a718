"""hybridgrid.sshclient: the SSH client and SSH key material (docs/architecture.md §2, §6).

`connect` (`connect`, `wait_for_ssh`), `client` (one connection with pinned host keys, run as
root, the bastion's key), `pool` (connections shared within a flow run), `errors` (why SSH
failed, and whether a retry helps), `shell` (root command lines, atomic uploads,
`LocalShell`), `hostkeys` (host keys from a console log), `keys` (the site's ed25519 key pair,
checked without echoing it). The plain types — `SSHTarget` (`hybridgrid.ssh_target`), the
`RemoteShell` protocol and command errors (`hybridgrid.shell`) — are the core's.

May import: `hybridgrid.retry`, `hybridgrid.wireguard`, the core (`hybridgrid` without its CLI),
asyncssh and cryptography; never `hybridgrid.cloudops`, the blocks, tasks or flows (a bastion's
key block is loaded through the loader `hybridgrid.blocks.loading` registers).
"""
