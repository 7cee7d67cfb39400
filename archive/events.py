"""Catalog changes as events: the one code path for live changes and for `recover`.

Every change to shares, users and the namespace is expressed as an event dict.  The core
writes the event into the packs (encrypted like chunks: it holds names), fsyncs, then applies
it to the catalog in the same transaction.  `recover` replays the events found in the packs in
order through the same `apply`, so a catalog rebuilt from packs matches the one that was lost.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import rawsql as raw
from . import usage
from .lazysql import insert, select, table, update
from .lazysql import models as m
from .paths import fold
from .types import etag_blob

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

Event = dict[str, Any]

# Core tables: ORM-enabled DML costs several times more per statement, and a tree put runs
# a dozen of these per file.
nodes, shares, dentries = table("nodes"), table("shares"), table("dentries")
versions, version_chunks = table("versions"), table("version_chunks")


def apply(s: Session, ev: Event) -> None:
    op = ev["op"]
    if op == "commit":              # the share's usage counter moves in the same transaction
        usage.add(s, usage.commit_share(s, ev), usage.commit_delta(s, ev))
    elif op in usage.NODE_OPS:
        nodes = usage.touched(s, ev)
        before = usage.uses(s, nodes)
        _APPLY[op](s, ev)
        usage.settle(s, before, usage.uses(s, nodes))
        _after(s, ev)
        return
    _APPLY[op](s, ev)
    _after(s, ev)


def apply_many(s: Session, evs: list[Event]) -> None:
    """Apply a transaction's events in order; runs of folder creations and time changes (a tree
    upload's thousands of folders) go as one executemany per statement.

    The result is the same as `apply` of each event in turn: a run's nodes are inserted before
    the parents' mtime updates, and a parent always precedes its children in a run, so every
    folder ends with the mtime of its last change either way.  Both live commits and `recover`
    come through here."""
    i = 0
    while i < len(evs):
        op = evs[i]["op"]
        j = i + 1
        if op in _MANY:
            while j < len(evs) and evs[j]["op"] == op:
                j += 1
            _MANY[op](s, evs[i:j])
        else:
            apply(s, evs[i])
        i = j


def _mkdir_many(s: Session, evs: list[Event]) -> None:
    raw.many(s, _INS_NODE, [(e["node"], e["share"], "dir", e["at"], stored_time(e.get("mtime"), e["at"])) for e in evs])
    raw.many(s, _INS_DENTRY, [(e["parent"], e["name"], _fold(e["name"]), e["node"], e["at"]) for e in evs])
    raw.many(s, _SET_MTIME, [(e["at"], e["parent"]) for e in evs])
    raw.many(s, _INS_CHANGE, list(dict.fromkeys((e["share"], e["at"] // 1_000_000) for e in evs)))


def _times_many(s: Session, evs: list[Event]) -> None:
    raw.many(s, _SET_VERSION_MTIME, [(e["mtime"], e["node"], e["number"]) for e in evs if e.get("number")])
    raw.many(s, _SET_MTIME, [(e["mtime"], e["node"]) for e in evs if not e.get("number")])


def _share(s: Session, ev: Event) -> None:
    s.execute(insert(nodes).values(id=ev["root"], share_id=0, kind="dir", created_at=ev["at"], mtime=ev["at"]))
    s.execute(insert(shares).values(id=ev["share"], name=ev["name"], root_node=ev["root"], created_at=ev["at"],
                                     retention=ev.get("retention"), worm_days=ev.get("worm_days", 0),
                                     anonymous=ev.get("anonymous", False), quota=ev.get("quota")))
    s.execute(update(nodes).where(nodes.c.id == ev["root"]).values(share_id=ev["share"]))


def _share_set(s: Session, ev: Event) -> None:
    s.execute(update(shares).where(shares.c.id == ev["share"]).values(**ev["values"]))


def _user(s: Session, ev: Event) -> None:
    row = s.scalar(select(m.User).where(m.User.name == ev["name"]))
    if row is None:
        s.add(m.User(name=ev["name"], password_hash=ev["hash"], nt_hash=ev.get("nt_hash"),
                     created_at=ev["at"], disabled=False))
    else:
        row.password_hash = ev["hash"]
        row.nt_hash = ev.get("nt_hash")


def _user_del(s: Session, ev: Event) -> None:
    row = s.scalar(select(m.User).where(m.User.name == ev["name"]))
    if row is not None:
        s.query(m.Grant).filter(m.Grant.user_id == row.id).delete()
        s.query(m.AccessKey).filter(m.AccessKey.user_name == ev["name"]).delete()
        s.delete(row)


def _grant(s: Session, ev: Event) -> None:
    uid = s.scalar(select(m.User.id).where(m.User.name == ev["user"]))
    sid = s.scalar(select(m.Share.id).where(m.Share.name == ev["share"]))
    s.query(m.Grant).filter(m.Grant.user_id == uid, m.Grant.share_id == sid).delete()
    if ev.get("mode"):
        s.add(m.Grant(user_id=uid, share_id=sid, mode=ev["mode"]))


_INS_NODE = "INSERT INTO nodes (id, share_id, kind, created_at, mtime) VALUES (?, ?, ?, ?, ?)"
_INS_DENTRY = ("INSERT INTO dentries (parent_id, name, name_fold, node_id, valid_from, valid_to) "
               "VALUES (?, ?, ?, ?, ?, NULL)")
_SET_MTIME = "UPDATE nodes SET mtime = ? WHERE id = ?"
_END_DENTRY = "UPDATE dentries SET valid_to = ? WHERE parent_id = ? AND name = ? AND valid_to IS NULL"
# A one-chunk version holds its chunk's key in its own row (the last parameter: the chunk's id,
# or NULL); longer chunk lists go to chunk_lists.  Readers see both through the view
# version_chunks (models.VERSION_CHUNKS_VIEW).
_INS_VERSION = ("INSERT INTO versions (node_id, number, size, mtime, created_at, deleted, etag, origin_protocol, "
                "origin_user, origin_address, meta, chunk) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                f"(SELECT n FROM chunks WHERE {raw.CHUNK_BY_ID})) RETURNING id, chunk")
_SET_VERSION_CHUNK = f"UPDATE versions SET chunk = (SELECT n FROM chunks WHERE {raw.CHUNK_BY_ID}) WHERE id = ?"
_COPY_VERSION_CHUNK = "UPDATE versions SET chunk = ? WHERE id = ?"
# A chunk reference by the chunk's id: the row holds the chunk's integer key (chunks.n).  Chunks
# are found by id with raw.CHUNK_BY_ID, which binds the id twice: the statements that name a
# chunk by id take it as their last two parameters.
_INS_VCHUNK = ('INSERT INTO chunk_lists (version_id, "offset", chunk, length) '
               f"SELECT ?, ?, n, ? FROM chunks WHERE {raw.CHUNK_BY_ID}")
_INS_VCHUNK_MISSING = ('INSERT INTO chunk_lists (version_id, "offset", chunk, length) '
                       f"SELECT ?, ?, n, ? FROM chunks WHERE {raw.CHUNK_BY_ID} ON CONFLICT DO NOTHING")
_INS_NO_PACK = ('INSERT INTO chunks (id, pack, "offset", length, raw_len, orphaned_at) '
                f"VALUES (?, NULL, 0, 0, 0, NULL) ON CONFLICT {raw.CHUNK_ID_KEY} DO NOTHING")
_COPY_VCHUNKS = ('INSERT INTO chunk_lists (version_id, "offset", chunk, length) '
                 'SELECT ?, "offset", chunk, length FROM chunk_lists WHERE version_id = ?')
_SET_VERSION_MTIME = "UPDATE versions SET mtime = ? WHERE node_id = ? AND number = ?"
_INS_CHANGE = "INSERT INTO share_changes (share_id, at_s) VALUES (?, ?) ON CONFLICT DO NOTHING"
_NODE_SHARE = "SELECT share_id FROM nodes WHERE id = ?"


def stored_time(mtime: int | None, created_at: int) -> int | None:
    """What a node's or version's `mtime` column stores: NULL when it equals `created_at` (8 B a
    row, migration 0016); every reader takes coalesce(mtime, created_at)."""
    return None if mtime is None or mtime == created_at else mtime


def _fold(name: str) -> str | None:
    """dentries.name_fold: the name's case fold, NULL when it is the name itself (migration 0011)."""
    f = fold(name)
    return None if f == name else f


