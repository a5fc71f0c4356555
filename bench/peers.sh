#!/usr/bin/env bash
# Side-by-side backup benchmark: pxb vs borg vs restic on the same data, in the same run,
# steps interleaved tool by tool (write-heavy timings vary 2-4x between runs on shared machines:
# quote ratios from one run). Warm page cache (the source is read once before each step).
#
#   bench/peers.sh [DIR]          default DIR: /var/tmp/pxb-bench/src/linux-source-6.1
#   TOOLS="pxb borg restic" PASSES=1 bench/peers.sh
#
# Steps per tool: full backup, three no-change backups (nochange: the first incremental one;
# nochange3: the steady state, where pxb finds the tree unchanged against the archive the
# second one wrote again), backup after the 1% mutation of ../shared/peers/mutate.py (undone
# afterwards), full restore of the last snapshot. Each pass also times the lstat walk the
# issue compares with (`find -printf '%s %T@\n'`, tool "find", step "walk"), and the floor of
# the mutation step (tool "floor": bench/mutation-floor.mjs).
# Output: bench/results/peers-<date>.csv, a table on stdout (wall s, max RSS MiB, repo MiB), and
# the ratios against the issues' targets (bench/ratios.mjs, also runnable on an older CSV).
# Needs: apt-get install -y restic borgbackup time; data from ../shared/peers/prepare_data.sh.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SRC=${1:-/var/tmp/pxb-bench/src/linux-source-6.1}
PEERS=${PEERS:-$ROOT/../shared/peers}
[ -f "$PEERS/mutate.py" ] || { echo "peers.sh: no $PEERS/mutate.py (set PEERS=dir of ../shared/peers)" >&2; exit 2; }
WORK=${WORK:-/var/tmp/pxb-bench/work-peers}
TOOLS=${TOOLS:-"pxb borg restic"}
PASSES=${PASSES:-1}
OUT=$HERE/results
mkdir -p "$OUT" "$WORK"
CSV=$OUT/peers-$(date -u +%Y%m%dT%H%M%SZ).csv
echo "pass,tool,step,wall_s,maxrss_kib,repo_bytes" > "$CSV"
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export LC_ALL=C
PXB="$ROOT/bin/pxb.js"  # as installed: its launcher lines set the V8 options

warm() { find "$@" -type f -print0 | xargs -0 -r cat > /dev/null; }
run() { # run TOOL STEP cmd...
  local tool=$1 step=$2; shift 2
  warm "$SRC"
  # No step starts with the dirty pages of the steps before it: a full backup right after the
  # previous pass's restic restore (1.3 GB unwritten) took pxb 20 % longer, because its final
  # syncfs (PBS's sync level "filesystem") waited for restic's data too; no tool syncs after a
  # restore.
  sync
  local tf; tf=$(mktemp)
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$tf" "$@" > "$WORK/$tool-$step.log" 2>&1 || echo "  ($tool $step failed: see $WORK/$tool-$step.log)"
  t1=$(date +%s.%N)
  local wall rss repo
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
  rss=$(tail -1 "$tf"); rm -f "$tf"
  repo=$(du -sb "$WORK/$PASS/repo-$tool" 2>/dev/null | cut -f1)
  echo "$PASS,$tool,$step,$wall,$rss,${repo:-0}" >> "$CSV"
  printf '  %-7s %-9s %8.2f s  %6d MiB RSS  repo %6d MiB\n' "$tool" "$step" "$wall" $((rss / 1024)) $(( ${repo:-0} / 1048576 ))
}

backup() { # backup TOOL STEP
  local tool=$1 step=$2 repo=$WORK/$PASS/repo-$1
  case $tool in
    pxb)    run pxb "$step" $PXB backup "root.pxar:$SRC" --repository "$repo" --backup-id bench --output-format json ;;
    borg)   run borg "$step" borg create --compression lz4 "$repo::$step-$PASS" "$SRC" ;;
    restic) run restic "$step" restic -r "$repo" --cache-dir "$WORK/$PASS/restic-cache" backup -q "$SRC" ;;
  esac
}
restore() {
  local tool=$1 repo=$WORK/$PASS/repo-$1 dst=$WORK/$PASS/restore-$1
  mkdir -p "$dst"
  case $tool in
    pxb)    run pxb restore $PXB restore host/bench root.pxar "$dst" --repository "$repo" ;;
    borg)   (cd "$dst" && run borg restore borg extract "$repo::mutated-$PASS") ;;
    restic) run restic restore restic -r "$repo" --cache-dir "$WORK/$PASS/restic-cache" restore latest --target "$dst" ;;
  esac
}

