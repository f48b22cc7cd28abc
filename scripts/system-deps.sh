#!/usr/bin/env bash
# System programs the quiesce tests, the example DAGs' system tests and `make demo` use: a real OpenSSH sshd (and ssh-keygen), sudo, the
# util-linux/e2fsprogs tools that freeze loop-mounted ext4 images, and MariaDB's server and client
# (tests/quiesce/test_mariadb.py starts a private mariadbd; the package's own service is not started),
# and Debian's Chromium with its WebDriver for the browser tests. As root on Debian/Ubuntu,
# installs whatever is missing with apt (no `apt-get update` when nothing is missing, so a
# machine that has everything pays nothing). Otherwise it only says what is missing; the tests
# that need it then skip and print why. Always exits 0: a missing tool is a skip, not an error.
set -uo pipefail

# command -> Debian package that provides it
declare -A provides=(
  [sshd]=openssh-server
  [ssh-keygen]=openssh-client
  [sudo]=sudo
  [fsfreeze]=util-linux
  [losetup]=mount
  [mountpoint]=util-linux
  [setsid]=util-linux
  [runuser]=util-linux
  [mkfs.ext4]=e2fsprogs
  [e2fsck]=e2fsprogs
  [debugfs]=e2fsprogs
  [dumpe2fs]=e2fsprogs
  [unshare]=util-linux
  [nsenter]=util-linux
  [timeout]=coreutils
  [mariadbd]=mariadb-server
  [mariadb-install-db]=mariadb-server
  [mariadb]=mariadb-client
  # The browser tests (tests/system/test_ui_*.py) drive the api-server in headless Chromium.
  [chromium]=chromium
  [chromedriver]=chromium-driver
)

have() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

missing=()
for cmd in "${!provides[@]}"; do
  have "$cmd" || missing+=("${provides[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
# unique, sorted package list
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not installing ${packages[*]} (needs root and apt-get);" \
       "the quiesce tests that need them will skip and say why" >&2
  exit 0
fi

echo "system-deps: installing ${packages[*]} with apt" >&2
# Package scripts must not start an sshd on port 22: the tests start their own on loopback.
# policy-rc.d exit 101 tells invoke-rc.d not to start services; put one in place only for this
# install unless the machine already has one (containers usually do).
policy=/usr/sbin/policy-rc.d
own_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}"; }; then
  echo "system-deps: apt could not install ${packages[*]};" \
       "the quiesce tests that need them will skip and say why" >&2
fi
[ -n "$own_policy" ] && rm -f "$policy"
exit 0
