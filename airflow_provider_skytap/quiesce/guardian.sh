# skytap-quiesce: the VM side of QuiesceOperator. POSIX sh + coreutils + util-linux.
#
# The operator sends this file (with the profiles appended and `main "$@"` last) over SSH
# and runs it as root (directly or through `sudo -n`), or, for profile app only, as the SSH
# user. Every argument it passes is quoted with shlex.quote on the Airflow side; nothing here
# ever evals an argument.
#
#   preflight --id ID --profile P [--allow-system-mounts] -- MOUNT...
#       Check each mount: absolute, exists, is a mount point, not a system mount, not on
#       the same filesystem as the state dir, and not already frozen (a bounded write probe).
#       Profile app: plain directories, so only absolute, exists, not a system directory, and
#       writable (the same probe).
#   arm --id ID --profile P --max-seconds N --step-timeout N [--opt KEY=VALUE]... -- MOUNT...
#       Start the guardian (detached, its own session) and wait until it has frozen every
#       mount or failed. The guardian runs the profile's pre-freeze step, starts its deadline
#       timer, freezes the mounts in order, then holds the freeze until the thaw task tells it
#       to thaw, a signal arrives, or the deadline passes, and then thaws in reverse order
#       and runs the profile's post-thaw step (applications resume after the filesystems).
#   thaw --id ID --profile P --probe-timeout N --wait N [--reason R] -- MOUNT...
#       Tell the guardian to thaw and wait for its record; then unfreeze, in reverse order,
#       whatever is still frozen (idempotent: "Invalid argument" means already thawed) and
#       check with a bounded write that every mount is writable again. Works with no guardian.
#   run DIR, backstop DIR: internal (the detached guardian and its watchdog).
#
# Profile app freezes nothing: the guardian is armed (deadline timer and backstop running)
# before the application's own pause command, and whoever ends the hold runs its resume.
#
# State, logs and the control channel live in /run/skytap-quiesce/ID (tmpfs), never on a
# filesystem being frozen: preflight refuses a mount that holds the state dir. A user other
# than root (profile app) has them in /tmp/skytap-quiesce-UID/ID: the state dir is always the
# one the script was installed in (BASE/lib/HASH.sh), which the operator's runner picks by
# uid and checks (the user's own, mode 0700). Every report line for the operator is
# `@@sq KEY=VALUE` on stdout.

