# Profile "app": the application's own pause and resume; no filesystem is frozen, and no root is
# needed (as a user other than root the guardian runs as that user). begin pauses the
# application (pre_freeze: kill -STOP PID, a database's own "suspend writes"); the core runs it
# only once its deadline timer and backstop are armed. end resumes it (post_thaw), whoever ends
# the hold: the guardian when told, on a signal or at the deadline; the backstop if the guardian
# dies; the thaw task if both died. The resume also runs after a pause that failed or timed out
# (it may have paused part of the application), and may run twice: it must be harmless on an
# application that is not paused. The "mounts" are the application's directories: plain
# directories on any filesystem, checked writable by preflight and by the thaw.
# Options: pre_freeze, post_thaw (both required). Like custom's, the commands run under sh with
# the step timeout and see SKYTAP_QUIESCE_MOUNTS and SKYTAP_QUIESCE_STEP.
PROFILES="$PROFILES app"

app_needs_root() { return 1; }

# set_mstates FROM TO: every mount in state FROM goes to state TO.
set_mstates() {
    _i=1
    while [ "$_i" -le "$n" ]; do
        [ "$(getv "mstate.$_i")" = "$1" ] && setv "mstate.$_i" "$2"
        _i=$((_i + 1))
    done
    return 0
}
app_prepare() { return 0; }

app_check() {
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
}

app_pre_freeze() {
    if [ -z "$(opt pre_freeze)" ]; then
        step_err="no pause command (pre_freeze_command)"
        return 2
    fi
    custom_env pre-freeze
    run_step pre-freeze sh -c "$(opt pre_freeze)"
}

# app_post_thaw [STEP]: the resume; STEP names its output files (default post-thaw).
app_post_thaw() {
    if [ -z "$(opt post_thaw)" ]; then
        step_err="no resume command (post_thaw_command)"
        return 2
    fi
    custom_env post-thaw
    run_step "${1:-post-thaw}" sh -c "$(opt post_thaw)"
}

app_begin() {
    setv pause_started "$(now)"
    step_err=
    app_pre_freeze
    _rc=$?
    setv pre_freeze_rc "$_rc"
    [ -d "$dir/finishing" ] && return "$_rc" # ended meanwhile: the core resumes again
    if [ "$_rc" -ne 0 ]; then
        setv error_step pre-freeze
        setv error "app pre-freeze (the pause) failed (exit $_rc): $step_err"
        return "$_rc"
    fi
    setv frozen_at "$(now)"
    set_mstates pending paused
}

# end [again]: the resume (once the pause was started), then the directories' states and the
# time it ended (not when the resume failed: the application may still be paused). Again: the
# hold ended while the pause ran, which may have taken effect after that resume.
app_end() {
    [ -f "$dir/pause_started" ] || return 0
    if [ "${1-}" = again ]; then
        app_post_thaw post-thaw-again
        return
    fi
    post_step app_post_thaw
    [ "$(getv post_thaw_rc 0)" = 0 ] || return 0
    set_mstates paused resumed
    if [ -f "$dir/frozen_at" ] && [ ! -f "$dir/thawed_at" ]; then setv thawed_at "$(now)"; fi
}

# recover: in the thaw task. A guardian that finished or answered has run the resume; one that
# died (with its backstop) before it did leaves that to us, as does a resume that failed (a
# retry of the thaw task tries it again). Sets app_outcome for each directory.
app_recover() {
    app_outcome=resumed-by-guardian
    case $guardian in
    finished | told)
        [ -f "$dir/pause_started" ] || return 0
        [ "$(getv post_thaw_rc 0)" = 0 ] && return 0
        mkdir "$dir/resuming" 2>/dev/null || return 0 # another thaw is at it
        rm -f "$dir/post_thaw_rc" "$dir/post_thaw_error"
        app_end
        rmdir "$dir/resuming"
        app_outcome=resumed
        ;;
    dead)
        # Nobody resumed yet: the pause held until now. A finisher that died half-way leaves
        # "finishing" without a resume; the resume is safe to run twice, so run it all the same.
        if mkdir "$dir/finishing" 2>/dev/null || [ ! -f "$dir/post_thaw_rc" ]; then
            app_end
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

app_release() {
    outcome=$app_outcome # nothing frozen: the application was paused, or not
    return 0
}

# verdict: after the record (a later error line wins).
app_verdict() {
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
