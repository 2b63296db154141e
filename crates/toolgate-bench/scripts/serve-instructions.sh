#!/usr/bin/env bash
# Instructions `toolgate serve` executes per tools/call, counted by valgrind's
# callgrind: a figure that, unlike calls/s on a shared machine, does not move
# with the neighbours. Runs http-bench at concurrency 1 against toolgate under
# callgrind twice (SHORT and LONG calls; the difference leaves start-up and
# shutdown out) and prints (LONG - SHORT) / (LONG - SHORT calls).
#
#   crates/toolgate-bench/scripts/serve-instructions.sh [TOOLGATE] [SHORT] [LONG]
#
# Needs valgrind (apt-get install valgrind) and a release build:
#   cargo build --release -p toolgate -p toolgate-bench
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
toolgate="$(realpath "${1:-$root/target/release/toolgate}")"
short="${2:-200}"
long="${3:-2000}"
bench="$root/target/release/http-bench"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 2; }
[ -x "$bench" ] || { echo "$bench is missing: cargo build --release -p toolgate -p toolgate-bench" >&2; exit 2; }
work="$(mktemp -d)"
trap 'pkill -TERM -f "callgrind-out-file=$work/" 2>/dev/null || true; rm -rf "$work"' EXIT
# http-bench stops its toolgate with SIGKILL, which valgrind cannot pass on;
# the wrapper runs valgrind in the background, and callgrind writes its
# counts when this script stops it with SIGTERM.
cat > "$work/wrap.sh" <<WRAP
#!/usr/bin/env bash
valgrind --tool=callgrind --callgrind-out-file="\$CALLGRIND_OUT" "$toolgate" "\$@" &
wait
WRAP
chmod +x "$work/wrap.sh"
count() {
  local calls="$1" out="$work/cg.$1"
  CALLGRIND_OUT="$out" setsid "$bench" --toolgate "$work/wrap.sh" --target toolgate \
    --concurrency 1 --calls "$calls" --rounds 1 --warmup 0 \
    --toolgate-arg=--state --toolgate-arg=memory > "$work/bench.$calls.log" 2>&1 &
  wait $! || { cat "$work/bench.$calls.log" >&2; exit 2; }
  pkill -TERM -f "callgrind-out-file=$out" 2>/dev/null || true
  for _ in $(seq 1 100); do
    grep -qs '^summary:' "$out" && break
    sleep 0.1
  done
  awk '/^summary:/{print $2}' "$out"
}
a="$(count "$short")"
b="$(count "$long")"
echo "toolgate serve: $(( (b - a) / (long - short) )) instructions per tools/call ($toolgate; $short and $long calls: $a and $b)"
