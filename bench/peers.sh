#!/usr/bin/env bash
# Side-by-side backup benchmark: pxb vs borg vs restic on the same data, in the same run,
# steps interleaved tool by tool (write-heavy timings vary 2-4x between runs on shared machines:
# quote ratios from one run). Warm page cache (the source is read once before each step).
#
#   bench/peers.sh [DIR]          default DIR: /var/tmp/pxb-bench/src/linux-source-6.1
#   TOOLS="pxb borg restic" PASSES=1 bench/peers.sh
#
# Steps per tool: full backup, no-change backup, backup after the 1% mutation of
# ../shared/peers/mutate.py (undone afterwards), full restore of the last snapshot.
# Output: bench/results/peers-<date>.csv and a table on stdout (wall s, max RSS MiB, repo MiB).
# Needs: apt-get install -y restic borgbackup time; data from ../shared/peers/prepare_data.sh.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SRC=${1:-/var/tmp/pxb-bench/src/linux-source-6.1}
PEERS=${PEERS:-$ROOT/../shared/peers}
WORK=${WORK:-/var/tmp/pxb-bench/work-peers}
TOOLS=${TOOLS:-"pxb borg restic"}
PASSES=${PASSES:-1}
OUT=$HERE/results
mkdir -p "$OUT" "$WORK"
CSV=$OUT/peers-$(date -u +%Y%m%dT%H%M%SZ).csv
echo "pass,tool,step,wall_s,maxrss_kib,repo_bytes" > "$CSV"
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export LC_ALL=C
PXB="$ROOT/bin/pxb.js"  # as installed: its shebang sets the V8 heap options

warm() { find "$@" -type f -print0 | xargs -0 -r cat > /dev/null; }
run() { # run TOOL STEP cmd...
  local tool=$1 step=$2; shift 2
  warm "$SRC"
  local tf; tf=$(mktemp)
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$tf" "$@" > "$WORK/$tool-$step.log" 2>&1 || echo "  ($tool $step failed: see $WORK/$tool-$step.log)"
  t1=$(date +%s.%N)
  local wall rss repo
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
  rss=$(tail -1 "$tf"); rm -f "$tf"
  repo=$(du -sb "$WORK/repo-$tool" 2>/dev/null | cut -f1)
  echo "$PASS,$tool,$step,$wall,$rss,${repo:-0}" >> "$CSV"
  printf '  %-7s %-9s %8.2f s  %6d MiB RSS  repo %6d MiB\n' "$tool" "$step" "$wall" $((rss / 1024)) $(( ${repo:-0} / 1048576 ))
}

backup() { # backup TOOL STEP
  local tool=$1 step=$2 repo=$WORK/repo-$1
  case $tool in
    pxb)    run pxb "$step" $PXB backup "root.pxar:$SRC" --repository "$repo" --backup-id bench ;;
    borg)   run borg "$step" borg create --compression lz4 "$repo::$step-$PASS" "$SRC" ;;
    restic) run restic "$step" restic -r "$repo" --cache-dir "$WORK/restic-cache" backup -q "$SRC" ;;
  esac
}
restore() {
  # Each restore gets a directory of its own, all removed at the end: ext4 skips recently
  # deleted inodes when it allocates (recently_deleted()), so a restore right after the 78k-file
  # rm -rf of the previous one spent most of its time in the kernel (pxb 15-26 s instead of
  # 6-7 s, the same for borg and restic). sync: no restore starts with the dirty pages of the
  # steps before it (no tool syncs after a restore).
  local tool=$1 repo=$WORK/repo-$1 dst=$WORK/restore/$PASS-$1
  mkdir -p "$dst"
  sync
  case $tool in
    pxb)    run pxb restore $PXB restore host/bench root.pxar "$dst" --repository "$repo" ;;
    borg)   (cd "$dst" && run borg restore borg extract "$repo::mutated-$PASS") ;;
    restic) run restic restore restic -r "$repo" --cache-dir "$WORK/restic-cache" restore latest --target "$dst" ;;
  esac
}

rm -rf "$WORK/restore" "$WORK"/restore-*
python3 "$PEERS/mutate.py" undo src >/dev/null 2>&1 || true
for PASS in $PASSES; do
  echo "pass $PASS: $SRC"
  for t in $TOOLS; do
    rm -rf "$WORK/repo-$t" "$WORK/restic-cache"
    case $t in
      borg) borg init -e none "$WORK/repo-borg" >/dev/null ;;
      restic) restic -r "$WORK/repo-restic" init >/dev/null ;;
    esac
  done
  for step in full nochange; do for t in $TOOLS; do backup "$t" "$step"; done; done
  python3 "$PEERS/mutate.py" apply src >/dev/null
  for t in $TOOLS; do backup "$t" mutated; done
  python3 "$PEERS/mutate.py" undo src >/dev/null
  for t in $TOOLS; do restore "$t"; done
done
rm -rf "$WORK/restore"
echo "results: $CSV"
