"""The catalog side of SMB logins: NT hashes exist only for users enabled for SMB, follow
password changes, survive `recover`, and large staged updates are read back in bounded pieces."""
from __future__ import annotations

import pytest

from archive import Repository, errors
from archive.passwords import nt_hash


def test_nt_hash_known_value():
    assert nt_hash("password") == "8846f7eaee8fb117ad06bdd830b7586c"        # MS-NLMP's classic
    assert nt_hash("") == "31d6cfe0d16ae931b73c59d7e0c089c0"


def test_only_smb_users_have_an_nt_hash(repo):
    assert repo.smb_credentials("alice") is None                            # never enabled
    repo.add_user("sam", "sam-pw", smb=True)
    user, h = repo.smb_credentials("sam")
    assert user.name == "sam" and h.hex() == nt_hash("sam-pw")
    assert repo.smb_credentials("SAM")[0].name == "sam"                      # unambiguous case match
    assert repo.smb_credentials("") is None and repo.smb_credentials("nobody") is None


def test_set_smb_needs_the_password_and_off_forgets_the_hash(repo):
    with pytest.raises(errors.AuthFailed):
        repo.set_smb("alice", True, "wrong")
    assert repo.smb_credentials("alice") is None
    repo.set_smb("alice", True, "alice-pw")
    assert repo.smb_credentials("alice")[1].hex() == nt_hash("alice-pw")
    repo.authenticate("alice", "alice-pw")                                  # password untouched
    repo.set_password("alice", "new-pw")                                     # the NT hash follows
    assert repo.smb_credentials("alice")[1].hex() == nt_hash("new-pw")
    repo.set_password("bob", "bob-new")                                      # not SMB: stays without
    assert repo.smb_credentials("bob") is None
    repo.set_smb("alice", False)
    assert repo.smb_credentials("alice") is None
    repo.authenticate("alice", "new-pw")
    with pytest.raises(errors.NotFound):
        repo.set_smb("nobody", False)


def test_nt_hash_survives_recover(tmp_path):
    from conftest import CLI
    cli = CLI(tmp_path / "r")
    r = Repository.init(tmp_path / "r")           # the API: one CLI process (recover) instead of four
    r.add_user("sam", "sam-pw", smb=True)
    r.add_user("ann", "ann-pw")
    r.close()
    for suffix in ("", "-wal", "-shm"):
        (cli.repo_path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    cli("recover")
    r = Repository.open(tmp_path / "r")
    assert r.smb_credentials("sam")[1].hex() == nt_hash("sam-pw")
    assert r.smb_credentials("ann") is None
    r.close()


def test_update_reads_staged_extents_in_bounded_pieces(fs):
    from archive.streams import BATCH
    u = fs.open_update("/big.bin")
    u.pwrite(b"x" * (2 * BATCH + 5), 0)
    pieces = list(u._pieces(0, u.size))
    assert max(len(p) for p in pieces) <= BATCH and sum(len(p) for p in pieces) == 2 * BATCH + 5
    u.commit()
    assert fs.stat("/big.bin").size == 2 * BATCH + 5
