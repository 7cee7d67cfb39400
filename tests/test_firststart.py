"""The first start as the README documents it: `./serve.sh` on a stock Debian 12 (a system
Python that refuses `pip install`, maybe without its venv module), `bash tests/run.sh`, the
default repository (never the working folder) and the warning for a repository nobody can
log in to."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from archive import Repository
from archive.config import SYSTEM_REPO, default_repo_path
from serve_helpers import ServeProcess, archivectl, free_port

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new login: no venv, no EDGE_ARCHIVE_* left over from the tests."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EDGE_ARCHIVE_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "NOTIFY_SOCKET")}
    env.update(extra)
    return env


def copy_project(dest: Path) -> Path:
    """The project as a fresh clone has it (no .venv, no caches)."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in (".venv", ".git", "__pycache__", "var", ".pytest_cache", "work")
                or n.endswith(".egg-info")}
    for name in ("archive", "protocols", "systemd", "etc"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "serve.sh"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


# ----------------------------------------------------------------------------- the scripts

def test_scripts_are_shellcheck_clean():
    res = subprocess.run(["shellcheck", "-x", "serve.sh", "tests/run.sh", ".ci/run"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_readme_quick_start_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["./serve.sh", "bash tests/run.sh"]
    assert os.access(ROOT / "serve.sh", os.X_OK)
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "exec bash tests/run.sh"
    assert "docs/architecture.md" in readme and "../shared" not in readme
    assert (ROOT / "docs" / "architecture.md").is_file()


def fake_bin(tmp_path: Path, python: str, *, uid: int, apt: str | None) -> Path:
    """A PATH for a machine whose python3 cannot make a venv (Debian without python3-venv):
    a fake python3 (real one for version checks, Debian's ensurepip failure for `-m venv`),
    a fake `id`, and optionally a fake apt-get that logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mktemp", "rm", "sed", "cat", "cksum", "readlink", "env", "mkdir", "touch"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    (bin_dir / "python3").write_text(f"""#!{shutil.which('bash')}
if [ "$1" = -m ] && [ "$2" = venv ]; then
  echo "The virtual environment was not created successfully because ensurepip is not"
  echo "available.  On Debian/Ubuntu systems, you need to install the python3-venv"
  echo "package using the following command."
  mkdir -p "$3/bin"; exit 1
fi
exec {python} "$@"
""")
    (bin_dir / "id").write_text(f"#!{shutil.which('bash')}\necho {uid}\n")
    if apt is not None:
        (bin_dir / "apt-get").write_text(f"#!{shutil.which('bash')}\necho \"$*\" >> {tmp_path}/apt.log\n{apt}\n")
    for f in bin_dir.iterdir():
        if not f.is_symlink():
            f.chmod(0o755)
    return bin_dir


def run_serve_sh(tmp_path: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy2(ROOT / "serve.sh", proj / "serve.sh")
    (proj / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return subprocess.run([str(bin_dir / "bash"), str(proj / "serve.sh")], cwd=tmp_path, capture_output=True,
                          text=True, env=clean_env(PATH=str(bin_dir)), timeout=60)


def test_serve_sh_without_venv_module_as_a_user_prints_the_exact_command(tmp_path):
    bin_dir = fake_bin(tmp_path, sys.executable, uid=1000, apt="exit 0")
    res = run_serve_sh(tmp_path, bin_dir)
    assert res.returncode == 1
    assert "Run:\n  sudo apt-get install python3-venv\nthen run this command again." in res.stderr
    assert "ensurepip is not" in res.stderr              # what python said, passed on
    assert not (tmp_path / "apt.log").exists()          # a user's run never calls apt-get
    assert not (tmp_path / "proj" / ".venv").exists()   # no half-made environment left


def test_serve_sh_without_venv_module_as_root_installs_python3_venv_waiting_for_the_lock(tmp_path):
    # the first install fails (empty package lists in a fresh container): update, then retry
    bin_dir = fake_bin(tmp_path, sys.executable, uid=0,
                       apt='case "$*" in install*) [ -e "${0%/*}/../updated" ] || exit 100;; '
                           'update*) touch "${0%/*}/../updated";; esac')
    res = run_serve_sh(tmp_path, bin_dir)
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls == ["install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends python3-venv",
                     "update -qq -o DPkg::Lock::Timeout=600",
                     "install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends python3-venv"]
    # the fake package changes nothing, so the script must say so rather than go on
    assert res.returncode == 1
    assert "installing python3-venv (apt-get)" in res.stderr
    assert "Installing python3-venv did not help" in res.stderr


def test_serve_sh_on_a_distribution_without_apt_names_the_missing_module(tmp_path):
    bin_dir = fake_bin(tmp_path, sys.executable, uid=1000, apt=None)
    res = run_serve_sh(tmp_path, bin_dir)
    assert res.returncode == 1
    assert "install your distribution's package for\nPython's venv module" in res.stderr


def test_serve_sh_refuses_a_python_older_than_3_11(tmp_path):
    bin_dir = fake_bin(tmp_path, sys.executable, uid=1000, apt="exit 0")
    (bin_dir / "python3").write_text(f"#!{shutil.which('bash')}\nexit 1\n")   # "sys.version_info < (3, 11)"
    res = run_serve_sh(tmp_path, bin_dir)
    assert res.returncode == 1
    assert "Edge Archive needs Python 3.11 or newer" in res.stderr


def debian_python() -> str:
    """Debian's own python3 (externally managed); the test's interpreter when there is none
    that is recent enough (another distribution)."""
    py = shutil.which("python3", path=DEBIAN_PATH)
    ok = py and subprocess.run([py, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"]).returncode == 0
    return py if ok else sys.executable


def test_serve_sh_on_the_system_python_makes_a_venv_serves_and_the_cli_finds_the_repository(tmp_path):
    """The README's first command, as written, on the machine's own python3 (on Debian 12 it
    refuses a system-wide `pip install`): it makes .venv, installs the project, and serves the
    default repository, which archivectl then finds from any other folder."""
    py = debian_python()
    bin_dir = tmp_path / "pybin"
    bin_dir.mkdir()
    os.symlink(py, bin_dir / "python3")
    path = f"{bin_dir}:{DEBIAN_PATH}"
    if Path(py).parent == Path("/usr/bin") and list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED")):
        refused = subprocess.run([py, "-m", "pip", "install", "--dry-run", "edge-archive"], capture_output=True,
                                 text=True, cwd=tmp_path)
        assert refused.returncode != 0       # the old quick start (`python3 -m pip install -e .`) fails here

    proj = copy_project(tmp_path / "clone")
    data, somewhere, elsewhere = tmp_path / "data", tmp_path / "somewhere", tmp_path / "elsewhere"
    somewhere.mkdir()
    elsewhere.mkdir()
    ftp_port = free_port()
    env = clean_env(PATH=path, XDG_DATA_HOME=str(data), EDGE_ARCHIVE_FTP_LISTEN=f"127.0.0.1:{ftp_port}",
                    EDGE_ARCHIVE_WEBDAV_LISTEN=f"127.0.0.1:{free_port()}", EDGE_ARCHIVE_METRICS_ENABLED="false")
    p = ServeProcess(["bash", str(proj / "serve.sh")], cwd=str(somewhere), env=env, tmp=str(tmp_path))
    try:
        p.wait_for("Stop with Ctrl-C", where="stdout", timeout=600)
        out = p.stdout()
        repo = data / "edge-archive"
        assert f"Created repository {repo}" in out and f"Serving {repo}" in out
        password = re.search(r"password: (\S+)", out).group(1)
        assert p.urls()["ftp"] == f"ftp://127.0.0.1:{ftp_port}"
        src = tmp_path / "hello.txt"
        src.write_bytes(b"hello from serve.sh\n")
        res = subprocess.run(["curl", "-sS", "-T", str(src),
                              f"ftp://admin:{password}@127.0.0.1:{ftp_port}/archive/hello.txt"], capture_output=True)
        assert res.returncode == 0, res.stderr
        p.proc.send_signal(signal.SIGTERM)
        assert p.finish() == 0
    finally:
        p.kill()
    assert "Creating" in p.stderr() and str(proj / ".venv") in p.stderr()
    venv_python = proj / ".venv" / "bin" / "python"
    assert venv_python.exists() and not (somewhere / "var").exists()
    # another folder, no --repo: the same repository
    ls = subprocess.run([str(proj / ".venv" / "bin" / "archivectl"), "ls", "/archive", "--json"], cwd=elsewhere,
                        capture_output=True, text=True, env=env)
    assert ls.returncode == 0, ls.stderr
    assert [(e["name"], e["size"]) for e in json.loads(ls.stdout)] == [("hello.txt", 20)]
    # the second start reuses the environment without pip
    again = subprocess.run(["bash", str(proj / "serve.sh"), "--help"], cwd=elsewhere, env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "Serve the repository" in again.stdout
    assert "Installing" not in again.stderr and "Creating" not in again.stderr


def test_run_sh_fails_when_no_test_is_collected_and_ends_with_the_pytest_summary():
    res = subprocess.run(["bash", "tests/run.sh", "tests/test_firststart.py", "-k", "no_test_has_this_name"],
                         cwd=ROOT, capture_output=True, text=True, env=clean_env(), timeout=600)
    assert res.returncode == 5, res.stdout + res.stderr      # pytest's "no tests collected"
    last = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=*\s*\d+ deselected in [\d.]+s\s*=*", last), last


# ----------------------------------------------------------------------------- the default repository

@pytest.mark.parametrize("env, euid, user, expected", [
    ({"XDG_DATA_HOME": "/x/data", "HOME": "/home/me"}, 1000, "me", "/x/data/edge-archive"),
    ({"HOME": "/home/me"}, 1000, "me", "/home/me/.local/share/edge-archive"),
    ({"XDG_DATA_HOME": "relative/ignored", "HOME": "/home/me"}, 1000, "me", "/home/me/.local/share/edge-archive"),
    ({"HOME": "/root"}, 0, "root", str(SYSTEM_REPO)),
    ({"HOME": "/var/lib/edge-archive"}, 998, "edge-archive", str(SYSTEM_REPO)),
    ({"XDG_DATA_HOME": "/t/d", "HOME": "/root"}, 0, "root", "/t/d/edge-archive"),
])
def test_default_repository_never_depends_on_the_working_folder(env, euid, user, expected):
    assert str(default_repo_path(env, euid, user)) == expected


def test_systemd_units_serve_the_system_repository():
    for unit in ("edge-archive.service", "edge-archive@.service"):
        text = (ROOT / "systemd" / unit).read_text()
        assert "User=edge-archive" in text and "StateDirectory=edge-archive" in text
        assert "WorkingDirectory=/var/lib/edge-archive" in text


def test_cli_commands_from_any_folder_reach_the_default_repository(tmp_path):
    data = tmp_path / "data"
    env = clean_env(XDG_DATA_HOME=str(data))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()

    def ctl(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(archivectl() + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                              input=input, timeout=120)

    missing = ctl("ls", "/", cwd=a)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"Error: no repository at {data / 'edge-archive'} (the default for this account, whatever the folder): "
        "create it with `archivectl init` or a first `archivectl serve`, or name another with --repo DIR or "
        "EDGE_ARCHIVE_REPO")
    res = ctl("init", cwd=a)
    assert res.returncode == 0 and f"initialized repository at {data / 'edge-archive'}" in res.stdout
    assert ctl("share", "add", "office", cwd=a).returncode == 0
    assert ctl("put", "-", "/office/n.txt", cwd=b, input="from b").returncode == 0
    got = ctl("get", "/office/n.txt", "-", cwd=a)
    assert got.stdout == "from b"
    assert not (a / "var").exists() and not (b / "var").exists()


def test_a_relative_repository_path_in_the_config_is_relative_to_the_file(tmp_path):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    Repository.init(conf_dir / "repo").close()
    (conf_dir / "archive.toml").write_text('[repository]\npath = "repo"\n')
    res = subprocess.run(archivectl() + ["--config", str(conf_dir / "archive.toml"), "share", "add", "s"],
                         cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    r = Repository.open(conf_dir / "repo")
    try:
        assert [s.name for s in r.list_shares()] == ["s"]
    finally:
        r.close()


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(XDG_DATA_HOME=str(tmp_path / "data"), EDGE_ARCHIVE_FTP_LISTEN=f"127.0.0.1:{free_port()}",
                     EDGE_ARCHIVE_WEBDAV_LISTEN=f"127.0.0.1:{free_port()}", EDGE_ARCHIVE_METRICS_ENABLED="false",
                     **extra)


def test_an_old_repository_in_the_working_folder_is_not_shadowed_by_a_new_empty_one(tmp_path):
    """Before, the default was ./var/edge-archive: starting from that folder must not create a
    second, empty repository with a new admin password ("my data is gone")."""
    legacy = tmp_path / "var" / "edge-archive"
    Repository.init(legacy).close()
    res = subprocess.run(archivectl() + ["serve", "--only", "ftp"], cwd=tmp_path, env=serve_env(tmp_path),
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 1, res.stdout + res.stderr
    assert (f"found a repository at {legacy} (the old default, relative to this folder) and none at the "
            f"default {tmp_path / 'data' / 'edge-archive'}: serve it with `archivectl --repo {legacy} serve`"
            in res.stderr)
    assert "password" not in res.stdout and not (tmp_path / "data" / "edge-archive").exists()


# ----------------------------------------------------------------------------- nobody can log in

def test_serve_warns_when_nobody_can_log_in_and_prints_the_fix(tmp_path):
    repo = str(tmp_path / "repo")
    env = serve_env(tmp_path)

    def ctl(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(archivectl() + ["--repo", repo, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, input=input, timeout=120)

    assert ctl("init").returncode == 0 and ctl("share", "add", "office").returncode == 0   # the systemd recipe
    p = ServeProcess(archivectl() + ["--repo", repo, "serve", "--only", "ftp"], cwd=str(tmp_path), env=env,
                     tmp=str(tmp_path))
    try:
        p.ready()
        fix = f"archivectl --repo {repo} user add admin && archivectl --repo {repo} grant admin office rw"
        assert (f"Warning: repository {repo} has no user, so nobody can log in.\n  Fix it with: {fix}"
                in p.stderr())
        p.proc.send_signal(signal.SIGTERM)
        assert p.finish() == 0
    finally:
        p.kill()
    # the printed fix works (with the password from stdin instead of a prompt)
    assert ctl("user", "add", "admin", "--password-stdin", input="pw\n").returncode == 0
    p2 = ServeProcess(archivectl() + ["--repo", repo, "serve", "--only", "ftp"], cwd=str(tmp_path), env=env,
                      tmp=str(tmp_path), tag="granted-none")
    try:
        p2.ready()
        assert (f"has users but none is granted a share, so no login can see any file.\n"
                f"  Fix it with: archivectl --repo {repo} grant admin office rw") in p2.stderr()
        p2.proc.send_signal(signal.SIGTERM)
        assert p2.finish() == 0
    finally:
        p2.kill()
    grant = fix.split(" && ")[1].split()[1:]          # the second half of the printed fix, verbatim
    assert subprocess.run(archivectl() + grant, env=env, capture_output=True, cwd=tmp_path).returncode == 0
    p3 = ServeProcess(archivectl() + ["--repo", repo, "serve", "--only", "ftp"], cwd=str(tmp_path), env=env,
                      tmp=str(tmp_path), tag="fixed")
    try:
        p3.ready()
        assert "Warning" not in p3.stderr()
        p3.proc.send_signal(signal.SIGTERM)
        assert p3.finish() == 0
    finally:
        p3.kill()
