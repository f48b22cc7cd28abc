#!/bin/sh
# A demo "VM" of docker-compose.yaml, as QuiesceOperator sees a Skytap VM: an OpenSSH server
# that lets the Airflow workers' key in as root, and a data filesystem at /srv/data that
# fsfreeze can freeze without freezing anything else (an ext4 image, loop-mounted; the
# container must be privileged for the loop device, the mount and FIFREEZE). A small writer
# stands in for the application: it stalls while /srv/data is frozen and resumes after the thaw.
#
# Settings (environment; the defaults are the compose file's):
#   DEMO_VM_NAME        the VM's name; its disk image is $DISK_DIR/$DEMO_VM_NAME.img (required)
#   DATA_MOUNT          where the data filesystem is mounted (/srv/data)
#   DISK_DIR            the disk images' directory, a volume the simulator reads copies from
#   DISK_SIZE_MB        size of a new disk image (64)
#   AUTHORIZED_KEYS     the workers' public key, written by airflow-init (waited for)
#   SSH_DIR             sshd's own files: host key, config, authorized_keys copy, pid
#   KNOWN_HOSTS         the known_hosts file this VM publishes its host key in, shared with the
#                       other VMs, read by the Airflow workers (/etc/demo-vm/known-hosts/known_hosts)
#   KNOWN_HOSTS_NAME    the host field of its line: the address its SSH service is published at
#                       (an IP for port 22, [IP]:PORT otherwise); empty: the key is not published
#   SSH_PORT, SSH_LISTEN    where sshd listens (22, 0.0.0.0)
#   SSHD_STRICT_MODES   sshd's StrictModes (yes)
#   DEMO_WRITER         1: run the writer (default), 0: not
#   KEY_WAIT_SECONDS    how long to wait for AUTHORIZED_KEYS (120)
set -eu

name=${DEMO_VM_NAME:?DEMO_VM_NAME is not set}
data=${DATA_MOUNT:-/srv/data}
disks=${DISK_DIR:-/var/lib/demo-vm-disks}
size_mb=${DISK_SIZE_MB:-64}
keys=${AUTHORIZED_KEYS:-/etc/demo-vm/keys/authorized_keys}
ssh_dir=${SSH_DIR:-/etc/demo-vm/ssh}
known_hosts=${KNOWN_HOSTS:-/etc/demo-vm/known-hosts/known_hosts}
known_hosts_name=${KNOWN_HOSTS_NAME:-}
port=${SSH_PORT:-22}
listen=${SSH_LISTEN:-0.0.0.0}
strict=${SSHD_STRICT_MODES:-yes}
key_wait=${KEY_WAIT_SECONDS:-120}
img="$disks/$name.img"
writer_pid=
sshd_pid=

say() { echo "demo-vm $name: $*" >&2; }

# ---- the data filesystem
mkdir -p "$disks" "$data"
if [ ! -s "$img" ]; then
    say "making a ${size_mb} MB ext4 disk image $img"
    truncate -s "${size_mb}M" "$img"
    mkfs.ext4 -q -F -L "$name" "$img"
fi
if mountpoint -q "$data"; then
    fsfreeze -u "$data" 2>/dev/null || true # left frozen by an earlier run of this container
else
    if ! mount -o loop "$img" "$data" 2>/dev/null; then
        # A privileged container sees the host's /dev as it was at start: loop device nodes
        # the host made later are missing. Make the usual ones, then try once more.
        i=0
        while [ "$i" -lt 64 ]; do
            [ -e "/dev/loop$i" ] || mknod -m 0660 "/dev/loop$i" b 7 "$i" 2>/dev/null || true
            i=$((i + 1))
        done
        if ! mount -o loop "$img" "$data"; then
            say "cannot loop-mount $img at $data: run the container with privileged: true" \
                "on a Linux kernel with loop devices (see docs/deploy.md)"
            exit 1
        fi
    fi
fi
say "$data is $(findmnt -n -o SOURCE,FSTYPE "$data" | tr -s ' ')"

# ---- sshd: own host key, the workers' key for root, nothing else
mkdir -p "$ssh_dir" /run/sshd
chmod 0700 "$ssh_dir"
if [ ! -s "$ssh_dir/ssh_host_ed25519_key" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "demo-vm-$name" -f "$ssh_dir/ssh_host_ed25519_key"
fi
# Publish the host key: this VM's line in the shared known_hosts replaces its earlier one (a
# re-created VM has a new key), under a lock, since the VMs start at the same time.
if [ -n "$known_hosts_name" ]; then
    mkdir -p "$(dirname "$known_hosts")"
    line="$known_hosts_name $(cut -d ' ' -f 1,2 "$ssh_dir/ssh_host_ed25519_key.pub")"
    (
        flock 9
        touch "$known_hosts"
        awk -v host="$known_hosts_name" '$1 != host' "$known_hosts" >"$known_hosts.$name.tmp"
        echo "$line" >>"$known_hosts.$name.tmp"
        chmod 0644 "$known_hosts.$name.tmp"
        mv "$known_hosts.$name.tmp" "$known_hosts"
    ) 9>"$known_hosts.lock"
    say "host key published in $known_hosts as $known_hosts_name"
fi
waited=0
until [ -s "$keys" ]; do
    if [ "$waited" -ge "$key_wait" ]; then
        say "no public key at $keys after ${key_wait}s (airflow-init writes it)"
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
install -m 0600 "$keys" "$ssh_dir/authorized_keys"
cat >"$ssh_dir/sshd_config" <<EOF
Port $port
ListenAddress $listen
HostKey $ssh_dir/ssh_host_ed25519_key
PidFile $ssh_dir/sshd.pid
AuthorizedKeysFile $ssh_dir/authorized_keys
AllowUsers root
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes $strict
PrintMotd no
EOF

# ---- shutdown: thaw before anything else, so no process stays stuck on a frozen filesystem
# shellcheck disable=SC2317  # called by the trap
stop() {
    fsfreeze -u "$data" 2>/dev/null || true
    for pid in $writer_pid $sshd_pid; do
        kill "$pid" 2>/dev/null || true
    done
    wait
    umount "$data" 2>/dev/null || umount -l "$data" 2>/dev/null || true
    say "stopped"
    exit 0
}
trap stop TERM INT HUP

if [ "${DEMO_WRITER:-1}" = 1 ]; then
    (
        n=0
        while :; do
            n=$((n + 1))
            echo "$n $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$data/heartbeat.tmp"
            mv "$data/heartbeat.tmp" "$data/heartbeat"
            sleep 1
        done
    ) &
    writer_pid=$!
fi

/usr/sbin/sshd -D -e -f "$ssh_dir/sshd_config" &
sshd_pid=$!
say "sshd listening on $listen:$port; data filesystem $data"
status=0
wait "$sshd_pid" || status=$?
say "sshd exited with status $status"
fsfreeze -u "$data" 2>/dev/null || true
exit "$status"