# Nothing is deleted before or between the steps: ext4 skips recently deleted inodes when it
# allocates new ones (recently_deleted(), for 60-300 s after a delete), so a restore after an
# rm -rf of a 78k-file tree or of a datastore (65,536 chunk directories) spent most of its time
# in the kernel (pxb 15-26 s instead of 6-7 s, restic 23-27 s instead of 9-10 s). Each pass
# works in a directory of its own; leftovers are moved aside and everything is removed at the
# end. Allow ~5 minutes after a run (or any large delete) before timing restores again.
TRASH=$WORK/.trash-$$
mkdir -p "$TRASH"
for old in "$WORK"/[0-9]* "$WORK"/repo-* "$WORK"/restore* "$WORK"/restic-cache; do
  [ -e "$old" ] && mv "$old" "$TRASH/"
done
python3 "$PEERS/mutate.py" undo src >/dev/null 2>&1 || true
# Every pass starts with the same free memory: a pass keeps its repositories and restored trees
# until the end of the run, so by the third pass the page cache held nearly all memory and
# every restore paid for reclaiming pages (pxb's 2.4 s restores took 4-4.7 s there, borg's
# 7 s ones 10-11 s). Clean pages are dropped (not dentries and inodes: the walks stay warm), then
# the tools' binaries are read again; each step still reads its source first (warm cache).
fresh_memory() {
  sync
  if echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; then
    node --version > /dev/null; "$PXB" --version > /dev/null
    for t in $TOOLS; do case $t in borg) borg --version > /dev/null ;; restic) restic version > /dev/null ;; esac; done
  else
    echo "  (cannot drop the page cache without root: later passes may restore into a full one)"
  fi
}
for PASS in $PASSES; do
  echo "pass $PASS: $SRC"
  fresh_memory
  for t in $TOOLS; do
    mkdir -p "$WORK/$PASS"
    case $t in
      borg) borg init -e none "$WORK/$PASS/repo-borg" >/dev/null ;;
      restic) restic -r "$WORK/$PASS/repo-restic" init >/dev/null ;;
    esac
  done
  run find walk sh -c "find '$SRC' -printf '%s %T@\\n' > /dev/null"
  for step in full nochange nochange2 nochange3; do for t in $TOOLS; do backup "$t" "$step"; done; done
  python3 "$PEERS/mutate.py" apply src >/dev/null
  for t in $TOOLS; do backup "$t" mutated; done
  python3 "$PEERS/mutate.py" undo src >/dev/null
  for t in $TOOLS; do restore "$t"; done
  # The mutation step's floor: CPU any client writing PBS's archive spends at least (hash + zstd
  # of the new chunks and storing them, hashing what PBS's padding rule re-reads, reading it,
  # find's walk) over the cores (bench/mutation-floor.mjs), recorded as tool "floor", step
  # "mutated".
  if [[ " $TOOLS " == *" pxb "* ]]; then
    floor=$(node "$HERE/mutation-floor.mjs" "$WORK/$PASS/repo-pxb" --stats "$WORK/pxb-mutated.log" --source "$SRC" --json) &&
      secs=$(node -e 'console.log(JSON.parse(process.argv[1]).floorSeconds.toFixed(3))' "$floor") &&
      echo "$PASS,floor,mutated,$secs,0,0" >> "$CSV" &&
      printf '  %-7s %-9s %8.2f s  (CPU it cannot avoid / cores: bench/mutation-floor.mjs)\n' floor mutated "$secs"
  fi
done
rm -rf "$TRASH" "$WORK"/[0-9]*
echo "results: $CSV"
node "$HERE/ratios.mjs" "$CSV"   # per-pass ratios against the issues' targets, medians
