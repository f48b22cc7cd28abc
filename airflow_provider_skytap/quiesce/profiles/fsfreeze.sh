# Profile "fsfreeze": filesystems only, and the filesystem steps every profile not defining its
# own uses (postgres, mysql, custom; see hook). prepare: the profile's own P_pre_freeze command
# (a database's checkpoint or lock), before the watchdog. begin: fsfreeze -f each mount in
# order (it flushes dirty data and waits for running transactions). end: fsfreeze -u, in
# reverse order, each mount this guardian still owns, then the profile's P_post_thaw command
# (applications resume after the filesystems). fsfreeze itself has nothing to prepare or resume.
PROFILES="$PROFILES fsfreeze"

fsfreeze_pre_freeze() { return 0; }
fsfreeze_post_thaw() { return 0; }
fsfreeze_needs_root() { return 0; }
fsfreeze_recover() { return 0; }
fsfreeze_verdict() { return 0; }

fsfreeze_check() {
    for _tool in fsfreeze mountpoint; do
        command -v "$_tool" >/dev/null 2>&1 || fail preflight "'$_tool' is not installed"
    done
    mountpoint -q "$1" || fail preflight "$1 is not a mount point"
    # A filesystem without freeze support fails at fsfreeze -f, after the other hosts froze.
    _fstype=$(stat -f -c %T "$1" 2>/dev/null)
    case $_fstype in
    tmpfs | ramfs | proc | sysfs | devpts | cgroupfs | cgroup2fs | overlayfs | squashfs | \
        nfs | autofs | debugfs | tracefs | securityfs | configfs | hugetlbfs | mqueue | bpf_fs)
        fail preflight "$1 is a $_fstype filesystem, which cannot be frozen (fsfreeze works \
on disk filesystems such as ext4, xfs and btrfs)" ;;
    esac
    if [ "$allow" = 0 ] && is_system_mount "$1"; then
        fail preflight "$1 is a system filesystem; freezing it can hang the host and \
new SSH logins (pass allow_root_fs=True to force it)"
    fi
    if [ "$(stat -c %d "$1")" = "$(stat -c %d "$BASE")" ]; then
        fail preflight "$1 holds $BASE, where the guardian keeps its state; that must \
stay writable (is /run a tmpfs on this host?)"
    fi
    probe "$1" 3
    case $? in
    1) fail preflight "$1 is not writable: $probe_err" ;;
    2) fail preflight "$1 is already frozen ($probe_err); refusing to freeze it again" ;;
    esac
}

fsfreeze_prepare() {
    step_err=
    "${profile}_pre_freeze"
    _rc=$?
    setv pre_freeze_rc "$_rc"
    [ "$_rc" -eq 0 ] && return 0
    setv error_step pre-freeze
    setv error "$profile pre-freeze failed (exit $_rc): $step_err"
    return 1
}

# The owner record: BASE/owner.DEV names the guardian whose fsfreeze -f froze the filesystem
# DEV (a bind mount is the same filesystem). It is written and removed only under the
# filesystem's lock (flock on BASE/owner.DEV.lock, released if its holder dies), together with
# the fsfreeze that makes it true, so a guardian or a thaw unfreezes a mount only while the
# record names its own id: never one that another run froze since.
# own_read MOUNT: set owner_file and owner (the id recorded, or empty), without the lock: a
# snapshot, enough to leave a mount alone; acting on one takes the lock (own_lock).
own_read() {
    _dev=$(stat -c %d -- "$1") || return 1
    owner_file=$BASE/owner.$_dev
    owner=
    [ -f "$owner_file" ] && IFS= read -r owner <"$owner_file"
    return 0
}
# own_lock MOUNT: take the lock (fd 8), then read the record under it.
own_lock() {
    own_read "$1" || return 1
    exec 8>>"$owner_file.lock" || return 1
    flock -w 60 8 || { exec 8>&-; return 1; }
    owner=
    [ -f "$owner_file" ] && IFS= read -r owner <"$owner_file"
    return 0
}
own_unlock() { exec 8>&-; }