set -u
umask 077
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LC_ALL=C
export PATH LC_ALL
case $0 in
*/lib/*.sh) BASE=${0%/lib/*} ;;
*) BASE=/run/skytap-quiesce ;;
esac
NL='
'
# The system mounts: freezing one can hang the host, sshd and sudo (they write to / and /var).
# Refused unless forced. The one list: the Airflow side reads it from this line.
SYSTEM_MOUNTS='/ /boot /boot/efi /usr /var'
# Bytes that end a line for some reader (str.splitlines: C0 controls, DEL, the C1 controls
# U+0080-U+009F, U+2028 and U+2029), as patterns over UTF-8 bytes (LC_ALL=C).
C1=$(printf '\302[\200-\237]')
LS=$(printf '\342\200[\250\251]')

# ---------------------------------------------------------------- small helpers

say() { printf '@@sq %s=%s\n' "$1" "$2"; }
# oneline: stdin as one report value: every control or line-separator character a space.
oneline() { tr '\000-\037\177' '[ *]' | sed "s/$C1/ /g; s/$LS/ /g; s/ *\$//" | cut -c1-1500; }
fail() {
    # fail STEP MESSAGE [EXIT]: report the failing step and stop
    say error_step "$1"
    say error "$(printf '%s' "$2" | oneline)"
    exit "${3:-1}"
}
now() {
    _t=$(date +%s.%N 2>/dev/null)
    case $_t in *N* | '') _t=$(date +%s) ;; esac
    printf '%s' "$_t"
}
is_system_mount() {
    for _s in $SYSTEM_MOUNTS; do [ "$1" = "$_s" ] && return 0; done
    return 1
}
is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
# State files hold one line each. Shell builtins only (no fork+exec per value): on a busy
# VM, and with many hosts on one machine in the tests, that is most of arming's time.
setv() { printf '%s\n' "$2" >"$dir/$1"; }
getv() {
    if [ -f "$dir/$1" ]; then
        _v=
        IFS= read -r _v <"$dir/$1"
        printf '%s' "$_v"
    else
        printf '%s' "${2-}"
    fi
}
opt() { getv "opt.$1" "${2-}"; }
check_id() {
    case $1 in
    '' | .* | *[!A-Za-z0-9._-]*) fail args "invalid guardian id '$1'" 2 ;;
    esac
}
check_mount() {
    case $1 in
    /*) ;;
    *) fail args "mount '$1' is not an absolute path" 2 ;;
    esac
    case $1 in
    *[[:cntrl:]]* | *$C1* | *$LS*)
        fail args "mount '$(printf '%s' "$1" | oneline)' contains a control or line-separator \
character" 2 ;;
    esac
}

# The pid recorded in DIR/pid still runs this guardian: not a recycled pid, and not a zombie
# (kill -0 succeeds on a zombie; its cmdline is empty).
guardian_alive() {
    _pid=$(getv pid)
    is_uint "$_pid" || return 1
    kill -0 "$_pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$_pid/cmdline" 2>/dev/null | grep -qF -- " run $dir" || return 1
}

# poll SECONDS CMD...: run CMD every 0.1 s until it succeeds (0) or SECONDS pass (1). One
# early look after 0.01 s: what is polled (a write probe) mostly ends within milliseconds.
poll() {
    _left=$(($1 * 10))
    shift
    "$@" && return 0
    sleep 0.01
    until "$@"; do
        [ "$_left" -le 0 ] && return 1
        sleep 0.1
        _left=$((_left - 1))
    done
    return 0
}

# ended PID: the process is gone (a zombie still counts as there; see guardian_alive).
ended() { ! kill -0 "$1" 2>/dev/null; }

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

# probe MOUNT SECONDS: a write that cannot hang the caller and touches nothing a VM user can
# steer: the mount's own directory gets its times set to now (touch -c -h: no file created, no
# symlink followed); no name under the mount is ever opened, so a planted symlink leads nowhere.
# A write to a frozen filesystem blocks in the kernel and cannot be killed, so it runs in a
# background subshell that we stop waiting for: 0 writable, 1 error (in $probe_err), 2 hangs.
probe() {
    _e="$BASE/.probe-err.$$"
    (
        trap '' HUP INT TERM QUIT
        touch -c -h -- "$1"
    ) </dev/null >/dev/null 2>"$_e" 7>&- 8>&- &
    _p=$!
    if ! poll "$2" ended "$_p"; then
        probe_err="a write did not finish within $2 s"
        return 2
    fi
    if wait "$_p"; then
        rm -f "$_e"
        return 0
    fi
    probe_err=$(oneline <"$_e")
    rm -f "$_e"
    return 1
}

# run_step NAME CMD...: run one profile command with the step timeout, output kept in DIR.
run_step() {
    _name=$1
    shift
    timeout -k 5 "$step_timeout" "$@" </dev/null >"$dir/$_name.out" 2>"$dir/$_name.err" 7>&-
    _rc=$?
    if [ "$_rc" -ne 0 ]; then
        step_err=$(oneline <"$dir/$_name.err")
        [ "$_rc" -eq 124 ] && step_err="timed out after ${step_timeout} s; $step_err"
    fi
    return "$_rc"
}

# as_user USER STEP CMD...: run_step as USER (root: directly), for the database profiles.
as_user() {
    _u=$1
    _s=$2
    shift 2
    if [ "$_u" = root ]; then
        run_step "$_s" "$@"
    else
        run_step "$_s" runuser -u "$_u" -- "$@"
    fi
}

# ---------------------------------------------------------------- preflight

cmd_preflight() {
    allow=0
    id=''
    profile=fsfreeze
    while [ $# -gt 0 ]; do
        case $1 in
        --allow-system-mounts) allow=1 ;;
        --id) id=$2; shift ;;
        --profile) profile=$2; shift ;;
        --) shift; break ;;
        *) fail args "unknown option '$1'" 2 ;;
        esac
        shift
    done
    [ $# -gt 0 ] || fail args "no mounts given" 2
    _tools='fsfreeze mountpoint setsid timeout stat date sleep'
    [ "$profile" = app ] && _tools='setsid timeout stat date sleep'
    for _tool in $_tools; do
        command -v "$_tool" >/dev/null 2>&1 || fail preflight "'$_tool' is not installed"
    done
    mkdir -p "$BASE" || fail preflight "cannot create $BASE"
    prune_old # here, not in arm: nothing may delay the freeze once hosts start freezing
    if [ -n "$id" ]; then
        check_id "$id"
        release_earlier_try "$BASE/$id" 30 preflight
    fi
    _statedev=$(stat -c %d "$BASE")
    for m in "$@"; do
        check_mount "$m"
        [ -d "$m" ] || fail preflight "$m does not exist (or is not a directory)"
        if [ "$profile" = app ]; then
            preflight_app_dir "$m"
            continue
        fi
        mountpoint -q "$m" || fail preflight "$m is not a mount point"
        # A filesystem without freeze support fails at fsfreeze -f, after the other hosts froze.
        _fstype=$(stat -f -c %T "$m" 2>/dev/null)
        case $_fstype in
        tmpfs | ramfs | proc | sysfs | devpts | cgroupfs | cgroup2fs | overlayfs | squashfs | \
            nfs | autofs | debugfs | tracefs | securityfs | configfs | hugetlbfs | mqueue | bpf_fs)
            fail preflight "$m is a $_fstype filesystem, which cannot be frozen (fsfreeze works \
on disk filesystems such as ext4, xfs and btrfs)" ;;
        esac
        if [ "$allow" = 0 ] && is_system_mount "$m"; then
            fail preflight "$m is a system filesystem; freezing it can hang the host and \
new SSH logins (pass allow_root_fs=True to force it)"
        fi
        if [ "$(stat -c %d "$m")" = "$_statedev" ]; then
            fail preflight "$m holds $BASE, where the guardian keeps its state; that must \
stay writable (is /run a tmpfs on this host?)"
        fi
        probe "$m" 3
        case $? in
        1) fail preflight "$m is not writable: $probe_err" ;;
        2) fail preflight "$m is already frozen ($probe_err); refusing to freeze it again" ;;
        esac
        say mount_ok "$m"
    done
    say status ok
}

# preflight_app_dir DIR: profile app's check of one directory. Nothing is frozen, so a plain
# directory will do, on any filesystem (the state dir's too); it must be writable, as the thaw
# checks it is.
preflight_app_dir() {
    if [ "$allow" = 0 ] && is_system_mount "$1"; then
        fail preflight "$1 is a system directory; list the application's own data \
directories (pass allow_root_fs=True to force it)"
    fi
    probe "$1" 3
    case $? in
    1) fail preflight "$1 is not writable by $(id -un 2>/dev/null || id -u): $probe_err" ;;
    2) fail preflight "$1 is on a frozen filesystem ($probe_err); the application would stay \
stuck there whatever its pause and resume do" ;;
    esac
    say mount_ok "$1"
}

# ---------------------------------------------------------------- the guardian

freeze_all() {
    # Freeze mounts 1..n in order; stop at the first failure or when told to stop.
    i=1
    while [ "$i" -le "$n" ]; do
        [ -n "$fired" ] && return 1
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

thaw_ours() {
    # Unfreeze, in reverse order, the mounts this guardian froze and still owns. One that is
    # no longer ours (or was already thawed) was ended by someone else while we held it: the
    # copy may be torn, and the hold ends as "external-thaw".
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
}

post_thaw() {
    if [ "$profile" = app ]; then
        # A pause that failed or timed out may have paused part of the application: resume
        # whenever the pause was started.
        [ -f "$dir/pause_started" ] || return 0
    else
        [ "$(getv pre_freeze_rc)" = 0 ] || return 0
    fi
    [ -f "$dir/post_thaw_rc" ] && return 0
    step_err=
    "${profile}_post_thaw"
    _rc=$?
    setv post_thaw_rc "$_rc"
    [ "$_rc" -eq 0 ] || setv post_thaw_error "$step_err"
}

# finish STATUS: the one place that ends a guardian's hold, whoever gets there first.
finish() {
    mkdir "$dir/finishing" 2>/dev/null || return 1
    if [ "$profile" = app ]; then
        resume_app
    else
        thaw_ours
        post_thaw
    fi
    setv fired "$fired"
    setv status "$1"
    setv result "$1"
    return 0
}

# resume_app: profile app's end of the hold: the resume, then the directories' states and the
# time it ended (not when the resume failed: the application may still be paused).
resume_app() {
    post_thaw
    [ "$(getv post_thaw_rc 0)" = 0 ] || return 0
    set_mstates paused resumed
    if [ -f "$dir/frozen_at" ] && [ ! -f "$dir/thawed_at" ]; then setv thawed_at "$(now)"; fi
}

# set_mstates FROM TO: every mount in state FROM goes to state TO.
set_mstates() {
    _i=1
    while [ "$_i" -le "$n" ]; do
        [ "$(getv "mstate.$_i")" = "$1" ] && setv "mstate.$_i" "$2"
        _i=$((_i + 1))
    done
    return 0
}

load() {
    dir=$1
    id=${dir##*/}
    cd / || exit 1
    n=$(getv nmounts 0)
    max_seconds=$(getv max_seconds)
    step_timeout=$(getv step_timeout)
    profile=$(getv profile)
}

