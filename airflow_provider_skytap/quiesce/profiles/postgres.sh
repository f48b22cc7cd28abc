# Profile "postgres": CHECKPOINT, then freeze. A restart from the copy is then a short crash
# recovery, which is valid only if the data directory, WAL and every tablespace are among the
# frozen mounts. psql runs as the OS user (default postgres) with the guardian's step timeout.
# Options: os_user, psql (client path), host (socket dir or host), port, database.

postgres_pre_freeze() {
    set -- "$(opt psql psql)" -X -q -v ON_ERROR_STOP=1 -c CHECKPOINT
    [ -n "$(opt host)" ] && set -- "$@" -h "$(opt host)"
    [ -n "$(opt port)" ] && set -- "$@" -p "$(opt port)"
    [ -n "$(opt database)" ] && set -- "$@" -d "$(opt database)"
    as_user "$(opt os_user postgres)" pre-freeze "$@"
}

postgres_post_thaw() { return 0; }
