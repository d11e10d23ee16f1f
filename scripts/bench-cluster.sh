#!/usr/bin/env bash
# The KV service benchmark of BENCHMARKS.md ("KV service on 3 local nodes"):
# starts 3 `flotilla server` processes on free 127.0.0.1 ports in a temp
# dir, loads them with `flotilla bench kv`, and measures idle CPU per node
# with `flotilla bench idle`. Builds nothing: pass the binary.
#
# Usage: bash scripts/bench-cluster.sh BINARY [load|idle|all]   (default: all)
#   load: 3 nodes with --shards 64 (SHARDS); put then get at concurrency
#         1, 64, 256 (CONCURRENCY), BENCH_SECONDS s each after WARMUP s. During each
#         measured window the nodes' CPU is sampled (`bench idle --threads`)
#         and, when perf can count syscall tracepoints, their fsync calls.
#   idle: 3 nodes with --shards 1000, settle 20 s, sample 30 s; write
#         IDLE_KEYS (100,000) keys so every shard has served a write, settle
#         and sample again. Then the same with 3 fresh nodes and --shards
#         10000, settling 30 s (IDLE_SHARDS, IDLE_SECONDS).
# Environment (all optional): SHARDS=64 CONCURRENCY="1 64 256"
#   WORKLOADS="put get" BENCH_SECONDS=10 WARMUP=2 VALUE_SIZE=128 KEYS=100000
#   IDLE_SHARDS="1000 10000" IDLE_SECONDS=30 IDLE_KEYS=100000
#   QUIET_WAIT=0 (seconds to wait, before each measurement, for other
#   processes on a shared machine to go quiet) KEEP=1 (keep the temp dir).
# Every process started here is stopped by PID on exit (trap).
set -euo pipefail

bin="${1:?usage: bench-cluster.sh BINARY [load|idle|all]}"
mode="${2:-all}"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
[ -x "$bin" ] || { echo "not executable: $bin" >&2; exit 2; }

shards="${SHARDS:-64}"
concurrency="${CONCURRENCY:-1 64 256}"
workloads="${WORKLOADS:-put get}"
run_seconds="${BENCH_SECONDS:-10}"
warmup="${WARMUP:-2}"
value_size="${VALUE_SIZE:-128}"
keys="${KEYS:-100000}"
idle_shards="${IDLE_SHARDS:-1000 10000}"
idle_seconds="${IDLE_SECONDS:-30}"
idle_keys="${IDLE_KEYS:-100000}"

work="$(mktemp -d /tmp/flotilla-bench.XXXXXX)"
pids=()
helpers=()

stop_nodes() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "node pid $pid did not stop within 10 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}

cleanup() {
    local pid
    for pid in "${helpers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    stop_nodes
    if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free ports: bind port 0 and read what the kernel chose (then release it).
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()' "$1"
}

# Other processes using >= 5% of a core right now (a 1-second top sample),
# as "name pct" lines; the nodes are idle between runs.
others_busy() {
    command -v top >/dev/null 2>&1 || return 0
    top -b -n 2 -d 1 -w 200 | awk '/^top -/ { n++ } n == 2 && /^ *[0-9]+ / && $9 + 0 >= 5 { print $12, $9 }'
}

# On a shared machine: wait up to QUIET_WAIT seconds (default 0) until no
# other process uses 5% of a core, before a measurement.
wait_quiet() {
    local limit="${QUIET_WAIT:-0}" started=$SECONDS
    [ "$limit" -gt 0 ] || return 0
    while [ -n "$(others_busy)" ] && [ $((SECONDS - started)) -lt "$limit" ]; do sleep 5; done
    [ $((SECONDS - started)) -lt 2 ] || echo "# waited $((SECONDS - started)) s for other processes to go quiet"
}

machine() {
    echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'); nproc $(nproc); load average$(uptime | sed 's/.*load average//')"
    others_busy | head -n 5 | awk '{ printf "#   busy: %s %s%%\n", $1, $2 }'
}