cmd_run() {
    load "$1"
    fired=
    trap 'fired=${fired:-told}' USR1
    trap 'fired=${fired:-signal}' TERM INT HUP QUIT
    setv pid $$
    setv status preparing
    [ "$profile" = app ] && run_app
    step_err=
    "${profile}_pre_freeze"
    _rc=$?
    setv pre_freeze_rc "$_rc"
    if [ "$_rc" -ne 0 ]; then
        setv error_step pre-freeze
        setv error "$profile pre-freeze failed (exit $_rc): $step_err"
        finish failed
        exit 1
    fi
    # Armed: the deadline timer runs before the first freeze, so no mount stays frozen longer
    # than max_seconds even if this shell is stopped. The backstop thaws if this shell dies.
    arm_timer
    if ! freeze_all; then
        kill "$timer" 2>/dev/null
        if [ -n "$fired" ]; then finish cancelled; else finish failed; fi
        exit 1
    fi
    setv status frozen
    hold
}

# arm_timer: the deadline timer (a child to wait for) and the backstop (a detached watchdog).
arm_timer() {
    sleep "$max_seconds" >/dev/null 2>&1 7>&- &
    timer=$!
    setv deadline_at "$(($(date +%s) + max_seconds))"
    setsid sh "$0" backstop "$dir" </dev/null >>"$dir/log" 2>&1 7>&- &
}

