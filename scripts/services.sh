#!/usr/bin/env bash
# PostgreSQL and Redis for the distributed Airflow stack (tests/system/airflow_stack.py,
# bench/, `make stack`): Debian's packages, installed with apt when root and missing. The
# stack never uses the system services: it runs a private cluster and a private redis-server
# on free loopback ports in a temporary directory. Package scripts must not start the system
# services either (policy-rc.d 101 during the install).
#
# Also makes the system user the private cluster runs as when root (postgres refuses to run as
# root): SKYTAP_STACK_USER, default skytap-stack.
#
# Prints nothing and exits 0 when everything is there; exits 0 after installing; exits 1 with
# the reason when something is missing and cannot be installed (the tests then skip with it).
set -uo pipefail

user=${SKYTAP_STACK_USER:-skytap-stack}

pg_bin() {
  # The newest installed server's bin directory (Debian keeps them per major version).
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

missing=()
[ -n "$(pg_bin)" ] || missing+=(postgresql)
PATH="$PATH:/usr/sbin:/sbin" command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
PATH="$PATH:/usr/sbin:/sbin" command -v runuser >/dev/null 2>&1 || missing+=(util-linux)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "services: ${missing[*]} missing, and installing needs root and apt-get" >&2
    exit 1
  fi
  echo "services: installing ${missing[*]} with apt" >&2
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  ok=1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; } \
    || ok=
  [ -n "$own_policy" ] && rm -f "$policy"
  if [ -z "$ok" ]; then
    echo "services: apt could not install ${missing[*]}" >&2
    exit 1
  fi
fi

if [ "$(id -u)" = 0 ] && ! id "$user" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$user" \
    || { echo "services: could not create the user $user" >&2; exit 1; }
fi
exit 0
