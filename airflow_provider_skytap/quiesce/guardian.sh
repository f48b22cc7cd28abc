# skytap-quiesce: the VM side of QuiesceOperator. POSIX sh + coreutils + util-linux.
#
# The operator sends this file (with the profiles appended and `main "$@"` last) over SSH and
# runs it as root (directly or through `sudo -n`), or, for a profile that needs no root, as the
# SSH user. Every argument is quoted with shlex.quote on the Airflow side; nothing here ever
# evals an argument.
#
# This file is the hold core; what is held is a profile's business (profiles/*.sh). A profile P
# supplies its steps as functions P_STEP; a step it does not define is fsfreeze_STEP (see hook):
#   needs_root         0 if the profile needs root
#   check MOUNT        preflight of one mount (after the core's: absolute, exists)
#   prepare            before the watchdog; on failure nothing is held and no end step runs
#   begin              under the watchdog: take the hold (freeze, pause)
#   end [again]        release it; idempotent, run by whoever ends the hold first
#   recover            thaw task, before its pass over the mounts, once the guardian answered
#   release MOUNT STATE I   thaw task: release one mount in the guardian's place; sets outcome,
#                      returns 0 (then the mount is checked writable), 1 failed, 2 left alone
#   verdict            thaw task, after the record: last report lines
#
#   preflight --id ID --profile P [--allow-system-mounts] -- MOUNT...
#   arm --id ID --profile P --max-seconds N --step-timeout N [--opt KEY=VALUE]... [--staged]
#       -- MOUNT...
#       Start the guardian (detached, its own session) and wait until it holds or failed. The
#       guardian starts its backstop, runs prepare, arms its deadline timer, runs begin, then
#       holds until the thaw task tells it, a signal arrives, or the deadline passes; then end.
#       --staged: once the guardian and its backstop run, arm says ready=1 and reads a line:
#       go starts the hold, anything else (or no input) ends the guardian with nothing held.
#       The controller sends go when every host is ready, so the first freeze comes after
#       every host's login and start-up, not in the middle of them.
#   thaw --id ID --profile P --probe-timeout N --wait N [--reason R] [--staged] -- MOUNT...
#       Tell the guardian to end the hold and wait for its record; then release, in reverse
#       order, whatever it still holds, and check with a bounded write that every mount is
#       writable. Works with no guardian. --staged: say ready=1 and read a line first; go
#       thaws, anything else (or no input) exits touching nothing.
#   run DIR, backstop DIR: internal (the detached guardian and its watchdog).
#
# State, logs and the control channel live in /run/skytap-quiesce/ID (tmpfs), never on a
# filesystem being frozen. A user other than root has them in /tmp/skytap-quiesce-UID/ID: the
# state dir is always the one the script was installed in (BASE/lib/HASH.sh), which the
# operator's runner picks by uid and checks (the user's own, mode 0700). Every report line for
# the operator is `@@sq KEY=VALUE` on stdout.