# hold: until told, a signal, or the deadline; then end the hold and exit.
hold() {
    while [ -z "$fired" ]; do
        wait "$timer"
        if [ -z "$fired" ] && ! kill -0 "$timer" 2>/dev/null; then fired=deadline; fi
    done
    kill "$timer" 2>/dev/null
    if [ "$fired" = told ]; then fired=$(getv request told); fi
    finish thawed
    exit 0
}

# run_app: profile app's guardian. The timer and the backstop are armed before the pause starts,
# so a pause is always resumed: at the deadline, on a signal, when told, by the backstop if this
# shell dies, or by a thaw in place of both.
run_app() {
    arm_timer
    setv pause_started "$(now)"
    step_err=
    app_pre_freeze
    _rc=$?
    setv pre_freeze_rc "$_rc"
    if [ -d "$dir/finishing" ]; then
        # The backstop ended the hold (deadline + 5 s) while the pause still ran: the pause may
        # have taken effect after its resume, so resume once more.
        kill "$timer" 2>/dev/null
        app_post_thaw post-thaw-again
        exit 1
    fi
    if [ "$_rc" -ne 0 ]; then
        kill "$timer" 2>/dev/null
        setv error_step pre-freeze
        setv error "app pre-freeze (the pause) failed (exit $_rc): $step_err"
        finish failed # resumes: the pause may have paused part of the application
        exit 1
    fi
    setv frozen_at "$(now)"
    set_mstates pending paused
    if [ -n "$fired" ]; then
        kill "$timer" 2>/dev/null
        finish cancelled
        exit 1
    fi
    setv status frozen
    hold
}

