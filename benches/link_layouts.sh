#!/bin/bash
# Usage: benches/link_layouts.sh BIN DIR: starts BIN on DIR/bench.toml (a store_scale
# store laid out as BENCHMARKS.md says) and prints the load time, the seconds until the
# first refresh after the watches are in place, RSS, CPU and inotify watches 4 s later.
BIN=$1; DIR=$2
cd $DIR
RUST_LOG=mailfront=debug $BIN run --config bench.toml > "${TMPDIR:-/tmp}/link_layouts.log" 2>&1 &
PID=$!
start=$(date +%s.%N)
for i in $(seq 1 600); do grep -q "refreshing the certificate store" "${TMPDIR:-/tmp}/link_layouts.log" && break; sleep 0.1; done
t1=$(date +%s.%N)
sleep 4
load=$(grep -o 'store loaded.*ms=[0-9]*' "${TMPDIR:-/tmp}/link_layouts.log" | grep -o 'ms=[0-9]*')
rss=$(awk '/VmRSS/{print $2/1024}' /proc/$PID/status)
hwm=$(awk '/VmHWM/{print $2/1024}' /proc/$PID/status)
cpu=$(awk '{print ($14+$15)/100}' /proc/$PID/stat)
w=$(for fd in /proc/$PID/fdinfo/*; do grep -c '^inotify' $fd; done 2>/dev/null | awk '{s+=$1} END {print s}')
echo "load $load watching_done_s $(echo "$t1 - $start" | bc) rss_mib $rss hwm_mib $hwm cpu_s $cpu inotify_watches $w"
kill $PID; wait $PID 2>/dev/null