# begin: freeze mounts 1..n in order; stop at the first failure (1) or when told to stop (0,
# the core sees $fired).
fsfreeze_begin() {
    i=1
    while [ "$i" -le "$n" ]; do
        [ -n "$fired" ] && return 0
        m=$(getv "mount.$i")
        if ! own_lock "$m"; then
            setv "mstate.$i" failed
            setv error_step freeze
            setv error "cannot take the owner lock of $m"
            return 1
        fi
        if fsfreeze -f "$m" 2>"$dir/freeze.err"; then
            printf '%s\n' "$id" >"$owner_file"
            own_unlock
            setv "mstate.$i" frozen
            [ "$i" = 1 ] && setv frozen_at "$(now)"
            say frozen "$m"
        else
            _rc=$?
            own_unlock
            _err=$(oneline <"$dir/freeze.err")
            case $_err in
            *busy* | *Busy*) setv "mstate.$i" busy ;; # frozen by someone else: not ours
            *) setv "mstate.$i" failed ;;
            esac
            setv freeze_rc "$_rc"
            setv error_step freeze
            setv error "fsfreeze -f $m: $_err"
            return 1
        fi
        i=$((i + 1))
    done
    setv freeze_rc 0
    return 0
}

# end [again]: unfreeze, in reverse order, the mounts this guardian froze and still owns, then
# the post-thaw command (not again: whoever ended the hold first runs it). A mount no longer
# ours (or already thawed) was ended by someone else while we held it: the copy may be torn,
# and the hold ends as "external-thaw".
fsfreeze_end() {
    [ -f "$dir/thaw_rc" ] || setv thaw_rc 0
    i=$n
    while [ "$i" -ge 1 ]; do
        if [ "$(getv "mstate.$i")" = frozen ]; then
            m=$(getv "mount.$i")
            if ! own_lock "$m"; then
                setv thaw_rc 1
                setv error_step thaw
                setv error "cannot take the owner lock of $m"
            elif [ "$(getv "mstate.$i")" != frozen ]; then
                own_unlock # the thaw task unfroze it for us meanwhile
            elif [ "$owner" != "$id" ]; then
                own_unlock
                setv "mstate.$i" lost
                fired=external-thaw
            elif fsfreeze -u "$m" 2>"$dir/thaw.err"; then
                rm -f "$owner_file"
                own_unlock
                setv "mstate.$i" thawed
                say thawed "$m"
            else
                grep -q 'Invalid argument' "$dir/thaw.err" && rm -f "$owner_file"
                own_unlock
                if grep -q 'Invalid argument' "$dir/thaw.err"; then
                    setv "mstate.$i" lost
                    fired=external-thaw
                else
                    setv thaw_rc 1
                    setv error_step thaw
                    setv error "fsfreeze -u $m: $(oneline <"$dir/thaw.err")"
                fi
            fi
        fi
        i=$((i - 1))
    done
    if [ -f "$dir/frozen_at" ] && [ ! -f "$dir/thawed_at" ]; then setv thawed_at "$(now)"; fi
    [ "${1-}" = again ] && return 0
    [ "$(getv pre_freeze_rc)" = 0 ] || return 0
    post_step "${profile}_post_thaw"
}

# release MOUNT STATE I: the thaw task unfreezes a mount only while its owner record names this
# run's guardian (it froze it and nobody thawed it since), whether the guardian answered, is
# stuck or died. A mount another run froze since, or someone else froze, is left alone.
fsfreeze_release() {
    if ! own_read "$1" || { [ "$owner" = "$id" ] && ! own_lock "$1"; }; then
        say error_step thaw
        say error "cannot read or lock the owner record of $1"
        outcome=thaw-failed
        return 1
    fi
    if [ -n "$owner" ] && [ "$owner" != "$id" ]; then
        own_unlock # another run's guardian froze it since: theirs to thaw
        outcome=not-ours
        return 2
    fi
    if [ "$owner" != "$id" ]; then
        own_unlock # nobody of ours holds it: thawed by the guardian, or never frozen by us
        if [ "$2" = thawed ]; then outcome=thawed-by-guardian; else outcome=already-thawed; fi
    elif fsfreeze -u "$1" 2>"$dir/release.err"; then
        rm -f "$owner_file"
        own_unlock
        unfroze=1
        outcome=thawed
        [ "$3" -gt 0 ] && setv "mstate.$3" thawed
    elif grep -q 'Invalid argument' "$dir/release.err"; then
        rm -f "$owner_file"
        own_unlock
        outcome=already-thawed
    else
        own_unlock
        say error_step thaw
        say error "fsfreeze -u $1: $(oneline <"$dir/release.err")"
        outcome=thaw-failed
        return 1
    fi
    return 0
}