cmd_backstop() {
    # A watchdog for the guardian itself: if the guardian is killed (SIGKILL, OOM) or has not
    # finished 5 s after its deadline, thaw in its place. It ignores the signals the guardian
    # handles, so that a signal to the whole group still lets the guardian do the thawing.
    load "$1"
    trap '' HUP INT TERM QUIT USR1
    _limit=$(($(getv deadline_at) + 5))
    while [ ! -f "$dir/result" ]; do
        if ! guardian_alive; then
            fired='guardian-died'
            break
        fi
        if [ "$(date +%s)" -ge "$_limit" ]; then
            fired=backstop
            break
        fi
        sleep 1
    done
    [ -f "$dir/result" ] && exit 0
    finish thawed && say backstop "$fired"
    exit 0
}

cmd_arm() {
    id='' profile='' max_seconds='' step_timeout='' dir=''
    arm_parse "$@"
    check_id "$id"
    is_uint "$max_seconds" && [ "$max_seconds" -gt 0 ] ||
        fail args "max seconds must be a positive whole number, got '$max_seconds'" 2
    is_uint "$step_timeout" && [ "$step_timeout" -gt 0 ] ||
        fail args "step timeout must be a positive whole number, got '$step_timeout'" 2
    case $profile in
    fsfreeze | postgres | mysql | custom | app) ;;
    *) fail args "unknown profile '$profile'" 2 ;;
    esac
    mkdir -p "$BASE" || fail arm "cannot create $BASE"
    release_earlier_try "$BASE/$id" "$step_timeout" arm
    dir=$BASE/$id
    if [ -d "$dir" ]; then
        rm -rf "$dir.prev"
        mv "$dir" "$dir.prev" || fail arm "cannot move $dir aside"
    fi
    mkdir "$dir" || fail arm "cannot create $dir"
    arm_parse "$@"
    setv profile "$profile"
    setv max_seconds "$max_seconds"
    setv step_timeout "$step_timeout"
    setv status arming
    setsid sh "$0" run "$dir" </dev/null >>"$dir/log" 2>&1 &
    _left=$(((step_timeout + 60) * 20))
    while :; do
        st=
        [ -f "$dir/status" ] && IFS= read -r st <"$dir/status"
        case $st in frozen | failed | cancelled | thawed) break ;; esac
        if [ $((_left % 20)) = 0 ] && [ -f "$dir/pid" ] && ! guardian_alive &&
            [ ! -f "$dir/result" ]; then
            report_state
            fail arm "the guardian exited before freezing; its log: $(tail -c 800 "$dir/log")"
        fi
        if [ "$_left" -le 0 ]; then
            report_state
            fail arm "the guardian did not finish freezing within $((step_timeout + 60)) s" 3
        fi
        sleep 0.05
        _left=$((_left - 1))
    done
    report_state
    [ "$st" = frozen ] || exit 1
    exit 0
}

# Two passes over arm's arguments: the first (no dir yet) validates, the second writes each
# --opt value and each mount to its own file, so no value ever passes through eval or a list.
arm_parse() {
    while [ $# -gt 0 ]; do
        case $1 in
        --id) id=$2; shift ;;
        --profile) profile=$2; shift ;;
        --max-seconds) max_seconds=$2; shift ;;
        --step-timeout) step_timeout=$2; shift ;;
        --opt)
            _k=${2%%=*}
            case $_k in '' | *[!a-z_]*) fail args "invalid option name '$_k'" 2 ;; esac
            [ -n "$dir" ] && printf '%s' "${2#*=}" >"$dir/opt.$_k"
            shift
            ;;
        --) shift; break ;;
        *) fail args "unknown option '$1'" 2 ;;
        esac
        shift
    done
    [ $# -gt 0 ] || fail args "no mounts given" 2
    _i=0
    for m in "$@"; do
        check_mount "$m"
        _i=$((_i + 1))
        if [ -n "$dir" ]; then
            printf '%s\n' "$m" >"$dir/mount.$_i"
            setv "mstate.$_i" pending
        fi
    done
    [ -n "$dir" ] && setv nmounts "$_i"
    return 0
}