def _link(s: Session, parent: int, name: str, node: int, at: int) -> None:
    raw.run(s, _INS_DENTRY, (parent, name, _fold(name), node, at))
    raw.run(s, _SET_MTIME, (at, parent))


def _unlink(s: Session, parent: int, name: str, at: int) -> None:
    raw.run(s, _END_DENTRY, (at, parent, name))
    raw.run(s, _SET_MTIME, (at, parent))


def _mkdir(s: Session, ev: Event) -> None:
    raw.run(s, _INS_NODE, (ev["node"], ev["share"], "dir", ev["at"], stored_time(ev.get("mtime"), ev["at"])))
    _link(s, ev["parent"], ev["name"], ev["node"], ev["at"])


def _commit(s: Session, ev: Event) -> None:
    """A new version of a file; `link` also creates the node/dentry (new or re-linked file)."""
    if ev.get("new_node"):
        raw.run(s, _INS_NODE, (ev["node"], ev["share"], "file", ev["at"], None))
    if ev.get("link"):
        _link(s, ev["parent"], ev["name"], ev["node"], ev["at"])
    vid, one = _insert_version(s, ev)
    if "copy_of" in ev:
        src, src_meta, src_chunk = s.execute(select(m.Version.id, m.Version.meta, m.Version.chunk).where(
            m.Version.node_id == ev["copy_of"][0], m.Version.number == ev["copy_of"][1])).one()
        if src_meta is not None and ev.get("meta") is None:     # a copy or restore keeps the object metadata
            s.execute(update(versions).where(versions.c.id == vid).values(meta=src_meta))
        if src_chunk is not None:
            raw.run(s, _COPY_VERSION_CHUNK, (src_chunk, vid))
        else:
            raw.run(s, _COPY_VCHUNKS, (vid, src))
    elif ev.get("lens") and not one:
        ids, lens = bytes.fromhex(ev["ids"]), ev["lens"]
        _check_refs(s, [(vid, ids, lens)], _insert_chunk_list(s, vid, ids, lens))
    if ev.get("unlink"):
        _unlink(s, ev["parent"], ev["name"], ev["at"])


