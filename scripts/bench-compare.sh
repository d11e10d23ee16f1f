#!/usr/bin/env bash
# Flotilla and etcd 3.4 side by side, in one run on one machine (BENCHMARKS.md,
# "Flotilla and etcd"). Starts `flotilla demo` (3 nodes in one process, SHARDS
# shards) and 3 etcd members (scripts/bench-etcd.sh, etcd's default fsync) on
# 127.0.0.1, writes KEYS keys into each, then for every workload and
# concurrency runs `flotilla bench` against Flotilla and right after against
# etcd (so drift in other load on a shared machine hits both alike). Per run it
# keeps the bench's JSON and the CPU the cluster's processes used in the
# measured window (utime + stime from /proc/PID/stat), and at the end prints a
# Markdown table with CPU-seconds per 1,000 operations and the Flotilla/etcd
# ratios. Builds nothing: pass the binary. Stops everything it started by PID.
#
# Usage: bash scripts/bench-compare.sh FLOTILLA_BINARY [OUT_DIR]
# Environment (optional): WORKLOADS="put get mixed" CONCURRENCY="1 64 256"
#   DURATION=10 WARMUP=2 (seconds) KEYS=100000 VALUE_SIZE=128 SHARDS=64
#   SYSTEMS="flotilla etcd" QUIET_WAIT=0 (seconds to wait, before each run,
#   for other processes on a shared machine to use under 10% of a core).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-etcd.sh

bin="${1:?usage: bench-compare.sh FLOTILLA_BINARY [OUT_DIR]}"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
[ -x "$bin" ] || { echo "not executable: $bin" >&2; exit 2; }
out="${2:-$(mktemp -d /tmp/flotilla-compare.XXXXXX)}"
mkdir -p "$out"
work="$(mktemp -d /tmp/flotilla-compare-data.XXXXXX)"
workloads="${WORKLOADS:-put get mixed}"
concurrency="${CONCURRENCY:-1 64 256}"
duration="${DURATION:-10}"
warmup="${WARMUP:-2}"
keys="${KEYS:-100000}"
value_size="${VALUE_SIZE:-128}"
systems="${SYSTEMS:-flotilla etcd}"
ticks_per_second="$(getconf CLK_TCK 2>/dev/null || echo 100)"
demo_pid=""
declare -A endpoints pids

cleanup() {
    etcd_stop
    if [ -n "$demo_pid" ]; then
        kill -INT "$demo_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$demo_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_flotilla() {
    "$bin" demo --dir "$work/demo" --shards "${SHARDS:-64}" >"$out/demo.out" 2>"$out/demo.err" &
    demo_pid=$!
    local started=$SECONDS
    until grep -q '^endpoints: ' "$out/demo.out" 2>/dev/null; do
        kill -0 "$demo_pid" 2>/dev/null || { echo "flotilla demo exited" >&2; tail -n 20 "$out/demo.err" >&2; exit 1; }
        [ $((SECONDS - started)) -lt 300 ] || { echo "flotilla demo printed no endpoints in 300 s" >&2; exit 1; }
        sleep 0.5
    done
    endpoints[flotilla]="$(sed -n 's/^endpoints: //p' "$out/demo.out")"
    pids[flotilla]="$demo_pid"
    echo "flotilla demo: pid $demo_pid on ${endpoints[flotilla]} ($(( SECONDS - started )) s to a leader for every shard)"
}

start_etcd() {
    etcd_start "$work/etcd"
    endpoints[etcd]="$ETCD_ENDPOINTS"
    pids[etcd]="${ETCD_PIDS[*]}"
}

# utime + stime of the processes (space-separated PIDs), in clock ticks.
# The command name (field 2) has no spaces for flotilla and etcd.
cpu_ticks() {
    local pid sum=0
    for pid in $1; do
        sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$sum"
}

# The machine's busy clock ticks (all CPUs; iowait counts as idle).
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# % of one core that everything but the two clusters used over 2 s.
others_percent() {
    local m0 c0 m1 c1
    m0=$(machine_busy) c0=$(cpu_ticks "${pids[*]}")
    sleep 2
    m1=$(machine_busy) c1=$(cpu_ticks "${pids[*]}")
    echo $(((m1 - m0 - (c1 - c0)) * 100 / (2 * ticks_per_second)))
}

# On a shared machine: wait up to QUIET_WAIT seconds until the rest of the
# machine uses under 10% of a core (other engineers' builds and tests).
wait_quiet() {
    local limit="${QUIET_WAIT:-0}" started=$SECONDS busy
    [ "$limit" -gt 0 ] || return 0
    while busy=$(others_percent) && [ "$busy" -ge 10 ] && [ $((SECONDS - started)) -lt "$limit" ]; do sleep 5; done
    [ $((SECONDS - started)) -lt 5 ] || echo "# waited $((SECONDS - started)) s for the machine to go quiet (others: $busy%)"
}

