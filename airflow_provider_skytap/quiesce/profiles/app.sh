# Profile "app": the application's own pause and resume; no filesystem is frozen, and no root is
# needed (as a user other than root the guardian runs as that user). pre_freeze pauses the
# application (kill -STOP PID, a database's own "suspend writes"); the guardian runs it only
# once its deadline timer and backstop are armed. post_thaw resumes it, whoever ends the hold:
# the guardian when told, on a signal or at the deadline; the backstop if the guardian dies;
# the thaw task if both died. The resume also runs after a pause that failed or timed out (it
# may have paused part of the application), and may run twice: it must be harmless on an
# application that is not paused. The "mounts" are the application's directories: the thaw
# checks each is writable.
# Options: pre_freeze, post_thaw (both required). Like custom's, the commands run under sh with
# the step timeout and see SKYTAP_QUIESCE_MOUNTS and SKYTAP_QUIESCE_STEP.

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
