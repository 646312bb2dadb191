#!/usr/bin/env bash
# How the WebRTC engine's fan-out scales with its shards (--rtc-threads), on one machine.
#
# The load generator runs in a network namespace of its own and connects its viewers
# over a veth pair. Once every viewer is connected, the host's neighbour entry for the
# namespace's address is pointed at a MAC address nobody has: from then on the server's
# datagrams still go the whole way through its send path and out of the veth, as to a
# NIC, but the namespace discards them on arrival, before IP, so neither the generator
# nor the kernel's receive path takes CPU. The viewers' own checks still reach the
# server, which keeps their connections up for the seconds measured.
#
# For each shard count and viewer count it prints the video packets the server sent per
# second, per viewer (the stream's rate while it keeps up), the server's CPU in all and
# per shard thread, and the CPU per packet. Needs root (a network namespace), ffmpeg and
# iproute2.
#
#   scripts/bench-shards.sh                      # shards 1 and 2, 300 600 900 1200 viewers
#   SHARDS="1 2" VIEWERS="400 800" SECONDS_EACH=10 scripts/bench-shards.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDS="${SHARDS:-1 2}"
VIEWERS="${VIEWERS:-300 600 900 1200}"
SECONDS_EACH="${SECONDS_EACH:-10}"

[[ $EUID -eq 0 ]] || { echo "bench-shards.sh needs root (it makes a network namespace)" >&2; exit 2; }
for tool in ffmpeg ip python3; do
    command -v "$tool" >/dev/null || { echo "bench-shards.sh needs $tool" >&2; exit 2; }
done

cargo build --release --bins
target="${CARGO_TARGET_DIR:-target}/release"

tmp="$(mktemp -d)"
ns="pgshard$$"
host_if="pgsh$$"
ns_if="pgsn$$"
host_ip=10.214.0.1
ns_ip=10.214.0.2
server=""
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    ip netns delete "$ns" 2>/dev/null || true
    ip link delete "$host_if" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$ns"
ip link add "$host_if" type veth peer name "$ns_if"
ip link set "$ns_if" netns "$ns"
ip addr add "$host_ip/30" dev "$host_if"
ip link set "$host_if" up
ip -n "$ns" addr add "$ns_ip/30" dev "$ns_if"
ip -n "$ns" link set "$ns_if" up
ip -n "$ns" link set lo up

echo "encoding the input (1280x720, 30 fps, 2 Mbit/s) ..." >&2
ffmpeg -nostdin -loglevel error \
    -f lavfi -i "testsrc2=size=1280x720:rate=30,format=yuv420p" -t 20 \
    -c:v libx264 -profile:v baseline -preset veryfast -tune zerolatency \
    -b:v 2M -maxrate 2M -bufsize 2M -g 60 -keyint_min 60 -sc_threshold 0 \
    -x264-params repeat-headers=1 -bsf:v h264_mp4toannexb -f h264 "$tmp/input.h264"

# /state's rtc section, one field per line: name value.
rtc_state() {
    python3 - "$1" <<'EOF'
import json, sys, urllib.request
rtc = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/state", timeout=5))["rtc"]
print("connected", rtc["connected"])
print("sent", rtc["rtp_packets_sent"])
EOF
}

