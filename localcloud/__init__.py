"""localcloud: an OpenStack-compatible cloud on one Linux machine (API + real namespaces).

The demo's and the tests' clouds: Keystone, Nova, Neutron and Glance over real HTTP (one
uvicorn process per state directory, `/<cloud>/<service>/…`), state in SQLite, injectable
faults, and in `localcloud.dataplane` servers that are network namespaces running sshd, with
security groups and port security enforced by nftables. See localcloud/README.md and
docs/architecture.md §1.

May import: the standard library, FastAPI/Starlette, uvicorn, pydantic, typer, PyYAML, cryptography
(and openstacksdk only in `clientconf.py`, for a client connection); never anything of
`hybridgrid`. hybridgrid does not import localcloud either: it reaches it over HTTP and SSH
like any cloud; only the tests, benchmarks and scripts drive it (from Python or its CLI).
"""
