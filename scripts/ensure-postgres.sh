#!/usr/bin/env bash
# Make a Postgres server available on 127.0.0.1:5432 for the tests: use the
# running server, start the installed cluster if it is stopped, or install
# the distribution's package (loopback only, trust auth for 127.0.0.1) if
# there is none.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v pg_isready >/dev/null && ready; then
    exit 0
fi

installed_here=no
if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "postgres: not installed; installing the distribution's package" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    installed_here=yes
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
conf="/etc/postgresql/$version/main"
if [ "$installed_here" = yes ]; then
    # a cluster of our own making: loopback only, no passwords for tests
    as_root sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"
fi

echo "postgres: starting cluster $version/main" >&2
as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
    if ready; then
        exit 0
    fi
    sleep 1
done
echo "postgres: the server did not come up on 127.0.0.1:5432" >&2
exit 1