# Utime+stime ticks of each thread of $1, summed by thread name: "name ticks" lines.
thread_ticks() {
    for stat in /proc/"$1"/task/*/stat; do
        # The name is inside the parentheses; the times are fields 14 and 15 after it.
        sed -E 's/^[0-9]+ \((.*)\) (.*)$/\1|\2/' "$stat" 2>/dev/null
    done | awk -F'|' '{ split($2, f, " "); t[$1] += f[12] + f[13] } END { for (n in t) print n, t[n] }'
}

ticks_per_s=$(getconf CLK_TCK)
printf '%-7s %-8s %-9s %-10s %-12s %-10s %-28s %-9s %s\n' shards viewers held "pkt/s" "pkt/s/viewer" "server%" "shards + rest %" "µs/pkt" "load%"
for shards in $SHARDS; do
    for viewers in $VIEWERS; do
        http_port=$((18400 + shards)) ws_port=$((18500 + shards))
        "$target/peregrine" --host "$host_ip" --port "$http_port" --janus-ws-port "$ws_port" \
            --janus-http-port "$((18600 + shards))" --udp-port-range 0 --source "$tmp/input.h264" --desired-fps 30 \
            --max-connections-per-ip 0 --max-sessions 0 --max-viewers 100000 --rtc-threads "$shards" \
            >"$tmp/server.log" 2>&1 &
        server=$!
        for _ in $(seq 100); do rtc_state "$host_ip:$http_port" >/dev/null 2>&1 && break; sleep 0.1; done
        ip netns exec "$ns" "$target/peregrine-load" --server "ws://$host_ip:$ws_port/" \
            --bind "$ns_ip" --viewers "$viewers" --ramp 200 --duration 600 \
            >"$tmp/load.log" 2>&1 &
        load=$!
        # Every viewer connected (or no more for some seconds: one the generator gave up
        # on does not come back), then the namespace stops taking what the server sends.
        connected=0 still=0
        while [[ "$connected" -lt "$viewers" && "$still" -lt 25 ]]; do
            sleep 0.2
            now=$(rtc_state "$host_ip:$http_port" | awk '$1 == "connected" { print $2 }')
            if [[ "$now" -gt "$connected" ]]; then connected=$now still=0; else still=$((still + 1)); fi
        done
        ip neigh replace "$ns_ip" lladdr 02:00:00:00:00:01 dev "$host_if" nud permanent
        sleep 2 # past the catch-up of the last viewers
        sent0=$(rtc_state "$host_ip:$http_port" | awk '$1 == "sent" { print $2 }')
        thread_ticks "$server" >"$tmp/t0"
        load0=$(thread_ticks "$load" | awk '{ t += $NF } END { print t + 0 }')
        sleep "$SECONDS_EACH"
        load1=$(thread_ticks "$load" | awk '{ t += $NF } END { print t + 0 }')
        sent1=$(rtc_state "$host_ip:$http_port" | awk '$1 == "sent" { print $2 }')
        thread_ticks "$server" >"$tmp/t1"
        kill "$load" 2>/dev/null; wait "$load" 2>/dev/null || true
        kill "$server"; wait "$server" 2>/dev/null || true
        server=""
        ip neigh del "$ns_ip" dev "$host_if"
        python3 - "$tmp/t0" "$tmp/t1" "$sent0" "$sent1" "$SECONDS_EACH" "$ticks_per_s" \
            "$shards" "$viewers" "$connected" "$((load1 - load0))" <<'EOF'
import sys
t0f, t1f, s0, s1, secs, hz, shards, viewers, connected, load = sys.argv[1:]
secs, hz = float(secs), float(hz)
def read(path):
    out = {}
    for line in open(path):
        name, ticks = line.rsplit(" ", 1)
        out[name] = int(ticks)
    return out
a, b = read(t0f), read(t1f)
pct = {n: (b[n] - a.get(n, 0)) / hz / secs * 100 for n in b}
total = sum(pct.values())
rate = (int(s1) - int(s0)) / secs
shard_threads = " ".join(f"{pct[n]:.0f}" for n in sorted(pct) if n.startswith("rtc-shard"))
# The steering of datagrams to shards runs on the main runtime's workers.
others = sum(v for n, v in pct.items() if not n.startswith("rtc-shard"))
per_thread = f"{shard_threads} + {others:.0f}"
us = total / 100 * 1e6 / rate if rate else float("nan")
print(f"{shards:<7} {viewers:<8} {connected:<9} {rate:<10.0f} {rate / max(int(connected), 1):<12.0f} "
      f"{total:<10.0f} {per_thread:<28} {us:<9.2f} {int(load) / hz / secs * 100:.0f}")
EOF
    done
done
echo "held: viewers connected when the namespace stopped taking the media; pkt/s/viewer (per"
echo "viewer held) near the stream's rate (about 270) means the server kept up, above it some were"
echo "still starting from the cached GOP; rest: the other threads (the steering of datagrams to"
echo "shards, signalling, the source); load%: the generator's CPU while measured."
