# Profile "mysql": FLUSH TABLES WITH READ LOCK in a client session the guardian keeps open
# (the lock ends with its session, so a one-shot `mysql -e` would hold nothing), freeze,
# and after the thaw UNLOCK TABLES and end the session. If the guardian dies, the session's
# input closes and the server drops the lock by itself.
# Options: os_user (default root, e.g. socket auth), mysql (client path), defaults_file
# (a my.cnf with the credentials; they never travel on the command line), socket.
PROFILES="$PROFILES mysql"

mysql_pre_freeze() {
    _fifo=$dir/mysql.in
    rm -f "$_fifo"
    if ! mkfifo -m 600 "$_fifo"; then
        step_err="cannot create $_fifo"
        return 1
    fi
    set -- "$(opt mysql mysql)"
    [ -n "$(opt defaults_file)" ] && set -- "$@" "--defaults-extra-file=$(opt defaults_file)"
    set -- "$@" --batch --skip-column-names --unbuffered
    [ -n "$(opt socket)" ] && set -- "$@" "--socket=$(opt socket)"
    _u=$(opt os_user root)
    [ "$_u" = root ] || set -- runuser -u "$_u" -- "$@"
    "$@" <"$_fifo" >"$dir/mysql.out" 2>"$dir/mysql.err" &
    setv mysql_pid $!
    exec 7>"$_fifo"
    printf 'FLUSH TABLES WITH READ LOCK;\nSELECT "skytap-quiesce-locked";\n' >&7
    poll "$step_timeout" mysql_answered
    if grep -q skytap-quiesce-locked "$dir/mysql.out" 2>/dev/null; then
        return 0
    fi
    exec 7>&-
    if ended "$(getv mysql_pid)"; then
        step_err="mysql exited: $(oneline <"$dir/mysql.err")"
        return 1
    fi
    kill "$(getv mysql_pid)" 2>/dev/null
    step_err="FLUSH TABLES WITH READ LOCK did not finish within ${step_timeout} s \
(a long query holds it up); gave up"
    return 124
}

# The lock is held (the marker query answered), or the client is gone.
mysql_answered() {
    grep -q skytap-quiesce-locked "$dir/mysql.out" 2>/dev/null || ended "$(getv mysql_pid)"
}

mysql_post_thaw() {
    # Only the guardian holds the session (fd 7); anywhere else the lock ended with it.
    if ! true 2>/dev/null >&7; then
        return 0
    fi
    printf 'UNLOCK TABLES;\n' >&7
    exec 7>&-
    poll 10 ended "$(getv mysql_pid)" && return 0
    step_err="the mysql session did not end after UNLOCK TABLES"
    kill "$(getv mysql_pid)" 2>/dev/null
    return 1
}