def _insert_version(s: Session, e: Event) -> tuple[int, bool]:
    """The version row of a commit event: its id, and whether it holds the version's one chunk."""
    o = e.get("origin") or {}
    lens = e.get("lens")
    one = bytes.fromhex(e["ids"]) if lens and len(lens) == 1 and lens[0] == e["size"] and "copy_of" not in e \
        else None
    key = b"" if one is None else one       # (a NULL would be text to PostgreSQL's substr: no chunk either)
    vid, chunk = raw.one(s, _INS_VERSION, (e["node"], e["number"], e["size"], stored_time(e["mtime"], e["at"]), e["at"],
                                           bool(e.get("deleted", False)), etag_blob(e["etag"]), o.get("protocol"),
                                           o.get("user"), o.get("address"), e.get("meta"), key, key))
    if one is not None and chunk is None:     # a chunk the catalog lacks (see _check_refs)
        raw.run(s, _INS_NO_PACK, (one,))
        raw.run(s, _SET_VERSION_CHUNK, (one, one, vid))
        if raw.scalar(s, "SELECT chunk FROM versions WHERE id = ?", (vid,)) is None:
            _prefix_taken(one)
    return vid, one is not None


def _prefix_taken(cid: bytes) -> None:
    """No chunk row of this id, and none could be made: another chunk's id has the same first 16
    bytes (the unique index, migration 0012).  Refused rather than mixed up."""
    from .errors import Corrupt
    raise Corrupt(f"chunk {cid.hex()} shares its first 16 bytes with another chunk's id; not stored")


def _insert_chunk_list(s: Session, vid: int, ids: bytes, lens: list[int], batch: int = 1000,
                       sql: str = _INS_VCHUNK) -> int:
    """The version's chunk rows, inserted a thousand at a time so memory stays flat; returns
    how many were inserted."""
    off, done = 0, 0
    for start in range(0, len(lens), batch):
        rows = []
        for i in range(start, min(start + batch, len(lens))):
            cid = ids[32 * i:32 * i + 32]
            rows.append((vid, off, lens[i], cid, cid))
            off += lens[i]
        done += raw.many(s, sql, rows)
    return done


