#!/bin/bash
# Time and peak RSS of pxb on a tree of many small files: memory must be bounded by the walk's
# lookahead and the lookahead cache, not by the size of the tree (issue 4 asks for the figures at
# ~80k files, the linux tree of bench/peers.sh, and at >= 500k).
#
#   bench/many-files.sh [FILES] [DIR]    default: 500000 files of 70 bytes in /var/tmp/pxb-bench/many
#   LOOKAHEAD=600000 bench/many-files.sh  also runs the no-change backups with that capacity
#
# The tree (FILES/500 directories of 500 files, fixed content) is made once and kept, and read
# once before each step (warm page cache). Steps, each
# into the same fresh datastore: a full backup (data mode), the first no-change backup (metadata
# mode, every file compared), and a second one (the unchanged tree is recognised). Results go to
# bench/results/many-files-<time>.csv and to stdout.
set -euo pipefail
FILES=${1:-500000}
DIR=${2:-/var/tmp/pxb-bench/many}
HERE=$(cd "$(dirname "$0")" && pwd)
PXB="$HERE/../bin/pxb.js"
TREE="$DIR/tree-$FILES"
WORK=$(mktemp -d "$DIR/run-XXXXXX" 2>/dev/null || { mkdir -p "$DIR" && mktemp -d "$DIR/run-XXXXXX"; })
CSV="$HERE/results/many-files-$(date -u +%Y%m%dT%H%M%SZ).csv"

if [ ! -d "$TREE" ]; then
  echo "making $FILES files in $TREE"
  python3 - "$TREE" "$FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
tmp = root + '.tmp'
per = 500
for d in range((n + per - 1) // per):
    sub = os.path.join(tmp, f'd{d:05d}')
    os.makedirs(sub)
    for f in range(min(per, n - d * per)):
        with open(os.path.join(sub, f'f{f:03d}.txt'), 'w') as fh:
            fh.write(f'file {d}/{f} ' + 'x' * 50 + '\n')
os.rename(tmp, root)
EOF
fi

echo "tool,step,files,lookahead,wall_s,rss_kib" > "$CSV"
# Warm cache, as bench/peers.sh: without it the first step read the tree's inodes from disk
# whenever they had been evicted (19.5 s for a full backup that takes 3.6 s warm).
warm() { find "$TREE" -type f -print0 | xargs -0 -r cat > /dev/null; }
run() { # run STEP LOOKAHEAD ARGS...
  local step=$1 la=$2; shift 2
  warm
  sync
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$tf" "$PXB" backup "root.pxar:$TREE" --repository "$WORK/repo" --backup-id many "$@" > "$WORK/$step.log" 2>&1 \
    || echo "  (pxb $step failed: see $WORK/$step.log)"
  read -r wall rss < <(tail -1 "$tf"); rm -f "$tf"
  echo "pxb,$step,$FILES,$la,$wall,$rss" >> "$CSV"
  printf '  %-22s %7.2f s  %6d MiB RSS\n' "$step" "$wall" $((rss / 1024))
  sleep 1 # snapshot times are seconds: the next backup must be newer
}

echo "pxb on $FILES files ($TREE), datastore $WORK/repo"
export PXB_CACHE_DIR="$WORK/cache"
run full default --change-detection-mode data
run nochange default
run nochange2 default
if [ -n "${LOOKAHEAD:-}" ]; then
  run "nochange-la$LOOKAHEAD" "$LOOKAHEAD" --lookahead-capacity "$LOOKAHEAD"
  run "nochange2-la$LOOKAHEAD" "$LOOKAHEAD" --lookahead-capacity "$LOOKAHEAD"
fi
rm -rf "$WORK"
echo "results: $CSV"
