"""A repository: catalog + pack store + keys, and the admin operations on it.

Packs and the identity (config.json, keys.json) live in a pack store (packstore.py): a local
folder, or an S3-compatible bucket shared by several nodes.  Layout of a local repository directory:
    config.json      format, chunker parameters, catalog URL (if not the local SQLite file)
    keys.json        master key (wrapped by the passphrase when encrypted)
    dict-*           zstd compression dictionaries, sealed by the master key (archive/dictionary.py)
    catalog.sqlite   the SQL catalog (SQLite, WAL)
    packs/xx/*.pack  chunk and event records
    tmp/             staging files of random-write updates
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import uuid
from collections import namedtuple
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from . import access, chain, events, faults, usage
from . import rawsql as raw
from .auditlog import AuditQueue, insert_rows as insert_audit
from .catalog.db import Catalog, migrate, missing_catalog, sqlite_url
from .chunker import DEFAULT_AVG, LEGACY_AVG
from .clock import now_us, seconds, to_us
from .codec import Codec
from .errors import AuthFailed, Exists, InvalidPath, NotFound, PermissionDenied
from .lazysql import func, select
from .lazysql import models as m
from .keys import MasterKey, keyfile_bytes, parse_keyfile
from .packs import PackDir
from .packstore import LocalPackStore, PackStore, open_store
from .passwords import dummy_hash, hash_password, nt_hash, verify_password
from .paths import check_name
from .store import ChunkStore, NewChunk
from .throttle import LoginThrottle
from .types import ANONYMOUS, AuditRecord, Origin, ShareInfo, User, UserInfo

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

FORMAT = 1
PRESYNC_BYTES = 1 << 20
#: what ShareFS takes of a share's row (Repository.share)
_ShareRow = namedtuple("_ShareRow", "id name root_node quota")
_SHARE_SQL = "SELECT id, name, root_node, quota FROM shares WHERE name = ?"


class Repository:
    """Open one per process and share it between threads."""

    def __init__(self, path: "Path | PackStore", key: MasterKey, config: dict, catalog_url: str | None = None):
        self.packstore = path if isinstance(path, PackStore) else LocalPackStore(path)
        self.location = self.packstore.location     # a folder, or s3://BUCKET/PREFIX?endpoint=...
        self.path = self.packstore.local_dir         # node-local state (the repository folder when local)
        self.config = config
        self.key = key
        url = catalog_url or config.get("catalog") or sqlite_url(self.path / "catalog.sqlite")
        self.catalog = Catalog(url)
        migrate(self.catalog)
        self.codec = Codec(key, store=self.packstore)      # its dictionaries are in the store
        # the size this repository was created with; a new DEFAULT_AVG applies to new ones only
        self.chunk_avg = int(config.get("chunk_avg", LEGACY_AVG))
        self.tmp = self.path / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.store = ChunkStore(self.catalog, PackDir(self.packstore), self.codec)
        from .streams import GroupCommit
        self.group_commit = GroupCommit()
        self._closed = threading.Event()
        self.throttle = LoginThrottle()          # shared by every protocol of this process
        self.audit_log = AuditQueue(self.catalog)

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def init(cls, path: "str | Path", password: str | None = None, encrypt: bool = False,
             catalog_url: str | None = None, chunk_avg: int = DEFAULT_AVG, **store_options) -> "Repository":
        """Create a repository in a folder or an object store (`store_options`: cache,
        cache_size, credentials; see packstore.open_store)."""
        store = open_store(path, **store_options)
        if hasattr(store, "ensure_bucket"):
            store.ensure_bucket()
        if not store.is_empty():
            raise Exists(f"{path} exists and is not empty")
        if not 4096 <= chunk_avg <= 4 * 1024 * 1024:
            raise ValueError("chunk average must be between 4 KiB and 4 MiB")
        if isinstance(store, LocalPackStore):
            store.packs.mkdir(parents=True)
        key = MasterKey.generate(encrypt)
        store.put_meta("keys.json", keyfile_bytes(key, password))
        config = {"format": FORMAT, "id": uuid.uuid4().hex, "chunk_avg": chunk_avg, "encrypted": encrypt}
        if catalog_url and isinstance(store, LocalPackStore):
            config["catalog"] = catalog_url       # never into a bucket: the URL may hold a password
        store.put_meta("config.json", json.dumps(config, indent=1).encode())
        return cls(store, key, config, catalog_url)

    @classmethod
    def open(cls, path: "str | Path", password: str | None = None, catalog_url: str | None = None,
             **store_options) -> "Repository":
        store = open_store(path, **store_options)
        raw = store.get_meta("config.json")
        if raw is None:
            raise NotFound(f"no repository at {path} (create one with `archivectl init`)")
        config = json.loads(raw)
        if config.get("format") != FORMAT:
            raise NotFound(f"{path}: unsupported repository format {config.get('format')}")
        keys = store.get_meta("keys.json")
        if keys is None:
            raise NotFound(f"{path}: the repository keys (keys.json) are missing")
        if isinstance(store, LocalPackStore) and not (catalog_url or config.get("catalog")):
            lost = missing_catalog(store.local_dir)
            if lost is not None:
                # Opening would create an empty catalog in its place, and every share, file and
                # user would silently look deleted (to `serve` as much as to the CLI).
                raise NotFound(f"the catalog of the repository at {store.local_dir} is missing ({lost} does not "
                               "exist): rebuild it from the packs with `archivectl recover`")
        key = parse_keyfile(keys, password)
        return cls(store, key, config, catalog_url)

    def change_password(self, new_password: str) -> None:
        """Rewrap the master key; no data is rewritten."""
        self.packstore.put_meta("keys.json", keyfile_bytes(self.key, new_password))

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.audit_log.close()
        self.store.close()
        self.packstore.close()
        self.catalog.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the one way to change the catalog -------------------------------------------------------
    def mutate(self, build: Callable[[Session], list[dict]], new_chunks: list[NewChunk] | None = None,
               audit: Callable[[list[dict]], list[dict]] | None = None, refs=None,
               applied: bool = False, plain: bool = False) -> list[dict]:
        """Validate, build and apply events (and the chunk rows and audit records) inside a write
        transaction, then make them durable in the packs as one transaction record chained to the
        catalog's head, and move the head to it before that same transaction commits.

        `applied`: the builder already applied each event as it built it (batches whose later
        events depend on earlier ones); they are still written to the packs before commit.
        `plain`: the builder, its events and its audit run only plain SQL (archive/rawsql.py),
        so the transaction goes without a Session (`rawsql.write`; GroupCommit's uploads and
        namespace changes); the statements, the lock and the order of the durable steps are
        the same."""
        if new_chunks and not isinstance(self.packstore, LocalPackStore) and \
                sum(c[3] for c in new_chunks) > PRESYNC_BYTES:
            # Upload the bulk of the data before taking the catalog's write lock, which every
            # node shares: inside it, only the small pack holding the events is PUT.
            self.store.sync()
        with (raw.write(self.catalog) if plain else self.catalog.write()) as s:
            # Everything that can refuse the transaction runs before its record is written, so a
            # record in the packs is one the catalog commit follows unless the process dies.
            # The chunk rows come before the events: a version's chunk rows refer to them by
            # their integer key (chunks.n), looked up by id as the events are applied.
            usage.begin(s)
            if refs:
                self.store.verify_refs(s, refs, new_chunks or [])
            if new_chunks:
                self.store.register_chunks(s, new_chunks)
            evs = build(s)
            if not applied:
                events.apply_many(s, evs)
            usage.enforce(s)               # the quota, on the counter these events just moved
            rows = audit(evs) if audit else []
            if rows:
                insert_audit(s, rows, self.audit_log.names)
            s.flush()
            faults.point("chunks")
            txn = chain.begin(s, evs) if evs else None
            if txn is not None:                # ONE record: the transaction is atomic in the packs too
                self.store.write_txn(txn)
            self.store.sync()
            faults.point("synced")
            if txn is not None:
                chain.set_head(s, txn.rid, txn.seq, txn.at)
        faults.point("committed")
        return evs

    def mutate_grouped(self, build: Callable[[Session], list[dict]],
                       audit: Callable[[list[dict]], list[dict]] | None = None) -> list[dict]:
        """`mutate` for namespace changes that may share one durable commit with others arriving
        at the same time (an NFS client pipelines CREATE/REMOVE; uploads of other clients), like
        uploads do (GroupCommit).  `build` must only read (and allocate ids): its events are
        applied after it returns; an ArchiveError it raises fails this change alone."""
        from .streams import Mutation
        return self.group_commit.commit(Mutation(self, build, audit))

    @staticmethod
    def next_id(s: Session, model) -> int:
        """A fresh id for a new row of `model` (nodes, shares; or its table's name, which needs no
        models: the commit path's "nodes") inside a write transaction.

        Ids are max + 1 under the catalog's write lock; the first call of a transaction asks
        the catalog, later ones count on from there (so a builder that allocates several ids
        before applying its events gets distinct ones, and a batch of 2,000 folders asks once).
        Only valid inside the one write transaction whose session holds it."""
        name = model if isinstance(model, str) else model.__tablename__
        key = ("next_id", name)
        nxt = s.info.get(key)
        if nxt is None:
            nxt = (raw.scalar(s, f"SELECT max(id) FROM {name}") or 0) + 1
        s.info[key] = nxt + 1
        return nxt

    def audit_row(self, action: str, origin: Origin | None, share: str | None = None, path: str | None = None,
                  version: int | None = None, detail: str | None = None, at: int | None = None) -> dict:
        o = origin or Origin("cli", socket.gethostname(), os.environ.get("USER") or getpass.getuser())
        return {"at": at or now_us(), "user": o.user, "protocol": o.protocol, "address": o.address,
                "action": action, "share": share, "path": path, "version": version, "detail": detail}

    # -- shares ------------------------------------------------------------------------------
    def add_share(self, name: str, retention: str | None = None, worm_days: int = 0, anonymous: bool = False,
                  quota: int | None = None) -> None:
        name = check_name(name)
        if name.startswith("."):
            raise InvalidPath("share names may not start with '.'")
        if retention:
            from .retention import parse_rules
            parse_rules(retention)

        def build(s: Session) -> list[dict]:
            if s.scalar(select(m.Share.id).where(m.Share.name == name)) is not None:
                raise Exists(f"share {name!r} exists")
            return [{"op": "share", "at": now_us(), "share": self.next_id(s, m.Share), "name": name,
                     "root": self.next_id(s, m.Node), "retention": retention, "worm_days": worm_days,
                     "anonymous": anonymous, "quota": quota}]
        self.mutate(build, audit=lambda evs: [self.audit_row("share_add", None, name)])

    def set_share(self, name: str, **values) -> None:
        allowed = {"retention", "worm_days", "anonymous", "quota", "allow_purge"}
        values = {k: v for k, v in values.items() if k in allowed}
        if values.get("retention"):
            from .retention import parse_rules
            parse_rules(values["retention"])

        def build(s: Session) -> list[dict]:
            share = self._share_row(s, name)
            if "worm_days" in values and values["worm_days"] < share.worm_days:
                raise PermissionDenied(f"the WORM period of {name!r} can only grow ({share.worm_days} days)")
            return [{"op": "share_set", "at": now_us(), "share": share.id, "values": values}]
        self.mutate(build, audit=lambda evs: [self.audit_row("share_set", None, name, detail=json.dumps(values))])

    def _share_row(self, s: Session, name: str) -> m.Share:
        row = s.scalar(select(m.Share).where(m.Share.name == name))
        if row is None:
            raise NotFound(f"no share {name!r}")
        return row

    def list_shares(self) -> list[ShareInfo]:
        with self.catalog.session() as s:
            return [ShareInfo(r.name, seconds(r.created_at), r.retention, r.worm_days, r.anonymous, r.quota, r.used)
                    for r in s.scalars(select(m.Share).order_by(m.Share.name))]

    def share(self, name: str, user: "User | str | None" = None, origin: Origin | None = None,
              case_insensitive: bool = False):
        """A ShareFS for `user` (None: administrator); raises NotFound or PermissionDenied."""
        from .sharefs import ShareFS
        mode = "rw"
        uname = None
        if user is None:          # the administrator: one plain-SQL lookup, no Session (a CLI put's path)
            with raw.read(self.catalog) as r:
                got = raw.one(r, _SHARE_SQL, (name,))
            if got is None:
                raise NotFound(f"no share {name!r}")
            row = _ShareRow(*got)
        else:
            with self.catalog.session() as s:
                row = self._share_row(s, name)
                uname = user if isinstance(user, str) else user.name
                mode = self._grant_mode(s, uname, row)
                if mode is None:
                    raise PermissionDenied(f"user {uname!r} has no access to share {name!r}")
        if origin is None:
            origin = Origin("api", None, uname)
        elif origin.user is None and uname is not None:
            origin = Origin(origin.protocol, origin.address, uname)
        return ShareFS(self, row, writable=(mode == "rw"), origin=origin, case_insensitive=case_insensitive)

    def _grant_mode(self, s: Session, uname: str, share: m.Share) -> str | None:
        mode = s.scalar(select(m.Grant.mode).join(m.User, m.User.id == m.Grant.user_id)
                        .where(m.User.name == uname, m.Grant.share_id == share.id))
        if mode is None and share.anonymous:
            return "ro"
        return mode

    # -- users -------------------------------------------------------------------------------
    def add_user(self, name: str, password: str, smb: bool = False) -> None:
        """Create a user; `smb=True` also stores the NT hash NTLM needs (see set_smb)."""
        name = check_name(name)
        if not password:
            raise InvalidPath("empty password")
        if name == ANONYMOUS.name:
            raise InvalidPath(f"{name!r} is reserved for anonymous access (share add --anonymous)")

        def build(s: Session) -> list[dict]:
            if s.scalar(select(m.User.id).where(m.User.name == name)) is not None:
                raise Exists(f"user {name!r} exists")
            return [{"op": "user", "at": now_us(), "name": name, "hash": hash_password(password),
                     "nt_hash": nt_hash(password) if smb else None}]
        self.mutate(build, audit=lambda evs: [self.audit_row("user_add", None, detail=name)])

    def set_password(self, name: str, password: str) -> None:
        if not password:
            raise InvalidPath("empty password")

        def build(s: Session) -> list[dict]:
            row = s.scalar(select(m.User).where(m.User.name == name))
            if row is None:
                raise NotFound(f"no user {name!r}")
            # an SMB-enabled user keeps working over SMB: its NT hash follows the new password
            return [{"op": "user", "at": now_us(), "name": name, "hash": hash_password(password),
                     "nt_hash": nt_hash(password) if row.nt_hash else None}]
        self.mutate(build, audit=lambda evs: [self.audit_row("user_passwd", None, detail=name)])

    def set_smb(self, name: str, enabled: bool, password: str | None = None) -> None:
        """Enable (store the NT hash of `password`, which must be the user's password) or
        disable (forget the NT hash) SMB logins for a user.

        NTLM proves knowledge of the NT hash, an unsalted MD4 of the password that is as good
        as the password over SMB; it cannot be derived from the scrypt hash, so enabling
        needs the password, and users who never use SMB never have one stored."""
        def build(s: Session) -> list[dict]:
            row = s.scalar(select(m.User).where(m.User.name == name))
            if row is None:
                raise NotFound(f"no user {name!r}")
            if enabled and not verify_password(password or "", row.password_hash):
                raise AuthFailed(f"wrong password for user {name!r}")
            return [{"op": "user", "at": now_us(), "name": name, "hash": row.password_hash,
                     "nt_hash": nt_hash(password or "") if enabled else None}]
        self.mutate(build, audit=lambda evs: [self.audit_row("user_smb", None, detail=f"{name} {'on' if enabled else 'off'}")])

    def smb_credentials(self, name: str) -> "tuple[User, bytes] | None":
        """(user, NT hash) of an enabled, SMB-enabled user, for NTLM; None otherwise.
        The name matches exactly, else case-insensitively when that is unambiguous (Windows
        clients may change the case of a typed user name)."""
        with self.catalog.session() as s:
            rows = list(s.scalars(select(m.User).where(func.lower(m.User.name) == name.lower()))) if name else []
        exact = [r for r in rows if r.name == name]
        row = exact[0] if exact else (rows[0] if len(rows) == 1 else None)
        if row is None or row.disabled or not row.nt_hash:
            return None
        return User(row.id, row.name), bytes.fromhex(row.nt_hash)

    def remove_user(self, name: str) -> None:
        def build(s: Session) -> list[dict]:
            if s.scalar(select(m.User.id).where(m.User.name == name)) is None:
                raise NotFound(f"no user {name!r}")
            return [{"op": "user_del", "at": now_us(), "name": name}]
        self.mutate(build, audit=lambda evs: [self.audit_row("user_del", None, detail=name)])

    def grant(self, user: str, share: str, mode: str | None) -> None:
        """mode "ro" | "rw", or None to revoke."""
        if mode not in ("ro", "rw", None):
            raise ValueError("mode must be ro or rw")

        def build(s: Session) -> list[dict]:
            if s.scalar(select(m.User.id).where(m.User.name == user)) is None:
                raise NotFound(f"no user {user!r}")
            self._share_row(s, share)
            return [{"op": "grant", "at": now_us(), "user": user, "share": share, "mode": mode}]
        self.mutate(build, audit=lambda evs: [self.audit_row("grant" if mode else "revoke", None, share,
                                                             detail=f"{user} {mode or ''}".strip())])

    def revoke(self, user: str, share: str) -> None:
        self.grant(user, share, None)

    def list_users(self) -> list[UserInfo]:
        with self.catalog.session() as s:
            users = list(s.scalars(select(m.User).order_by(m.User.name)))
            grants = s.execute(select(m.Grant.user_id, m.Share.name, m.Grant.mode)
                               .join(m.Share, m.Share.id == m.Grant.share_id)).all()
        by_user: dict[int, dict[str, str]] = {}
        for uid, share, mode in grants:
            by_user.setdefault(uid, {})[share] = mode
        return [UserInfo(u.name, seconds(u.created_at), by_user.get(u.id, {})) for u in users]

    def authenticate(self, name: str, password: str) -> User:
        """Check a password against the catalog; raises AuthFailed (same for unknown users).
        Not throttled and not audited: protocol adapters call `login` instead."""
        return self.check_password(name, password)[0]

    def check_password(self, name: str, password: str) -> tuple[User, str]:
        """(User, its stored hash) when the password is right; AuthFailed otherwise."""
        with self.catalog.session() as s:
            row = s.scalar(select(m.User).where(m.User.name == name)) if name else None
        if row is None or row.disabled:
            verify_password(password or "", dummy_hash())
            raise AuthFailed("authentication failed")
        if not verify_password(password or "", row.password_hash):
            raise AuthFailed("authentication failed")
        return User(row.id, row.name), row.password_hash

    # -- logins that see revocation at once (archive/access.py) ---------------------------------
    def auth_generation(self) -> int:
        """A number every user, password, grant or anonymous-share change moves (one cheap read)."""
        return access.auth_generation(self)

    def login(self, name: str, password: str, origin: Origin) -> "access.Login":
        """Authenticate for a protocol session: throttled per user and per address
        (`access.LoginThrottled`, an AuthFailed, while locked), failures and lockouts audited.
        The Login re-validates itself with `validate()` when the auth generation moved."""
        return access.login(self, name, password, origin)

    def login_anonymous(self) -> "access.Login":
        """The anonymous Login (read-only, shares added with anonymous=True); AuthFailed if none."""
        return access.login_anonymous(self)

    def login_for(self, user: "User | str") -> "access.Login":
        """A Login for a user authenticated elsewhere (NTLM, NFS squash user, ANONYMOUS)."""
        return access.login_for(self, user)

    def shares_for(self, user: "User | str | None", session: Session | None = None) -> list[tuple[str, str]]:
        if session is not None:
            return self._shares_for(session, user)
        with self.catalog.session() as s:
            return self._shares_for(s, user)

    def _shares_for(self, s: Session, user: "User | str | None") -> list[tuple[str, str]]:
        shares = list(s.scalars(select(m.Share).order_by(m.Share.name)))
        if user is None:
            return [(r.name, "rw") for r in shares]
        uname = user if isinstance(user, str) else user.name
        modes = dict(s.execute(select(m.Grant.share_id, m.Grant.mode).join(m.User, m.User.id == m.Grant.user_id)
                               .where(m.User.name == uname)).all())
        out = []
        for r in shares:
            mode = modes.get(r.id) or ("ro" if r.anonymous else None)
            if mode:
                out.append((r.name, mode))
        return out

    # -- audit & stats ---------------------------------------------------------------------------
    def audit(self, action: str, origin: Origin | None, share: str | None = None, path: str | None = None,
              detail: str | None = None) -> None:
        """Record an event that changes nothing in the namespace (e.g. a failed login)."""
        with self.catalog.session() as s:
            insert_audit(s, [self.audit_row(action, origin, share, path, detail=detail)], self.audit_log.names)

    def audit_later(self, action: str, origin: Origin | None, share: str | None = None,
                    path: str | None = None, version: int | None = None, detail: str | None = None) -> None:
        """Audit something that changes nothing (a download, a failed login) without a write
        transaction of its own: batched by a background thread (archive/auditlog.py)."""
        self.audit_log.add(self.audit_row(action, origin, share, path, version=version, detail=detail))

    def audit_events(self, since=None, user: str | None = None, protocol: str | None = None,
                     limit: int | None = None) -> Iterator[AuditRecord]:
        """Audit records, oldest first; `limit`: only the newest `limit` of them."""
        self.audit_log.flush()
        q = select(m.AuditEvent).order_by(m.AuditEvent.id.desc() if limit else m.AuditEvent.id)
        if since is not None:
            q = q.where(m.AuditEvent.at >= to_us(since))
        if user:
            q = q.where(m.AuditEvent.user == user)
        if protocol:
            q = q.where(m.AuditEvent.protocol == protocol)
        if limit:
            q = q.limit(limit)
        with self.catalog.session() as s:
            rows = list(s.scalars(q))
        if limit:
            rows.reverse()
        for r in rows:
            yield AuditRecord(seconds(r.at), r.user, r.protocol, r.address, r.action, r.share, r.path,
                              r.version, r.detail)

    def stats(self) -> dict:
        from .stats import repository_stats
        return repository_stats(self)

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose` (e.g. "nfs-handles"), derived from the repository's
        master key: the same on every start and on every appliance node sharing the repository,
        different per purpose, and it reveals nothing about the master key."""
        import blake3
        return blake3.blake3(b"edge-archive derived key: " + purpose.encode(), key=self.key.id_key).digest()