# Records of finished guardians older than a week go; /run is cleared at boot anyway.
# One find for all of them: a find per record made each preflight's cost grow with the records.
prune_old() {
    find "$BASE" -mindepth 2 -maxdepth 2 -name result -type f -mtime +7 2>/dev/null |
        while IFS= read -r _r; do
            case ${_r%/result} in "$BASE"/lib | "$BASE"/.*) continue ;; esac
            rm -rf "${_r%/result}"
        done
    return 0
}

# release_earlier_try DIR SECONDS STEP: a guardian of an earlier try of this freeze (same DAG, run
# and target) still holds its freeze. The copy cannot have started (it waits for the freeze
# task to succeed), so tell it to thaw; the new try then starts over. Its record stays as .prev.
release_earlier_try() {
    dir=$1
    [ -d "$dir" ] || return 0
    [ ! -f "$dir/result" ] || return 0
    guardian_alive || return 0
    request_thaw retry
    wait_result "$2" || fail "$3" "the guardian of an earlier try (pid $(getv pid)) did not \
thaw when told to; thaw it first"
    say previous_guardian thawed
}

request_thaw() {
    setv request "$1"
    kill -USR1 "$(getv pid)" 2>/dev/null
}

# wait_result SECONDS: until the guardian has written its record (USR1 again every second, in
# case the first arrived between its checks). 1 if it is still running at the end.
wait_result() {
    _n=0
    while [ ! -f "$dir/result" ]; do
        if ! guardian_alive; then
            sleep 0.2
            [ -f "$dir/result" ]
            return
        fi
        [ "$_n" -ge $(($1 * 20)) ] && return 1
        [ $((_n % 20)) = 19 ] && kill -USR1 "$(getv pid)" 2>/dev/null
        sleep 0.05
        _n=$((_n + 1))
    done
    return 0
}

# The record as report lines. Values the script wrote itself with setv are one line, read with
# builtins; only the messages (which may quote a command's output) go through oneline. Forks
# here ran for every key and made most of a thaw's CPU on the VM.
report_state() {
    for _k in status pid profile frozen_at deadline_at thawed_at fired request pre_freeze_rc \
        freeze_rc thaw_rc post_thaw_rc error_step; do
        [ -f "$dir/$_k" ] || continue
        _v=
        IFS= read -r _v <"$dir/$_k"
        say "$_k" "$_v"
    done
    for _k in error post_thaw_error; do
        [ -f "$dir/$_k" ] && say "$_k" "$(oneline <"$dir/$_k")"
    done
    _i=1
    _n=$(getv nmounts 0)
    while [ "$_i" -le "$_n" ]; do
        _m=
        IFS= read -r _m <"$dir/mount.$_i"
        say mount "$(getv "mstate.$_i") $_m"
        _i=$((_i + 1))
    done
    say now "$(now)" # this host's clock as it answers: the controller checks it against its own
}

# ---------------------------------------------------------------- thaw

