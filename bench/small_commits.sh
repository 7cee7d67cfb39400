#!/bin/bash
# Small-file commit cost of one code tree (issue 8: the commit chain must not slow commits down).
# usage: bench/small_commits.sh LABEL [PYTHONPATH of another archive/ tree, e.g. a `git archive` of main]
# One round: a tree `archivectl put` of 500 small files, then 200 single-file API commits.
set -e
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$HERE/.venv/bin/python}
export PYTHONPATH=$2
WORK=${WORK:-/tmp/edge-small-commits}
mkdir -p "$WORK"
if [ ! -d "$WORK/src" ]; then
  mkdir "$WORK/src"
  $PY -c "import os; [open(f'$WORK/src/f{i:04d}.txt', 'wb').write(os.urandom(200) + b'x' * (i % 1000)) for i in range(500)]"
fi
R=$WORK/repo-$1; rm -rf "$R"
EDGE_ARCHIVE_REPO=$R $PY -m archive init >/dev/null
EDGE_ARCHIVE_REPO=$R $PY -m archive share add s >/dev/null
s=$(date +%s.%N); EDGE_ARCHIVE_REPO=$R $PY -m archive put "$WORK/src" /s/tree >/dev/null; e=$(date +%s.%N)
$PY - "$R" "$1" "$s" "$e" <<'PYEOF'
import sys, time, archive
from archive import Repository
repo, label, s, e = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
r = Repository.open(repo); fs = r.share("s")
t = time.perf_counter()
for i in range(200):
    w = fs.open_write(f"/single{i}"); w.write(b"x" * 100); w.commit()
d = time.perf_counter() - t
r.close()
print(f"{label} tree500 {e - s:.2f} single200 {d:.2f}  ({archive.__file__})")
PYEOF
