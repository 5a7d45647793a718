"""hybridgrid.retry: the retry policy, in one place (docs/architecture.md §2).

`classify` (what is transient, what permanent: `is_transient`, `TransientError`,
`PermanentError`), `policy` (Prefect task options `TRANSIENT`, `with_retries` with a deadline,
the progress logger for long waits), `messages` (`friendly_error`: a permanent error said as
one sentence with its fix).

May import: `hybridgrid.wireguard`, the core (`hybridgrid` without its CLI), Prefect, and the
client libraries whose errors it classifies (openstacksdk, keystoneauth1, requests, asyncssh).
It is the lowest library: `hybridgrid.cloudops` and `hybridgrid.sshclient` import it, it
imports neither.
"""
