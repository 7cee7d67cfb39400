"""protocols/nfs/cache.py: a read stores what it read unless one of its own keys changed (or
the cache was cleared) after it began; changes of other nodes no longer refuse it (nfs13)."""
from __future__ import annotations

import time

from protocols.nfs import cache as C
from protocols.nfs.cache import MetaCache

S = 1


def _begin(c: MetaCache) -> int:
    return c.epoch                       # what a reader notes before it reads the catalog


def test_a_change_of_another_node_does_not_refuse_a_read():
    c = MetaCache(ttl=60)
    folder, child = (S, 10, 0), (S, 11, 0)
    e = _begin(c)
    c.changed(S, 99)                     # a CREATE elsewhere lands while the LOOKUP reads
    c.put(child, "child", e, time.monotonic(), folder, "a")
    assert c.child(folder, "a") == "child"
    assert c.entry(child) == "child"


def test_a_change_of_the_read_node_or_its_folder_refuses_the_read():
    c = MetaCache(ttl=60)
    folder, child = (S, 10, 0), (S, 11, 0)
    e = _begin(c)
    c.changed(S, 11)                     # the node itself changed after the read began
    c.put(child, "old", e, time.monotonic(), folder, "a")
    assert c.entry(child) is None and c.child(folder, "a") is None
    e = _begin(c)
    c.changed(S, 10)                     # its folder's names changed after the read began
    c.put(child, "old", e, time.monotonic(), folder, "a")
    assert c.entry(child) is None and c.child(folder, "a") is None
    e = _begin(c)                        # a read begun after both changes stores
    c.put(child, "new", e, time.monotonic(), folder, "a")
    assert c.child(folder, "a") == "new"


def test_clear_refuses_every_read_begun_before_it():
    c = MetaCache(ttl=60)
    e = _begin(c)
    c.clear()                            # a folder moved: every path below it changed
    c.put((S, 11, 0), "old", e, time.monotonic())
    assert c.entry((S, 11, 0)) is None
    c.put((S, 11, 0), "new", _begin(c), time.monotonic())
    assert c.entry((S, 11, 0)) == "new"


def test_a_full_change_record_refuses_reads_begun_before_it_was_emptied(monkeypatch):
    monkeypatch.setattr(C, "CHANGED_LIMIT", 4)
    c = MetaCache(ttl=60)
    e = _begin(c)
    c.changed(S, 11)
    for n in range(100, 110):            # the record overflows: node 11's change is forgotten
        c.changed(S, n)
    assert len(c._changed_at) <= 4
    c.put((S, 11, 0), "old", e, time.monotonic())     # ... but a read begun before it is still refused
    assert c.entry((S, 11, 0)) is None
    e = _begin(c)
    c.changed(S, 200)
    c.put((S, 11, 0), "new", e, time.monotonic())
    assert c.entry((S, 11, 0)) == "new"


def test_a_name_change_forgets_that_name_and_the_folders_attributes_only():
    """CREATE/REMOVE (name_changed): the folder's other names stay known, a read of the changed
    name (or of the folder's attributes) begun before is refused, one of another name is not."""
    c = MetaCache(ttl=60)
    now = time.monotonic()
    folder = (S, 10, 0)
    c.put(folder, "folder", c.epoch, now)
    c.put((S, 11, 0), "a", c.epoch, now, folder, "a")
    c.put((S, 12, 0), "b", c.epoch, now, folder, "b")
    e = _begin(c)
    c.name_changed(S, 10, "b", 12, since=e)                     # REMOVE of b
    assert c.child(folder, "a") == "a"                   # kept
    assert c.child(folder, "b") is None and c.child_key(folder, "b") is None
    assert c.entry(folder) is None                       # the folder's mtime changed
    c.put((S, 12, 0), "stale b", e, now, folder, "b")    # a LOOKUP of b begun before: refused
    assert c.child(folder, "b") is None
    c.put(folder, "stale folder", e, now)                # the folder's old attributes: refused
    assert c.entry(folder) is None
    c.put((S, 13, 0), "c", e, now, folder, "c")          # another name read meanwhile: stored
    assert c.child(folder, "c") == "c"


def test_a_made_name_is_stored_unless_it_changed_since_the_call_began():
    c = MetaCache(ttl=60)
    now = time.monotonic()
    folder = (S, 10, 0)
    before = _begin(c)
    c.name_changed(S, 10, "new", 20, since=before, made=(20, "new entry", before, now))       # CREATE
    assert c.child(folder, "new") == "new entry"
    before = _begin(c)
    c.changed(S, 21)                                     # e.g. a pipelined REMOVE of it, first
    c.name_changed(S, 10, "other", 21, since=before, made=(21, "made", before, now))
    assert c.child(folder, "other") is None
    before = _begin(c)
    c.name_changed(S, 10, "x", 30, since=before)                     # another call changed the same name
    c.name_changed(S, 10, "x", 31, since=before, made=(31, "made x", before, now))
    assert c.child(folder, "x") is None


def test_a_name_change_is_the_folders_last_unless_another_change_of_the_folder_came_between():
    """name_changed's `alone`: the caller may take its own change's instant as the folder's
    new mtime (no re-read) when no other change of this server touched the folder since it
    began, whatever happened to other nodes meanwhile (a version commit, another folder)."""
    c = MetaCache(ttl=60)
    before = _begin(c)
    c.changed(S, 99)                                     # a file's version elsewhere
    c.name_changed(S, 50, "y", 51, since=before)         # another folder's CREATE
    assert c.name_changed(S, 10, "a", 11, since=before)[1] is True
    before = _begin(c)
    c.name_changed(S, 10, "b", 12, since=before)         # another CREATE in the same folder
    assert c.name_changed(S, 10, "c", 13, since=before)[1] is False
    before = _begin(c)
    c.changed(S, 10)                                     # a SETATTR / RENAME of the folder
    assert c.name_changed(S, 10, "d", 14, since=before)[1] is False
    before = _begin(c)
    c.clear()
    assert c.name_changed(S, 10, "e", 15, since=before)[1] is False
