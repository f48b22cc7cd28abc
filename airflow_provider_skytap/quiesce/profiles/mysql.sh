# Profile "mysql": a lock in a client session the guardian keeps open (the lock ends with its
# session, so a one-shot `mysql -e` would hold nothing), freeze, and after the thaw release the
# lock and end the session. If the guardian dies, the session's input closes and the server
# drops the lock by itself.
# The lock (option lock): on MariaDB 10.4.1 and later (auto, or backup_stage) `BACKUP STAGE
# START; BACKUP STAGE BLOCK_COMMIT`, as mariadb-backup takes it: it does not wait for running
# statements (new commits wait, a long UPDATE runs on); while another backup holds BACKUP STAGE
# it waits for that one's END (writes go on meanwhile) until the step timeout; released by
# `BACKUP STAGE END`. Elsewhere (auto, or ftwrl) FLUSH TABLES WITH READ LOCK, which waits for
# every running statement while already blocking new writes; released by UNLOCK TABLES. The session first asks the server's version (auto decides by it; the log shows it).
# Options: os_user (default root, e.g. socket auth), mysql (client path), defaults_file
# (a my.cnf with the credentials; they never travel on the command line), socket, lock (auto,
# backup_stage, ftwrl; checked on the Airflow side: commands.PROFILE_OPTION_VALUES).
PROFILES="$PROFILES mysql"

mysql_pre_freeze() {
    _fifo=$dir/mysql.in
    rm -f "$_fifo"
    if ! mkfifo -m 600 "$_fifo"; then
        step_err="cannot create $_fifo"
        return 1
    fi
    _t0=$(date +%s)
    set -- "$(opt mysql mysql)"
    [ -n "$(opt defaults_file)" ] && set -- "$@" "--defaults-extra-file=$(opt defaults_file)"
    set -- "$@" --batch --skip-column-names --unbuffered
    [ -n "$(opt socket)" ] && set -- "$@" "--socket=$(opt socket)"
    _u=$(opt os_user root)
    [ "$_u" = root ] || set -- runuser -u "$_u" -- "$@"
    "$@" <"$_fifo" >"$dir/mysql.out" 2>"$dir/mysql.err" 6>&- 9>&- &
    setv mysql_pid $!
    exec 7>"$_fifo"
    printf '%s\n' "SELECT CONCAT('skytap-quiesce-version ', @@version);" >&7
    _stmt='SELECT @@version'
    _why=
    # Go on only once the answer is there: writing to the session of a client that died would
    # end this shell (SIGPIPE).
    if poll "$step_timeout" mysql_answered version &&
        grep -q '^skytap-quiesce-version' "$dir/mysql.out"; then
        _ver=$(sed -n 's/^skytap-quiesce-version //p' "$dir/mysql.out" | head -n 1)
        _lock=$(opt lock auto)
        if [ "$_lock" = auto ]; then
            _lock=ftwrl
            mysql_has_backup_stage "$_ver" && _lock=backup_stage
        fi
        case $_lock in
        backup_stage)
            _stmt='BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT'
            _why=' (another backup holds BACKUP STAGE, or a DDL statement runs)'
            ;;
        ftwrl)
            _stmt='FLUSH TABLES WITH READ LOCK'
            _why=' (a long query holds it up)'
            ;;
        *)
            step_err="profile option lock: unknown value '$_lock' (auto, backup_stage, ftwrl)"
            mysql_abort
            return 1
            ;;
        esac
        setv mysql_lock "$_lock"
        printf 'mysql: server version %s, lock %s (option lock=%s)\n' "$_ver" "$_lock" \
            "$(opt lock auto)"
        printf '%s;\nSELECT "skytap-quiesce-locked";\n' "$_stmt" >&7
        _left=$((step_timeout - ($(date +%s) - _t0)))
        [ "$_left" -ge 1 ] || _left=1
        poll "$_left" mysql_answered locked
    fi
    if grep -q skytap-quiesce-locked "$dir/mysql.out" 2>/dev/null; then
        return 0
    fi
    # Whether the client is gone is asked before its input closes, which would end it.
    if ended "$(getv mysql_pid)"; then
        exec 7>&-
        step_err="mysql exited during $_stmt: $(oneline <"$dir/mysql.err")"
        [ -s "$dir/mysql.err" ] || step_err="$step_err(no error output)"
        return 1
    fi
    exec 7>&-
    kill "$(getv mysql_pid)" 2>/dev/null
    step_err="$_stmt did not finish within ${step_timeout} s$_why; gave up"
    return 124
}

# mysql_answered version|locked: the marker of that query came back, or the client is gone.
mysql_answered() {
    grep -q "^skytap-quiesce-$1" "$dir/mysql.out" 2>/dev/null || ended "$(getv mysql_pid)"
}

# mysql_has_backup_stage VERSION: MariaDB 10.4.1 or later (@@version such as
# 10.11.6-MariaDB-0+deb12u1); MySQL has no BACKUP STAGE.
mysql_has_backup_stage() {
    case $1 in *MariaDB*) ;; *) return 1 ;; esac
    _maj=${1%%.*}
    _r=${1#*.}
    _min=${_r%%.*}
    _r=${_r#*.}
    _pat=${_r%%[!0-9]*}
    is_uint "$_maj" && is_uint "$_min" && is_uint "$_pat" || return 1
    [ "$_maj" -gt 10 ] && return 0
    [ "$_maj" -eq 10 ] || return 1
    [ "$_min" -gt 4 ] && return 0
    [ "$_min" -eq 4 ] && [ "$_pat" -ge 1 ]
}

# End the session without a lock: close its input, and stop the client if it lingers.
mysql_abort() {
    exec 7>&-
    poll 5 ended "$(getv mysql_pid)" || kill "$(getv mysql_pid)" 2>/dev/null
}

mysql_post_thaw() {
    # Only the guardian holds the session (fd 7); anywhere else the lock ended with it.
    if ! true 2>/dev/null >&7; then
        return 0
    fi
    case $(getv mysql_lock) in
    backup_stage) _stmt='BACKUP STAGE END' ;;
    *) _stmt='UNLOCK TABLES' ;;
    esac
    printf '%s;\n' "$_stmt" >&7
    exec 7>&-
    poll 10 ended "$(getv mysql_pid)" && return 0
    step_err="the mysql session did not end after $_stmt"
    kill "$(getv mysql_pid)" 2>/dev/null
    return 1
}