def _check_refs(s: Session, made: list[tuple[int, bytes, list[int]]], inserted: int) -> None:
    """Every chunk reference of these new versions (vid, ids, lens) got its row: `inserted` of
    them did.  A chunk the catalog does not have (only `recover` meets one: its record was
    lost) gets a row without a pack first, so the version keeps its reference and reads,
    check and recover's report name the chunk missing."""
    if not made:
        return
    if inserted == sum(len(lens) for _, _, lens in made):
        return
    for vid, ids, lens in made:
        raw.many(s, _INS_NO_PACK, [(ids[32 * i:32 * i + 32],) for i in range(len(lens))])
        _insert_chunk_list(s, vid, ids, lens, sql=_INS_VCHUNK_MISSING)
        if raw.scalar(s, "SELECT count(*) FROM chunk_lists WHERE version_id = ?", (vid,)) != len(lens):
            _prefix_taken(next(ids[32 * i:32 * i + 32] for i in range(len(lens))
                                if raw.scalar(s, f"SELECT n FROM chunks WHERE {raw.CHUNK_BY_ID}",
                                              (ids[32 * i:32 * i + 32],) * 2) is None))


def _unlink_ev(s: Session, ev: Event) -> None:
    _unlink(s, ev["parent"], ev["name"], ev["at"])


def _link_ev(s: Session, ev: Event) -> None:
    """A deleted folder's node brought back under a name (restore)."""
    _link(s, ev["parent"], ev["name"], ev["node"], ev["at"])


def _rename(s: Session, ev: Event) -> None:
    _unlink(s, ev["parent"], ev["name"], ev["at"])
    _link(s, ev["new_parent"], ev["new_name"], ev["node"], ev["at"])


def _times(s: Session, ev: Event) -> None:
    if ev.get("number"):
        raw.run(s, _SET_VERSION_MTIME, (ev["mtime"], ev["node"], ev["number"]))
    else:
        raw.run(s, _SET_MTIME, (ev["mtime"], ev["node"]))


def _purge(s: Session, ev: Event) -> None:
    """Prune: drop versions for good (retention, never a client)."""
    for node, number in ev["versions"]:
        vid = s.scalar(select(m.Version.id).where(m.Version.node_id == node, m.Version.number == number))
        if vid is not None:
            s.query(m.VersionChunk).filter(m.VersionChunk.version_id == vid).delete()
            s.query(m.Version).filter(versions.c.id == vid).delete()


def _props(s: Session, ev: Event) -> None:
    for name, value in ev["props"].items():
        s.query(m.Property).filter(m.Property.node_id == ev["node"], m.Property.name == name).delete()
        if value is not None:
            s.add(m.Property(node_id=ev["node"], name=name, value=value))


def _share_del(s: Session, ev: Event) -> None:
    """A share with no versions left goes away with its (empty) folders and grants."""
    ids = select(nodes.c.id).where(nodes.c.share_id == ev["share"])
    s.execute(dentries.delete().where(dentries.c.node_id.in_(ids)))
    s.execute(nodes.delete().where(nodes.c.share_id == ev["share"]))
    s.query(m.Grant).filter(m.Grant.share_id == ev["share"]).delete()
    s.execute(shares.delete().where(shares.c.id == ev["share"]))


def _user_set(s: Session, ev: Event) -> None:
    """User flags (e.g. create_shares)."""
    s.execute(update(m.User.__table__).where(m.User.name == ev["name"]).values(**ev["values"]))


def _access_key(s: Session, ev: Event) -> None:
    """An S3 access key added (sealed secret) or, without `sealed`, revoked."""
    s.query(m.AccessKey).filter(m.AccessKey.key_id == ev["key_id"]).delete()
    if ev.get("sealed"):
        s.add(m.AccessKey(key_id=ev["key_id"], user_name=ev["user"], sealed_secret=ev["sealed"], created_at=ev["at"]))


_APPLY = {
    "share": _share, "share_set": _share_set, "user": _user, "user_del": _user_del, "grant": _grant,
    "mkdir": _mkdir, "commit": _commit, "unlink": _unlink_ev, "link": _link_ev, "rename": _rename, "times": _times,
    "purge": _purge, "props": _props, "user_set": _user_set, "share_del": _share_del, "access_key": _access_key,
}