# start_cluster SHARDS NAME: 3 nodes; sets endpoints, pids, logs.
start_cluster() {
    local count="$1" name="$2" i
    read -r -a ports <<<"$(free_ports 3)"
    local members="1=127.0.0.1:${ports[0]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}"
    endpoints="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    for i in 1 2 3; do
        mkdir -p "$work/$name/n$i"
        NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "$bin" server --id "$i" --listen "127.0.0.1:${ports[$((i - 1))]}" \
            --data-dir "$work/$name/n$i" --initial-cluster "$members" --shards "$count" \
            >"$work/$name/n$i.log" 2>&1 &
        pids+=("$!")
    done
    echo "started $name: nodes ${pids[*]} on $endpoints, --shards $count (logs: $work/$name/n*.log)"
}

# Waits until a put succeeds (up to $1 seconds).
wait_ready() {
    local limit="$1" started=$SECONDS pid
    until "$bin" kv --endpoints "$endpoints" put bench-ready yes >/dev/null 2>&1; do
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "node pid $pid exited during start-up" >&2; tail -n 20 "$work"/*/n*.log >&2; exit 1; }
        done
        if [ $((SECONDS - started)) -ge "$limit" ]; then
            echo "no put succeeded within $limit s" >&2
            exit 1
        fi
        sleep 1
    done
    echo "first put succeeded $((SECONDS - started)) s after waiting began"
}

node_pids() { local IFS=,; echo "${pids[*]}"; }

perf_ok=0
if command -v perf >/dev/null 2>&1 && perf stat -e syscalls:sys_enter_fdatasync -- true >/dev/null 2>&1; then
    perf_ok=1
fi

# The machine's CPU counters: "busy idle" in ticks (iowait counts as idle).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }

# During a load run's measured window: each node's CPU (by thread), the
# whole machine's, and, if perf works, each node's fsync/fdatasync calls.
sample_during_load() {
    local out="$1" pid
    sleep "$warmup"
    machine_ticks >"$out.machine"
    "$bin" bench idle --pids "$(node_pids)" --seconds "$run_seconds" --threads >"$out.cpu" 2>/dev/null &
    local sampler=$!
    if [ "$perf_ok" = 1 ]; then
        for pid in "${pids[@]}"; do
            perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync -p "$pid" \
                -- sleep "$run_seconds" 2>"$out.perf.$pid" >/dev/null &
        done
    fi
    sleep "$run_seconds"
    machine_ticks >>"$out.machine"
    wait
}

run_load() {
    echo "== load: 3 nodes, --shards $shards"
    start_cluster "$shards" load
    wait_ready 120
    local preloaded=0 workload c flags out pid
    for workload in $workloads; do
        for c in $concurrency; do
            flags=()
            if [ "$workload" != put ] && [ "$preloaded" = 1 ]; then flags+=(--no-preload); fi
            out="$work/load/$workload-$c"
            echo
            wait_quiet
            machine
            # Write the keys once, before the first read run, so that the
            # node sampler below starts with the measured window.
            if [ "$workload" != put ] && [ "$preloaded" = 0 ]; then
                "$bin" bench kv --endpoints "$endpoints" --workload "$workload" --concurrency 1 --seconds 0.1 \
                    --warmup 0 --value-size "$value_size" --keys "$keys" >"$out.preload" 2>&1 || true
                grep '^preload' "$out.preload" || cat "$out.preload"
                flags+=(--no-preload)
            fi
            if [ "$workload" != put ]; then preloaded=1; fi
            echo "\$ flotilla bench kv --endpoints $endpoints --workload $workload --concurrency $c --seconds $run_seconds --warmup $warmup --value-size $value_size --keys $keys ${flags[*]:-}"
            sample_during_load "$out" &
            local sampler=$!
            helpers+=("$sampler")
            "$bin" bench kv --endpoints "$endpoints" --workload "$workload" --concurrency "$c" \
                --seconds "$run_seconds" --warmup "$warmup" --value-size "$value_size" --keys "$keys" "${flags[@]}" \
                2>"$out.progress" | tee "$out.txt"
            wait "$sampler" || true
            echo "node CPU during the measured window:"
            sed 's/^/  /' "$out.cpu"
            # Whole machine, ours (3 nodes + load tool) and the rest, in % of one core.
            local ours
            ours=$(awk '$1 ~ /^[0-9]+$/ { sum += $3 } END { print sum + 0 }' "$out.cpu")
            ours=$(awk -v n="$ours" '/load tool CPU/ { gsub("%", "", $7); n += $7 } END { print n }' "$out.txt")
            awk -v cores="$(nproc)" -v ours="$ours" 'NR == 1 { b = $1; i = $2 } NR == 2 { busy = $1 - b; idle = $2 - i }
                END { all = 100 * cores * busy / (busy + idle);
                      printf "  whole machine: %.0f%% of %d00%% busy; nodes + load tool %.0f%%, everything else %.0f%%\n", all, cores, ours, all - ours }' "$out.machine"
            if [ "$perf_ok" = 1 ]; then
                for pid in "${pids[@]}"; do
                    awk -F, -v pid="$pid" -v s="$run_seconds" '$3 ~ /sys_enter_f/ { n += $1 } END { printf "  node pid %s: %.0f fsync+fdatasync calls/s\n", pid, n / s }' "$out.perf.$pid"
                done
            fi
        done
    done
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || echo "WARNING: node pid $pid is no longer running" >&2
    done
    echo
    echo "node log lines at WARN or ERROR during the load runs:"
    grep -hE 'WARN|ERROR' "$work"/load/n*.log | head -n 40 || echo "  (none)"
    stop_nodes
}

run_idle() {
    local count settle
    for count in $idle_shards; do
        settle=20
        [ "$count" -ge 10000 ] && settle=30
        echo
        echo "== idle: 3 nodes, --shards $count"
        local began=$SECONDS
        start_cluster "$count" "idle-$count"
        wait_ready 1800
        echo "cluster of $count shards took $((SECONDS - began)) s from start to its first put; settling $settle s"
        sleep "$settle"
        wait_quiet
        machine
        echo "\$ flotilla bench idle --pids $(node_pids) --seconds $idle_seconds --threads   # fresh cluster"
        "$bin" bench idle --pids "$(node_pids)" --seconds "$idle_seconds" --threads
        # Then every shard serves a write (IDLE_KEYS keys over the ring), and
        # the groups must go quiet again.
        echo "writing $idle_keys keys (every shard gets some) ..."
        "$bin" bench kv --endpoints "$endpoints" --workload get --concurrency 1 --seconds 0.1 --warmup 0 \
            --keys "$idle_keys" --value-size "$value_size" 2>/dev/null | grep '^preload' || true
        echo "settling $settle s"
        sleep "$settle"
        wait_quiet
        machine
        echo "\$ flotilla bench idle --pids $(node_pids) --seconds $idle_seconds --threads   # after a write to every shard"
        "$bin" bench idle --pids "$(node_pids)" --seconds "$idle_seconds" --threads
        echo "node RSS (kB): $(for pid in "${pids[@]}"; do awk '/VmRSS/ {printf "%s ", $2}' "/proc/$pid/status"; done)"
        grep -hE 'WARN|ERROR' "$work/idle-$count"/n*.log | head -n 20 || true
        stop_nodes
    done
}

echo "binary: $bin"
echo "work dir: $work"
case "$mode" in
    load) run_load ;;
    idle) run_idle ;;
    all) run_load; run_idle ;;
    *) echo "unknown mode $mode (load|idle|all)" >&2; exit 2 ;;
esac
