"""Key pairs: uploaded once per site; removed only when they hold our public key."""

from __future__ import annotations

from openstack import exceptions as osexc
from openstack.connection import Connection

from hybridgrid.cloudops.errors import (
    ResourceConflict,
)
from hybridgrid.cloudops.finder import find_or_none
from hybridgrid.records import (
    KeypairRecord,
)


def ensure_keypair(conn: Connection, name: str, public_key: str) -> KeypairRecord:
    kp = find_or_none(conn.compute.find_keypair, name)
    want = " ".join(public_key.split()[:2])
    if kp is not None:
        if " ".join((kp.public_key or "").split()[:2]) != want:
            raise ResourceConflict(
                f"key pair {name} exists with a different public key: it was made for another "
                f"SSH key block — delete the key pair (openstack keypair delete {name}) or use "
                f"the SSH key block it was made from"
            )
        return KeypairRecord(name=name, id=kp.name, action="reused")
    try:
        kp = conn.compute.create_keypair(name=name, public_key=public_key)
    except osexc.ConflictException:
        # Made by an earlier attempt whose answer was lost; if not, the 409 was something
        # else (transient) and the retry policy takes it from here.
        kp = find_or_none(conn.compute.find_keypair, name)
        if kp is None:
            raise
    return KeypairRecord(name=name, id=kp.name, action="created")


def remove_keypair(conn: Connection, name: str, public_key: str) -> KeypairRecord:
    """Key pairs carry no tags: delete one only when it holds our public key."""
    kp = find_or_none(conn.compute.find_keypair, name)
    want = " ".join(public_key.split()[:2])
    if kp is None or " ".join((kp.public_key or "").split()[:2]) != want:
        return KeypairRecord(name=name, id=kp.name if kp else None, action="absent")
    conn.compute.delete_keypair(kp, ignore_missing=True)
    return KeypairRecord(name=name, id=kp.name, action="deleted")
