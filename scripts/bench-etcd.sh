#!/usr/bin/env bash
# A 3-member etcd cluster on 127.0.0.1 for the side-by-side benchmark of
# BENCHMARKS.md: each member in its own data dir under DIR, etcd's defaults
# otherwise (the WAL is fsynced on every commit, as shipped), free ports
# (never 2379/2380, which a system etcd may hold).
#
# Usage: bash scripts/bench-etcd.sh DIR
#   starts the members, prints their client endpoints, and stops them (by
#   PID) on Ctrl-C or SIGTERM. DIR must not exist or be empty.
# Or, from another script:  source scripts/bench-etcd.sh
#   etcd_start DIR   sets ETCD_ENDPOINTS (a,b,c) and ETCD_PIDS (array)
#   etcd_stop        stops every member it started, by PID
# Needs: etcd 3.4 (Debian: apt-get install -y etcd-server), curl, python3.

# N free loopback ports: bound to port 0 together, then released.
etcd_free_ports() {
    python3 -c 'import socket, sys; s = [socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1", 0)) for x in s]; print(*[x.getsockname()[1] for x in s])' "$1"
}

ETCD_PIDS=()
ETCD_ENDPOINTS=""

etcd_start() {
    local dir="$1" i cluster="" clients=() peers=()
    command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install -y etcd-server)" >&2; return 1; }
    mkdir -p "$dir"
    read -r -a ports <<<"$(etcd_free_ports 6)"
    for i in 0 1 2; do
        clients+=("${ports[$i]}")
        peers+=("${ports[$((i + 3))]}")
        cluster+="${cluster:+,}m$((i + 1))=http://127.0.0.1:${peers[$i]}"
    done
    for i in 0 1 2; do
        etcd --name "m$((i + 1))" --data-dir "$dir/m$((i + 1))" \
            --listen-client-urls "http://127.0.0.1:${clients[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${clients[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${peers[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${peers[$i]}" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "flotilla-bench-$$" \
            --logger zap --log-level warn >"$dir/m$((i + 1)).log" 2>&1 &
        ETCD_PIDS+=("$!")
    done
    ETCD_ENDPOINTS="127.0.0.1:${clients[0]},127.0.0.1:${clients[1]},127.0.0.1:${clients[2]}"
    # Healthy: every member answers /health with a committed quorum read.
    local started=$SECONDS port pid
    for port in "${clients[@]}"; do
        until curl -sf "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"health":"true"'; do
            for pid in "${ETCD_PIDS[@]}"; do
                kill -0 "$pid" 2>/dev/null || { echo "etcd pid $pid exited during start-up" >&2; tail -n 5 "$dir"/m*.log >&2; return 1; }
            done
            [ $((SECONDS - started)) -lt 60 ] || { echo "etcd not healthy within 60 s" >&2; return 1; }
            sleep 0.5
        done
    done
    echo "etcd $(etcd --version | awk '/etcd Version/ {print $3}'): members ${ETCD_PIDS[*]} on $ETCD_ENDPOINTS (data and logs in $dir)"
}

etcd_stop() {
    local pid
    for pid in "${ETCD_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${ETCD_PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
    ETCD_PIDS=()
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    dir="${1:?usage: bench-etcd.sh DIR}"
    trap etcd_stop EXIT
    trap 'exit 130' INT TERM
    etcd_start "$dir"
    echo "endpoints: $ETCD_ENDPOINTS   (Ctrl-C stops the members)"
    while :; do sleep 1; done
fi
