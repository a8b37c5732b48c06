#!/bin/bash
# Usage: benches/acme_scale.sh BIN [N]: the ACME manager at scale. Lays out N (default
# 100,000) entries of store_scale's store (target/bench-stores/100000, made by
# `cargo bench --bench store_scale -- 100000`) as ACME-issued entries, acme/NAME/ with
# fullchain.pem and privkey.pem (hard links to the single files, so nothing is copied),
# and runs BIN on it twice: without [acme], and with [acme] listing every name in its
# names_file (the CA unreachable: nothing is due, so nothing is ordered; the manager
# reads every certificate at start, schedules its renewal, and then runs its
# once-a-second loop and once-a-minute sweep over all of them). Prints, for each: the
# store's load time, RSS, the manager's start-up scan, and the CPU used over 60 s once
# the store is loaded and watched.
set -euo pipefail
BIN=$1; N=${2:-100000}
SRC=$(cd "$(dirname "$0")/.." && pwd)/target/bench-stores/100000
DIR=${TMPDIR:-/tmp}/acme_scale.$N
if [ ! -d "$DIR/store/acme" ]; then
    mkdir -p "$DIR/store/acme"
    cp "$SRC/server.pem" "$SRC/ca.pem" "$DIR/"
    ls "$SRC/store" | head -n "$N" | while read -r f; do
        n=${f%.pem}
        mkdir "$DIR/store/acme/$n"
        ln "$SRC/store/$f" "$DIR/store/acme/$n/fullchain.pem"
        ln "$SRC/store/$f" "$DIR/store/acme/$n/privkey.pem"
        echo "$n"
    done > "$DIR/names.txt"
fi
head="[server]
name = \"server.com\"
[certs]
dir = \"store\"
default_cert = \"server.pem\"
default_key = \"server.pem\"
ca_bundle = \"ca.pem\"
rescan_interval = \"1h\"
[[listener]]
name = \"https\"
bind = \"127.0.0.1:0\"
protocol = \"https\"
backend = \"127.0.0.1:9\""
echo "$head" > "$DIR/plain.toml"
printf '%s\n[acme]\ndirectory = "http://127.0.0.1:9/directory"\nstate_dir = "state"\nnames_file = "names.txt"\n' "$head" > "$DIR/acme.toml"
cd "$DIR"
for config in plain acme; do
    rm -rf state
    log="$DIR/$config.log"
    RUST_LOG=info,mailfront::certs=debug $BIN run --config $config.toml > "$log" 2>&1 &
    PID=$!
    for i in $(seq 1 1200); do
        # Loaded, the watches in place (the first refresh after them), the manager started.
        grep -q "refreshing the certificate store" "$log" && { [ $config = plain ] || grep -q "renewals scheduled" "$log"; } && break
        sleep 0.1
    done
    sleep 5
    cpu0=$(awk '{print ($14+$15)}' /proc/$PID/stat)
    sleep 60
    cpu1=$(awk '{print ($14+$15)}' /proc/$PID/stat)
    load=$(grep -o 'store loaded.*ms=[0-9]*' "$log" | grep -o 'ms=[0-9]*' || true)
    found=$(grep -o 'issued=[0-9]*' "$log" || true)
    rss=$(awk '/VmRSS/{print $2/1024}' /proc/$PID/status)
    hwm=$(awk '/VmHWM/{print $2/1024}' /proc/$PID/status)
    echo "$config: load $load $found rss_mib $rss hwm_mib $hwm cpu_over_60s_s $(echo "($cpu1 - $cpu0)/100" | bc -l | cut -c1-5)"
    kill $PID; wait $PID 2>/dev/null || true
done