set -u
umask 077
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LC_ALL=C
export PATH LC_ALL
case $0 in
*/lib/*.sh) BASE=${0%/lib/*} ;;
*) BASE=/run/skytap-quiesce ;;
esac
# The system mounts: freezing one can hang the host, sshd and sudo (they write to / and /var).
# Refused unless forced. The one list: the Airflow side reads it from this line.
SYSTEM_MOUNTS='/ /boot /boot/efi /usr /var'
# Bytes that end a line for some reader (str.splitlines: C0 controls, DEL, the C1 controls
# U+0080-U+009F, U+2028 and U+2029), as patterns over UTF-8 bytes (LC_ALL=C).
C1=$(printf '\302[\200-\237]')
LS=$(printf '\342\200[\250\251]')
# Each profile file adds its name.
PROFILES=

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
    _v=${2-}
    [ -f "$dir/$1" ] && IFS= read -r _v <"$dir/$1"
    printf '%s' "$_v"
}
opt() { getv "opt.$1" "${2-}"; }
check_id() {
    case $1 in '' | .* | *[!A-Za-z0-9._-]*) fail args "invalid guardian id '$1'" 2 ;; esac
}
check_mount() {
    case $1 in /*) ;; *) fail args "mount '$1' is not an absolute path" 2 ;; esac
    case $1 in
    *[[:cntrl:]]* | *$C1* | *$LS*)
        fail args "mount '$(printf '%s' "$1" | oneline)' contains a control or line-separator \
character" 2 ;;
    esac
}
known_profile() {
    case $1 in '' | *[!a-z]*) return 1 ;; esac
    case "$PROFILES " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}
# hook STEP ARG...: the profile's STEP (P_STEP, else fsfreeze_STEP); only a known profile's.
hook() {
    _h=fsfreeze_$1
    known_profile "$profile" && command -v "${profile}_$1" >/dev/null 2>&1 && _h=${profile}_$1
    shift
    "$_h" "$@"
}

# proc_stat PID: the process's state (_ps; Z: a zombie) and start time (_pstart, clock ticks
# after boot) from /proc/PID/stat, with builtins only; 1 if there is no such process.
proc_stat() {
    _l=
    { IFS= read -r _l <"/proc/$1/stat"; } 2>/dev/null || return 1
    set -- ${_l##*) } # the fields after the command's name (which may hold anything)
    [ $# -ge 20 ] || return 1
    _ps=$1
    shift 19
    _pstart=$1
}

# The pid recorded in DIR/pid still runs this guardian: not a recycled pid (its start time is
# the one the guardian recorded), and not a zombie. Builtins only: the thaw, the arm and the
# backstop ask it in loops, and on a busy VM each fork counts. A record from an earlier version
# of this script has no start time: its command line says.
guardian_alive() {
    _pid= _start=
    [ -f "$dir/pid" ] && IFS= read -r _pid <"$dir/pid"
    is_uint "$_pid" || return 1
    if [ -f "$dir/pid_start" ]; then
        IFS= read -r _start <"$dir/pid_start"
        proc_stat "$_pid" && [ "$_ps" != Z ] && [ "$_pstart" = "$_start" ]
        return
    fi
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
    ) </dev/null >/dev/null 2>"$_e" 6>&- 7>&- 8>&- 9>&- &
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
    timeout -k 5 "$step_timeout" "$@" </dev/null >"$dir/$_name.out" 2>"$dir/$_name.err" \
        6>&- 7>&- 9>&-
    _rc=$?
    if [ "$_rc" -ne 0 ]; then
        step_err=$(oneline <"$dir/$_name.err")
        [ "$_rc" -eq 124 ] && step_err="timed out after ${step_timeout} s; $step_err"
    fi
    return "$_rc"
}

# post_step CMD...: a profile's post-thaw command, once per hold; exit code and error recorded.
post_step() {
    [ -f "$dir/post_thaw_rc" ] && return 0
    step_err=
    "$@"
    _rc=$?
    setv post_thaw_rc "$_rc"
    [ "$_rc" -eq 0 ] || setv post_thaw_error "$step_err"
}

# ---------------------------------------------------------------- preflight

# parse ARG...: the commands' options, then `--` and the mounts (each checked; with $dir set,
# each --opt value and each mount is written to its own file, so no value ever passes through
# eval or a list). Sets nargs: how many arguments to shift to reach the mounts.
parse() {
    nargs=$#
    while [ $# -gt 0 ]; do
        case $1 in
        --allow-system-mounts) allow=1 ;;
        --id) id=$2; shift ;;
        --profile) profile=$2; shift ;;
        --max-seconds) max_seconds=$2; shift ;;
        --step-timeout) step_timeout=$2; shift ;;
        --probe-timeout) probe_timeout=$2; shift ;;
        --wait) wait_s=$2; shift ;;
        --reason) reason=$2; shift ;;
        --staged) staged=1 ;;
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
    nargs=$((nargs - $#))
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

cmd_preflight() {
    shift "$nargs"
    for _tool in setsid timeout stat date sleep; do
        command -v "$_tool" >/dev/null 2>&1 || fail preflight "'$_tool' is not installed"
    done
    mkdir -p "$BASE" || fail preflight "cannot create $BASE"
    prune_old # here, not in arm: nothing may delay the freeze once hosts start freezing
    if [ -n "$id" ]; then
        check_id "$id"
        release_earlier_try "$BASE/$id" 30 preflight
    fi
    for m in "$@"; do
        check_mount "$m"
        [ -d "$m" ] || fail preflight "$m does not exist (or is not a directory)"
        hook check "$m"
        say mount_ok "$m"
    done
    say status ok
}

# ---------------------------------------------------------------- the guardian

# finish STATUS: the one place that ends a guardian's hold, whoever gets there first.
finish() {
    mkdir "$dir/finishing" 2>/dev/null || return 1
    hook end
    setv fired "$fired"
    setv status "$1"
    setv result "$1"
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

# The locks a guardian holds (flock, released by the kernel when it exits or dies): DIR/arming
# (fd 9, taken by arm and inherited) until the hold is taken or failed, and DIR/life (fd 6) for
# its whole life. arm and thaw wait on them instead of polling; nothing the guardian starts
# inherits them.
cmd_run() {
    load "$1"
    fired=
    trap 'fired=${fired:-told}' USR1
    trap 'fired=${fired:-signal}' TERM INT HUP QUIT
    proc_stat $$ && setv pid_start "$_pstart"
    setv pid $$
    # The backstop ends the hold if this shell dies; it learns the deadline once there is one.
    setsid sh "$0" backstop "$dir" </dev/null >>"$dir/log" 2>&1 6>&- 7>&- 9>&- &
    if [ -f "$dir/staged" ]; then
        # arm --staged: everything above is done before any host freezes; the hold starts on
        # the go (USR2), when every host's guardian is this far. Nothing is held meanwhile.
        go=
        trap 'go=1' USR2
        sleep "$(getv staged)" >/dev/null 2>&1 6>&- 7>&- 9>&- &
        _gt=$!
        setv status ready
        while [ -z "$go" ] && [ -z "$fired" ] && kill -0 "$_gt" 2>/dev/null; do
            wait "$_gt"
        done
        kill "$_gt" 2>/dev/null
        if [ -z "$go" ]; then
            fired=${fired:-not-started}
            finish cancelled
            exit 1
        fi
    fi
    setv status preparing
    hook prepare || { finish failed; exit 1; }
    # Armed: the deadline timer runs before the hold is taken, so nothing stays held longer
    # than max_seconds even if this shell is stopped.
    sleep "$max_seconds" >/dev/null 2>&1 6>&- 7>&- 9>&- &
    timer=$!
    setv deadline_at "$(($(date +%s) + max_seconds))"
    hook begin
    _rc=$?
    if [ -d "$dir/finishing" ]; then
        # The backstop ended the hold (deadline + 5 s) while the begin step still ran: what
        # it took after that end is released again.
        kill "$timer" 2>/dev/null
        hook end again
        exit 1
    fi
    if [ "$_rc" -ne 0 ] || [ -n "$fired" ]; then
        kill "$timer" 2>/dev/null
        if [ "$_rc" -eq 0 ]; then finish cancelled; else finish failed; fi
        exit 1
    fi
    setv status frozen
    exec 9>&- # arm may answer now
    # The hold: until told, a signal, or the deadline.
    while [ -z "$fired" ]; do
        wait "$timer"
        if [ -z "$fired" ] && ! kill -0 "$timer" 2>/dev/null; then fired=deadline; fi
    done
    kill "$timer" 2>/dev/null
    if [ "$fired" = told ]; then fired=$(getv request told); fi
    finish thawed
    exit 0
}

cmd_backstop() {
    # A watchdog for the guardian itself: if the guardian is killed (SIGKILL, OOM) or has not
    # finished 5 s after its deadline, end the hold in its place. It ignores the signals the
    # guardian handles, so that a signal to the whole group still lets the guardian do it.
    load "$1"
    trap '' HUP INT TERM QUIT USR1 USR2
    _limit=
    _n=0
    while [ ! -f "$dir/result" ]; do
        guardian_alive || { fired='guardian-died'; break; }
        if [ -z "$_limit" ] && [ -f "$dir/deadline_at" ]; then
            _limit=$(($(getv deadline_at) + 5))
            _n=0
        fi
        if [ -n "$_limit" ]; then
            # The clock every 10 s, counted in between (a late count only delays the backstop).
            if [ $((_n % 10)) = 0 ]; then _now=$(date +%s); else _now=$((_now + 1)); fi
            [ "$_now" -lt "$_limit" ] || { fired=backstop; break; }
        fi
        sleep 1
        _n=$((_n + 1))
    done
    [ -f "$dir/result" ] && exit 0
    finish thawed && say backstop "$fired"
    exit 0
}

cmd_arm() {
    check_id "$id"
    is_uint "$max_seconds" && [ "$max_seconds" -gt 0 ] ||
        fail args "max seconds must be a positive whole number, got '$max_seconds'" 2
    is_uint "$step_timeout" && [ "$step_timeout" -gt 0 ] ||
        fail args "step timeout must be a positive whole number, got '$step_timeout'" 2
    known_profile "$profile" || fail args "unknown profile '$profile'" 2
    mkdir -p "$BASE" || fail arm "cannot create $BASE"
    release_earlier_try "$BASE/$id" "$step_timeout" arm
    dir=$BASE/$id
    if [ -d "$dir" ]; then
        rm -rf "$dir.prev"
        mv "$dir" "$dir.prev" || fail arm "cannot move $dir aside"
    fi
    mkdir "$dir" || fail arm "cannot create $dir"
    parse "$@"
    setv profile "$profile"
    setv max_seconds "$max_seconds"
    setv step_timeout "$step_timeout"
    setv status arming
    # --staged: the guardian waits for the go this long at most (longer than the controller
    # waits for every host to be ready).
    [ "$staged" = 1 ] && setv staged "$((step_timeout + 120))"
    # The guardian inherits the arming lock (fd 9) and lets go of it once it holds or failed:
    # the wait below ends then, not at its next poll. Without flock, it polls.
    _lk=
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$dir/arming" 6>"$dir/life"
        flock -n 9 && flock -n 6 && _lk=1
    fi
    setsid sh "$0" run "$dir" </dev/null >>"$dir/log" 2>&1 &
    exec 9>&- 6>&-
    _go=
    [ "$staged" = 1 ] && arm_go
    _left=$(((step_timeout + 60) * 20))
    while :; do
        st=
        [ -f "$dir/status" ] && IFS= read -r st <"$dir/status"
        case $st in frozen | failed | cancelled | thawed) break ;; esac
        # The go may have come before the guardian waited for it (USR2 again, like USR1).
        [ "$st" = ready ] && [ "$_go" = go ] && guardian_alive && kill -USR2 "$_pid" 2>/dev/null
        if [ $((_left % 20)) = 0 ] && [ -f "$dir/pid" ] && ! guardian_alive &&
            [ ! -f "$dir/result" ]; then
            report_state
            fail arm "the guardian exited before freezing; its log: $(tail -c 800 "$dir/log")"
        fi
        if [ "$_left" -le 0 ]; then
            report_state
            fail arm "the guardian did not finish freezing within $((step_timeout + 60)) s" 3
        fi
        if [ -n "$_lk" ]; then
            # At most 1 s; free at once: the guardian let go (or died), so poll from now on.
            flock -w 1 "$dir/arming" true 2>/dev/null && _lk=
            _left=$((_left - 20))
        else
            sleep 0.05
            _left=$((_left - 1))
        fi
    done
    report_state
    [ "$st" = frozen ] || exit 1
    exit 0
}

# arm_go: arm --staged, before any host freezes: wait (polling) until the guardian is ready,
# say so (ready=1), then read one line from the controller: go, or anything else (stop, or the
# end of the input when the controller went away), which ends the guardian without a hold.
arm_go() {
    _go=
    _left=$(((step_timeout + 60) * 20))
    while :; do
        st=
        [ -f "$dir/status" ] && IFS= read -r st <"$dir/status"
        case $st in ready | frozen | failed | cancelled | thawed) break ;; esac
        if [ $((_left % 20)) = 0 ] && [ -f "$dir/pid" ] && ! guardian_alive &&
            [ ! -f "$dir/result" ]; then
            report_state
            fail arm "the guardian exited before it was ready; its log: $(tail -c 800 "$dir/log")"
        fi
        if [ "$_left" -le 0 ]; then
            report_state
            fail arm "the guardian was not ready within $((step_timeout + 60)) s" 3
        fi
        sleep 0.05
        _left=$((_left - 1))
    done
    [ "$st" = ready ] || return 0
    say ready 1
    IFS= read -r _go || :
    if [ "$_go" = go ]; then
        # Only to our guardian (USR2 ends a process that does not expect it): one that ended
        # meanwhile (a rollback told it) shows in its status.
        guardian_alive && kill -USR2 "$_pid" 2>/dev/null
        return 0
    fi
    request_thaw stop
    wait_result "$step_timeout" || :
    report_state
    fail arm "not frozen: the controller stopped before the freeze (another host failed)"
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
# case the first arrived between its checks). 1 if it is still running at the end. It waits on
# the guardian's life lock (free once it exited) where there is one, else it polls.
wait_result() {
    _n=0
    _lk=
    [ -f "$dir/life" ] && command -v flock >/dev/null 2>&1 && _lk=1
    while [ ! -f "$dir/result" ]; do
        if ! guardian_alive; then
            sleep 0.2
            [ -f "$dir/result" ]
            return
        fi
        [ "$_n" -ge $(($1 * 20)) ] && return 1
        if [ -n "$_lk" ]; then
            # Free: the guardian exited (the loop looks at its record); else USR1 again.
            if flock -w 1 "$dir/life" true 2>/dev/null; then _lk=; else
                kill -USR1 "$(getv pid)" 2>/dev/null
            fi
            _n=$((_n + 20))
            continue
        fi
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
    shift "$nargs"
    check_id "$id"
    is_uint "$probe_timeout" || fail args "probe timeout must be a whole number" 2
    is_uint "$wait_s" || fail args "wait must be a whole number" 2
    case $reason in thaw | rollback | kill) ;; *) fail args "unknown reason '$reason'" 2 ;; esac
    [ -d "$BASE" ] || mkdir -p "$BASE" || fail thaw "cannot create $BASE"
    if [ "$staged" = 1 ]; then
        # Started ahead (during the copy): the thaw begins on the controller's go; anything
        # else (stop, or the end of the input) leaves everything as it is.
        say ready 1
        _go=
        IFS= read -r _go || :
        if [ "$_go" != go ]; then
            say status not-started
            exit 0
        fi
    fi

    dir=$BASE/$id
    n=0
    guardian=none
    if [ -d "$dir" ]; then
        load "$dir"
        guardian=dead
        [ -f "$dir/result" ] && guardian=finished
        if [ "$guardian" = dead ] && guardian_alive; then
            request_thaw "$reason"
            if wait_result "$wait_s"; then guardian=told; else guardian=unresponsive; fi
        fi
    fi
    say guardian "$guardian"
    # The guardian's record says how this host was held; without one nothing is touched.
    [ "$guardian" = none ] || hook recover

    # In reverse order: the configured mounts the guardian did not have (the last first), then
    # the guardian's own (it knows what it held). Each is released by the profile, which
    # releases only what this run holds, then checked writable.
    bad=0
    unfroze=0
    _first=1
    for m in "$@"; do # reversed in place: the for list was expanded once
        if [ "$_first" = 1 ]; then set -- "$m"; else set -- "$m" "$@"; fi
        _first=0
    done
    for m in "$@"; do
        in_record "$m" || release_one "$m" unknown 0
    done
    i=$n
    while [ "$i" -ge 1 ]; do
        release_one "$(getv "mount.$i")" "$(getv "mstate.$i")" "$i"
        i=$((i - 1))
    done

    if [ -d "$dir" ] && [ ! -f "$dir/result" ]; then
        # No guardian finished: record what happened, and end the hold in its place.
        [ "$unfroze" = 1 ] && [ ! -f "$dir/thawed_at" ] && setv thawed_at "$(now)"
        if [ "$guardian" = dead ] && mkdir "$dir/finishing" 2>/dev/null; then
            # Guardian and backstop both gone. If we released something, the hold lasted
            # until now, as if we had told it; if not, it ended at an unknown time.
            fired=
            hook end # may find a mount someone else thawed: external-thaw
            if [ -z "$fired" ] && [ "$unfroze" = 1 ]; then fired=thaw; fi
            setv fired "${fired:-guardian-died}"
            setv status thawed
            setv result thawed
        fi
    fi
    [ -d "$dir" ] && report_state
    [ -d "$dir" ] || say now "$(now)"
    [ "$guardian" = none ] || hook verdict
    exit "$bad"
}

# in_record MOUNT: the guardian's record lists MOUNT.
in_record() {
    _j=1
    while [ "$_j" -le "$n" ]; do
        [ "$(getv "mount.$_j")" = "$1" ] && return 0
        _j=$((_j + 1))
    done
    return 1
}

# release_one MOUNT STATE I: the thaw task's release of one mount (I: its number in the
# record, 0 if not there), and its outcome line. Nothing is touched when this run never armed
# a guardian here.
release_one() {
    if [ "$guardian" = none ]; then
        say outcome "not-armed $1"
    elif [ "$2" = busy ]; then
        say outcome "not-ours $1" # held by someone else before we came: never ours
    elif [ ! -d "$1" ]; then
        say outcome "gone $1" # unmounted and removed since: nothing left to release
    else
        outcome=
        hook release "$@"
        _rc=$?
        if [ "$_rc" = 0 ] && ! probe "$1" "$probe_timeout"; then
            say error_step verify
            say error "$1 is not writable after thaw: $probe_err"
            outcome=not-writable
            _rc=1
        fi
        [ "$_rc" = 1 ] && bad=1
        say outcome "$outcome $1"
    fi
}

# ---------------------------------------------------------------- entry

main() {
    [ $# -gt 0 ] || fail args "no command given" 2
    _cmd=$1
    shift
    case $_cmd in
    preflight | arm | thaw)
        allow=0 id='' profile=fsfreeze max_seconds='' step_timeout='' dir='' staged=0
        probe_timeout=10 wait_s=30 reason=thaw
        parse "$@"
        # The runner asked the uid (SKYTAP_QUIESCE_UID); run by hand, ask it here.
        _uid=${SKYTAP_QUIESCE_UID:-}
        is_uint "$_uid" || _uid=$(id -u)
        if [ "$_uid" != 0 ] && hook needs_root; then
            fail "$_cmd" "profile '$profile' freezes filesystems, which needs root, and this \
runs as $(id -un 2>/dev/null || id -u) without sudo: log in as root, or give the user \
passwordless sudo (use_sudo); where filesystems cannot be frozen, use profile 'app' (the \
application's own pause and resume commands; no fsfreeze, no root)" 2
        fi
        "cmd_$_cmd" "$@"
        ;;
    run | backstop) "cmd_$_cmd" "$@" ;;
    *) fail args "unknown command '$_cmd'" 2 ;;
    esac
}
