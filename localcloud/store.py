"""State of one cloud: a JSON document per resource in SQLite (WAL), cached in memory.

One API process owns the database, so the cache is authoritative; other processes (``localcloud
status``) may read the file concurrently, which WAL allows. Writes go to disk before the API
answers, so a stopped server comes back with every resource.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Doc = dict[str, Any]


class Store:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        else:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS docs (kind TEXT NOT NULL, id TEXT NOT NULL, "
                "doc TEXT NOT NULL, PRIMARY KEY (kind, id))"
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
        self._in_tx = False
        self._load()

    def _load(self) -> None:
        self.cache: dict[str, dict[str, Doc]] = {}
        for kind, id_, doc in self.db.execute("SELECT kind, id, doc FROM docs ORDER BY rowid"):
            self.cache.setdefault(kind, {})[id_] = json.loads(doc)
        self.meta: dict[str, Any] = {
            k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")
        }

    def close(self) -> None:
        self.db.close()

    # Reads return the cached documents; treat them as read-only (use `edit` to change one).
    def all(self, kind: str) -> list[Doc]:
        return list(self.cache.get(kind, {}).values())

    def get(self, kind: str, id_: str) -> Doc | None:
        if not isinstance(id_, str):  # an id from a malformed request body: no such resource
            return None
        return self.cache.get(kind, {}).get(id_)

    def edit(self, kind: str, id_: str) -> Doc | None:
        doc = self.get(kind, id_)
        return copy.deepcopy(doc) if doc is not None else None

    def put(self, kind: str, doc: Doc) -> Doc:
        self.db.execute(
            "INSERT INTO docs (kind, id, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, id) DO UPDATE SET doc = excluded.doc",
            (kind, doc["id"], json.dumps(doc)),
        )
        self.cache.setdefault(kind, {})[doc["id"]] = doc
        return doc

    def delete(self, kind: str, id_: str) -> None:
        self.db.execute("DELETE FROM docs WHERE kind = ? AND id = ?", (kind, id_))
        self.cache.get(kind, {}).pop(id_, None)

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )
        self.meta[key] = value

    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """Several writes as one transaction; on error the disk and the cache roll back."""
        if self._in_tx:
            yield
            return
        self._in_tx = True
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            self._load()
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_tx = False