# -- derived state kept by every apply (so `recover` rebuilds it too) --------------------------
#: events that change who may log in or what a login may see
AUTH_OPS = frozenset({"user", "user_del", "grant", "share", "share_set"})
#: events that change a share's namespace at ev["at"] (what `.snapshots` lists)
NAMESPACE_OPS = frozenset({"mkdir", "commit", "unlink", "link", "rename", "create"})
auth_state, share_changes = table("auth_state"), table("share_changes")


def _after(s: Session, ev: Event) -> None:
    op = ev["op"]
    if op in AUTH_OPS:
        bump_auth_generation(s, ev["at"])
    if op in NAMESPACE_OPS:
        share = ev.get("share")
        if share is None:
            share = raw.scalar(s, _NODE_SHARE, (ev["parent"],))
        if share is not None:
            record_change(s, share, ev["at"] // 1_000_000)


def bump_auth_generation(s: Session, at: int) -> None:
    """Move the generation to max(current + 1, at): strictly increasing, and a replay of the
    same events (recover) reaches the same value as the live catalog."""
    cur = s.execute(select(auth_state.c.generation).where(auth_state.c.id == 1)).scalar()
    if cur is None:
        s.execute(insert(auth_state).values(id=1, generation=at))
    else:
        s.execute(update(auth_state).where(auth_state.c.id == 1).values(generation=max(cur + 1, at)))


def record_change(s: Session, share: int, at_s: int) -> None:
    """Remember that `share` changed during second `at_s` (once per second)."""
    raw.run(s, _INS_CHANGE, (share, at_s))


def _create(s: Session, ev: Event) -> None:
    """A file node linked under a name before it has any version (NFS CREATE)."""
    raw.run(s, _INS_NODE, (ev["node"], ev["share"], "file", ev["at"], None))
    _link(s, ev["parent"], ev["name"], ev["node"], ev["at"])


_APPLY["create"] = _create


def _commit_many(s: Session, evs: list[Event]) -> None:
    """A run of new versions (a tree upload's commit batch): node, dentry, parent-mtime, chunk
    and share-change rows as one executemany each; only the version rows go one by one (their
    ids are needed for the chunk rows).  Same rows and the same final values as `_commit` of
    each event in turn: the statements of different events touch different rows, except the
    parents' mtimes, which are set in event order (the last one wins either way), and a node
    is inserted before its version.  Copies and unlinking commits go through `_commit`."""
    if any("copy_of" in e or e.get("unlink") or e.get("share") is None for e in evs):
        for e in evs:
            apply(s, e)
        return
    deltas: dict[int, int] = {}
    for e in evs:                   # (before the version rows: an overwrite's delta reads the previous one)
        deltas[e["share"]] = deltas.get(e["share"], 0) + usage.commit_delta(s, e)
    usage.add_many(s, deltas)
    raw.many(s, _INS_NODE, [(e["node"], e["share"], "file", e["at"], None) for e in evs if e.get("new_node")])
    links = [e for e in evs if e.get("link")]
    raw.many(s, _INS_DENTRY, [(e["parent"], e["name"], _fold(e["name"]), e["node"], e["at"]) for e in links])
    raw.many(s, _SET_MTIME, [(e["at"], e["parent"]) for e in links])
    rows: list[tuple] = []
    made: list[tuple[int, bytes, list[int]]] = []
    inserted = 0
    for e in evs:
        vid, one = _insert_version(s, e)
        lens = e.get("lens")
        if lens and not one:
            ids = bytes.fromhex(e["ids"])
            made.append((vid, ids, lens))
            if len(lens) > 1000:                      # a large file: its own bounded inserts
                inserted += _insert_chunk_list(s, vid, ids, lens)
                continue
            off = 0
            for i, n in enumerate(lens):
                cid = ids[32 * i:32 * i + 32]
                rows.append((vid, off, n, cid, cid))
                off += n
            if len(rows) >= 10_000:
                inserted += raw.many(s, _INS_VCHUNK, rows)
                rows = []
    inserted += raw.many(s, _INS_VCHUNK, rows)
    _check_refs(s, made, inserted)
    raw.many(s, _INS_CHANGE, list(dict.fromkeys((e["share"], e["at"] // 1_000_000) for e in evs)))


_MANY = {"mkdir": _mkdir_many, "times": _times_many, "commit": _commit_many}
