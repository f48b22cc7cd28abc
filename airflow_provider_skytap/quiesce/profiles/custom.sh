# Profile "custom": the DAG author's own commands, run by sh as root with the step timeout:
# pre_freeze before the first fsfreeze (a failure stops the freeze), post_thaw after the
# last fsfreeze -u. They must not write to the mounts being frozen.
# Options: pre_freeze, post_thaw (shell command lines, passed as single quoted arguments).
# The commands see SKYTAP_QUIESCE_MOUNTS (this host's mounts, one per line) and
# SKYTAP_QUIESCE_STEP (pre-freeze or post-thaw).
PROFILES="$PROFILES custom"

custom_env() {
    SKYTAP_QUIESCE_STEP=$1
    SKYTAP_QUIESCE_MOUNTS=$(
        _i=1
        while [ "$_i" -le "$n" ]; do
            cat "$dir/mount.$_i"
            _i=$((_i + 1))
        done
    )
    export SKYTAP_QUIESCE_STEP SKYTAP_QUIESCE_MOUNTS
}

custom_pre_freeze() {
    [ -n "$(opt pre_freeze)" ] || return 0
    custom_env pre-freeze
    run_step pre-freeze sh -c "$(opt pre_freeze)"
}

custom_post_thaw() {
    [ -n "$(opt post_thaw)" ] || return 0
    custom_env post-thaw
    run_step post-thaw sh -c "$(opt post_thaw)"
}
