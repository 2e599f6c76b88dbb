#!/usr/bin/env bash
# redis-test-servers.sh start|stop DIR
#
# start: starts, on free loopback ports, one standalone redis-server and a
# three-node Redis Cluster (no replicas), waits until both answer, and writes
# their addresses to DIR/env:
#
#   SENDGATE_TEST_REDIS=127.0.0.1:p
#   SENDGATE_TEST_REDIS_CLUSTER=127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3
#
# Installs redis-server with apt-get when it is missing and we are root.
# stop: kills the servers that start wrote pid files for in DIR.
#
# Persistence is off: these servers hold test data only.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port prints a port p such that p and p+10000 (the cluster bus) are free
# and not already chosen by this run.
chosen=" "
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 25000))
		case "$chosen" in *" $p "*|*" $((p + 10000)) "*) continue ;; esac
		if port_free "$p" && port_free $((p + 10000)); then
			chosen="$chosen$p $((p + 10000)) "
			echo "$p"
			return 0
		fi
	done
	echo "no free port found" >&2
	return 1
}

wait_ping() {
	local p=$1 i
	for i in $(seq 1 100); do
		if [ "$(redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null)" = PONG ]; then return 0; fi
		sleep 0.1
	done
	echo "redis on port $p did not start; see $dir/*.log" >&2
	return 1
}

start_server() { # name port extra-args...
	local name=$1 p=$2
	shift 2
	mkdir -p "$dir/$name"
	redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
		--daemonize yes --dir "$dir/$name" --pidfile "$dir/$name.pid" \
		--logfile "$dir/$name.log" "$@"
}

case "$cmd" in
start)
	if ! command -v redis-server >/dev/null; then
		if [ "$(id -u)" = 0 ]; then
			apt-get install -y redis-server >/dev/null 2>&1 ||
				{ apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; }
		else
			echo "redis-server is not installed (apt-get install redis-server)" >&2
			exit 1
		fi
	fi
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	ps=$(free_port)
	start_server standalone "$ps"
	cports=()
	for n in 1 2 3; do
		p=$(free_port)
		cports+=("$p")
		start_server "node$n" "$p" --cluster-enabled yes \
			--cluster-config-file "$dir/node$n/nodes.conf" --cluster-node-timeout 2000
	done
	wait_ping "$ps"
	for p in "${cports[@]}"; do wait_ping "$p"; done
	redis-cli --cluster create "127.0.0.1:${cports[0]}" "127.0.0.1:${cports[1]}" "127.0.0.1:${cports[2]}" \
		--cluster-replicas 0 --cluster-yes >"$dir/cluster-create.log" 2>&1 ||
		{ cat "$dir/cluster-create.log" >&2; exit 1; }
	for p in "${cports[@]}"; do
		for i in $(seq 1 100); do
			if redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then break; fi
			if [ "$i" = 100 ]; then echo "cluster node $p not ok" >&2; exit 1; fi
			sleep 0.1
		done
	done
	{
		echo "SENDGATE_TEST_REDIS=127.0.0.1:$ps"
		echo "SENDGATE_TEST_REDIS_CLUSTER=127.0.0.1:${cports[0]},127.0.0.1:${cports[1]},127.0.0.1:${cports[2]}"
	} >"$dir/env"
	cat "$dir/env"
	;;
stop)
	for f in "$dir"/*.pid; do
		[ -e "$f" ] || continue
		pid=$(cat "$f")
		kill "$pid" 2>/dev/null || true
		for i in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		rm -f "$f"
	done
	rm -f "$dir/env"
	;;
*)
	usage
	;;
esac
