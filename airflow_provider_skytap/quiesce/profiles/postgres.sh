# Profile "postgres": CHECKPOINT, then freeze. A restart from the copy is then a short crash
# recovery, which is valid only if the data directory, WAL and every tablespace are among the
# frozen mounts. psql runs as the OS user (default postgres) with the guardian's step timeout.
# Options: os_user, psql (client path), host (socket dir or host), port, database.
PROFILES="$PROFILES postgres"

postgres_pre_freeze() {
    set -- "$(opt psql psql)" -X -q -v ON_ERROR_STOP=1 -c CHECKPOINT
    [ -n "$(opt host)" ] && set -- "$@" -h "$(opt host)"
    [ -n "$(opt port)" ] && set -- "$@" -p "$(opt port)"
    [ -n "$(opt database)" ] && set -- "$@" -d "$(opt database)"
    as_user "$(opt os_user postgres)" pre-freeze "$@"
}

postgres_post_thaw() { return 0; }

# as_user USER STEP CMD...: run_step as USER (root: directly).
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