cmd_thaw() {
    id='' probe_timeout=10 wait_s=30 reason=thaw profile=fsfreeze
    while [ $# -gt 0 ]; do
        case $1 in
        --id) id=$2; shift ;;
        --profile) profile=$2; shift ;;
        --probe-timeout) probe_timeout=$2; shift ;;
        --wait) wait_s=$2; shift ;;
        --reason) reason=$2; shift ;;
        --) shift; break ;;
        *) fail args "unknown option '$1'" 2 ;;
        esac
        shift
    done
    check_id "$id"
    is_uint "$probe_timeout" || fail args "probe timeout must be a whole number" 2
    is_uint "$wait_s" || fail args "wait must be a whole number" 2
    case $reason in thaw | rollback | kill) ;; *) fail args "unknown reason '$reason'" 2 ;; esac
    [ $# -gt 0 ] || fail args "no mounts given" 2
    for m in "$@"; do check_mount "$m"; done
    mkdir -p "$BASE" || fail thaw "cannot create $BASE"

    dir=$BASE/$id
    n=0
    guardian=none
    if [ -d "$dir" ]; then
        load "$dir"
        if [ -f "$dir/result" ]; then
            guardian=finished
        elif guardian_alive; then
            request_thaw "$reason"
            if wait_result "$wait_s"; then guardian=told; else guardian=unresponsive; fi
        else
            guardian=dead
        fi
    fi
    say guardian "$guardian"
    # The guardian's record says how this host was held; without one nothing is touched.
    app_outcome=
    [ "$guardian" != none ] && [ "$profile" = app ] && thaw_app

    # What to see to: the guardian's mounts (it knows what it froze), then any configured
    # mount it did not have. Numbered files, so the reverse pass needs no arrays or eval.
    work=$BASE/.thaw.$$
    rm -rf "$work"
    mkdir "$work" || fail thaw "cannot create $work"
    k=0
    j=1
    while [ "$j" -le "$n" ]; do
        k=$((k + 1))
        cp "$dir/mount.$j" "$work/m.$k"
        getv "mstate.$j" >"$work/s.$k"
        j=$((j + 1))
    done
    for m in "$@"; do
        j=1
        while [ "$j" -le "$k" ]; do
            [ "$(cat "$work/m.$j")" = "$m" ] && break
            j=$((j + 1))
        done
        if [ "$j" -gt "$k" ]; then
            k=$j
            printf '%s\n' "$m" >"$work/m.$k"
            printf 'unknown\n' >"$work/s.$k"
        fi
    done

    # A mount is unfrozen only while its owner record names this run's guardian (it froze it
    # and nobody thawed it since), whether the guardian answered, is stuck or died. A mount
    # another run froze since, or someone else froze, is left alone, and so is every mount
    # when this run never armed a guardian here.
    bad=0
    unfroze=0
    i=$k
    while [ "$i" -ge 1 ]; do
        m=$(cat "$work/m.$i")
        st=$(cat "$work/s.$i")
        if [ "$guardian" = none ]; then
            say outcome "not-armed $m"
            i=$((i - 1))
            continue
        fi
        if [ "$st" = busy ]; then
            say outcome "not-ours $m"
            i=$((i - 1))
            continue
        fi
        if [ ! -d "$m" ]; then
            say outcome "gone $m" # unmounted and removed since: nothing left to thaw
            i=$((i - 1))
            continue
        fi
        if [ "$profile" = app ]; then
            outcome=$app_outcome # nothing frozen: the application was paused, or not
        elif ! own_read "$m" || { [ "$owner" = "$id" ] && ! own_lock "$m"; }; then
            say error_step thaw
            say error "cannot read or lock the owner record of $m"
            say outcome "thaw-failed $m"
            bad=1
            i=$((i - 1))
            continue
        elif [ -n "$owner" ] && [ "$owner" != "$id" ]; then
            # Another run's guardian froze it since: theirs to thaw, whatever our record says.
            own_unlock
            say outcome "not-ours $m"
            i=$((i - 1))
            continue
        elif [ "$owner" != "$id" ]; then
            own_unlock # nobody of ours holds it: thawed by the guardian, or never frozen by us
            if [ "$st" = thawed ]; then outcome=thawed-by-guardian; else outcome=already-thawed; fi
        elif fsfreeze -u "$m" 2>"$work/err"; then
            rm -f "$owner_file"
            own_unlock
            unfroze=1
            outcome=thawed
            [ "$i" -le "$n" ] && setv "mstate.$i" thawed
        elif grep -q 'Invalid argument' "$work/err"; then
            rm -f "$owner_file"
            own_unlock
            outcome=already-thawed
        else
            own_unlock
            say error_step thaw
            say error "fsfreeze -u $m: $(oneline <"$work/err")"
            say outcome "thaw-failed $m"
            bad=1
            i=$((i - 1))
            continue
        fi
        probe "$m" "$probe_timeout"
        case $? in
        0) say outcome "$outcome $m" ;;
        *)
            say error_step verify
            say error "$m is not writable after thaw: $probe_err"
            say outcome "not-writable $m"
            bad=1
            ;;
        esac
        i=$((i - 1))
    done
    rm -rf "$work"

    if [ -d "$dir" ] && [ ! -f "$dir/result" ]; then
        # No guardian finished: record what happened, and resume applications in its place.
        [ "$unfroze" = 1 ] && [ ! -f "$dir/thawed_at" ] && setv thawed_at "$(now)"
        if [ "$guardian" = dead ] && mkdir "$dir/finishing" 2>/dev/null; then
            # Guardian and backstop both gone. If the mounts were still frozen, the freeze
            # held until now, as if we had told it; if not, it ended at an unknown time.
            if [ "$unfroze" = 1 ]; then fired=thaw; else fired='guardian-died'; fi
            post_thaw
            setv fired "$fired"
            setv status thawed
            setv result thawed
        fi
    fi
    [ -d "$dir" ] && report_state
    [ -d "$dir" ] || say now "$(now)"
    [ -n "$app_outcome" ] && report_app_thaw
    exit "$bad"
}