# run_one SYSTEM WORKLOAD CONCURRENCY: one bench run, its JSON in $out and
# a line in $out/results.tsv.
run_one() {
    local system="$1" workload="$2" c="$3" name="$1-$2-$3" flags=()
    [ "$workload" = put ] || flags+=(--no-preload)
    wait_quiet
    local cmd=("$bin" bench --target "$system" --endpoints "${endpoints[$system]}" --workload "$workload"
        --concurrency "$c" --duration "${duration}s" --warmup "${warmup}s" --value-size "$value_size" --keys "$keys"
        "${flags[@]}" --json)
    echo "\$ ${cmd[*]}   # load average $(cut -d' ' -f1-3 /proc/loadavg)" | sed "s#$bin#flotilla#"
    "${cmd[@]}" >"$out/$name.json" 2>"$out/$name.progress" &
    local bench=$!
    sleep "$warmup"
    local before after busy_before busy_after
    before=$(cpu_ticks "${pids[$system]}") busy_before=$(machine_busy)
    sleep "$duration"
    after=$(cpu_ticks "${pids[$system]}") busy_after=$(machine_busy)
    wait "$bench" || { echo "bench failed: $(tail -n 3 "$out/$name.progress")" >&2; return 1; }
    python3 - "$out/$name.json" "$system" "$workload" "$c" $((after - before)) $((busy_after - busy_before)) \
        "$ticks_per_second" "$duration" >>"$out/results.tsv" <<'EOF'
import json, sys
path, system, workload, c, ticks, busy, hz, seconds = sys.argv[1:]
d = json.load(open(path))
cpu, machine = int(ticks) / int(hz), int(busy) / int(hz)
tool = (d["load_tool_cpu_percent"] or 0) / 100 * float(seconds)
print("\t".join(str(x) for x in [system, workload, c, d["ops_per_sec"], d["p50_us"], d["p99_us"], d["p999_us"],
      d["max_us"], d["errors_total"] + d["abandoned"], round(cpu, 2), d["count"], round(tool, 2), round(machine, 2)]))
EOF
    tail -n 1 "$out/results.tsv" | awk -F'\t' '{ printf "  %s ops/s, p99 %.2f ms, errors %s, cluster CPU %s s, load tool %s s, machine %s s\n", $4, $6 / 1000, $9, $10, $12, $13 }'
}

# Writes the keys once per system, so every read run finds them.
preload() {
    "$bin" bench --target "$1" --endpoints "${endpoints[$1]}" --workload get --concurrency 1 --duration 0.1s \
        --warmup 0 --value-size "$value_size" --keys "$keys" 2>/dev/null | grep '^preload' | sed "s/^/$1 /"
}

echo "binary: $bin; results in $out; $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
for system in $systems; do "start_$system"; preload "$system"; done
printf 'system\tworkload\tclients\tops_per_sec\tp50_us\tp99_us\tp999_us\tmax_us\terrors\tcluster_cpu_s\tops\tload_tool_cpu_s\tmachine_cpu_s\n' >"$out/results.tsv"
for workload in $workloads; do
    for c in $concurrency; do
        for system in $systems; do run_one "$system" "$workload" "$c"; done
    done
done
grep -hE 'WARN|ERROR|panic' "$out/demo.err" "$work"/etcd/m*.log 2>/dev/null | head -n 20 || true
python3 - "$out/results.tsv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {(r["system"], r["workload"], r["clients"]): r for r in rows}
print("\n| workload | clients | system | ops/s | p50 ms | p99 ms | p999 ms | max ms | errors | CPU-s per 1,000 ops | ops/s ratio | p99 ratio |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    ops = float(r["ops"]) or 1
    cpu = float(r["cluster_cpu_s"]) / ops * 1000
    other = by.get(("etcd", r["workload"], r["clients"]))
    ratio = p99 = ""
    if r["system"] == "flotilla" and other:
        ratio = f'{float(r["ops_per_sec"]) / max(float(other["ops_per_sec"]), 1e-9):.2f}'
        p99 = f'{float(r["p99_us"]) / max(float(other["p99_us"]), 1):.2f}'
    ms = lambda key: f'{float(r[key]) / 1000:.2f}'
    print(f'| {r["workload"]} | {r["clients"]} | {r["system"]} | {float(r["ops_per_sec"]):,.0f} | {ms("p50_us")} | '
          f'{ms("p99_us")} | {ms("p999_us")} | {ms("max_us")} | {r["errors"]} | {cpu:.3f} | {ratio} | {p99} |')
EOF