# thaw_app: profile app, in the thaw command. A guardian that finished or answered has run the
# resume; one that died (with its backstop) before it did leaves that to us, as does a resume
# that failed (a retry of the thaw task tries it again). Sets app_outcome for each directory.
thaw_app() {
    app_outcome=resumed-by-guardian
    case $guardian in
    finished | told)
        [ -f "$dir/pause_started" ] || return 0
        [ "$(getv post_thaw_rc 0)" = 0 ] && return 0
        mkdir "$dir/resuming" 2>/dev/null || return 0 # another thaw is at it
        rm -f "$dir/post_thaw_rc" "$dir/post_thaw_error"
        resume_app
        rmdir "$dir/resuming"
        app_outcome=resumed
        ;;
    dead)
        # Nobody resumed yet: the pause held until now. A finisher that died half-way leaves
        # "finishing" without a resume; the resume is safe to run twice, so run it all the same.
        if mkdir "$dir/finishing" 2>/dev/null || [ ! -f "$dir/post_thaw_rc" ]; then
            fired=thaw
            resume_app
            if [ ! -f "$dir/result" ]; then
                setv fired thaw
                setv status thawed
                setv result thawed
            fi
        fi
        app_outcome=resumed
        ;;
    unresponsive) app_outcome=not-resumed ;;
    esac
}

# report_app_thaw: profile app's verdict, after the record (a later error line wins).
report_app_thaw() {
    if [ "$guardian" = unresponsive ]; then
        say error_step thaw
        say error "the guardian (pid $(getv pid)) did not finish within $wait_s s of being \
told to resume the application; it still holds the pause and resumes it when its current \
step ends or at its deadline: run the thaw again"
        bad=1
    elif [ -f "$dir/pause_started" ] && [ "$(getv post_thaw_rc 1)" != 0 ]; then
        say error_step post-thaw
        say error "app post-thaw (the resume) failed (exit $(getv post_thaw_rc none)): \
$(getv post_thaw_error); the application may still be paused"
        bad=1
    fi
}

# ---------------------------------------------------------------- entry

# profile_of ARG...: the value of --profile among a command's options.
profile_of() {
    while [ $# -gt 0 ]; do
        case $1 in
        --profile) printf '%s' "${2-}"; return 0 ;;
        --) return 0 ;;
        esac
        shift
    done
}

main() {
    [ $# -gt 0 ] || fail args "no command given" 2
    _cmd=$1
    shift
    case $_cmd in
    preflight | arm | thaw)
        if [ "$(id -u)" != 0 ] && [ "$(profile_of "$@")" != app ]; then
            fail "$_cmd" "profile '$(profile_of "$@")' freezes filesystems, which needs root, \
and this runs as $(id -un 2>/dev/null || id -u) without sudo: log in as root, or give the user \
passwordless sudo (use_sudo); where filesystems cannot be frozen, use profile 'app' (the \
application's own pause and resume commands; no fsfreeze, no root)" 2
        fi
        ;;
    esac
    case $_cmd in
    preflight) cmd_preflight "$@" ;;
    arm) cmd_arm "$@" ;;
    thaw) cmd_thaw "$@" ;;
    run) cmd_run "$@" ;;
    backstop) cmd_backstop "$@" ;;
    *) fail args "unknown command '$_cmd'" 2 ;;
    esac
}
