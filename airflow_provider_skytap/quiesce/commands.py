"""The commands QuiesceOperator sends to a VM, and the rules for the values that go into them.

The VM side is one fixed script, ``guardian.sh`` with the ``profiles/*.sh`` appended, shipped
as package data. It is installed once per boot under ``/run/skytap-quiesce/lib/<sha256 prefix>.sh``
(content-addressed, checked with ``sha256sum`` on arrival; a user other than root without sudo,
which only profile ``app`` allows, gets its own directory instead: see :data:`USER_STATE_DIR`)
and then run with short commands whose every argument comes from :func:`shlex.quote`. Nothing
a DAG author writes is ever spliced into shell code: mounts, option values and ids travel as
single arguments, and the script only stores them in files or passes them on as ``"$@"``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from airflow_provider_skytap.exceptions import ReportError as ReportError

PROFILES = ("fsfreeze", "postgres", "mysql", "custom", "app")
PROFILE_OPTIONS: Mapping[str, frozenset[str]] = {
    "fsfreeze": frozenset(),
    "postgres": frozenset({"os_user", "psql", "host", "port", "database"}),
    "mysql": frozenset({"os_user", "mysql", "defaults_file", "socket", "lock"}),
    "custom": frozenset({"pre_freeze", "post_thaw"}),
    "app": frozenset({"pre_freeze", "post_thaw"}),
}
# The options that take one of a few values (profile -> option -> values, the default first).
# mysql lock: auto (BACKUP STAGE on MariaDB 10.4.1 and later, else FLUSH TABLES WITH READ
# LOCK), backup_stage, ftwrl; profiles/mysql.sh implements each.
PROFILE_OPTION_VALUES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "mysql": {"lock": ("auto", "backup_stage", "ftwrl")},
}
# The profile that freezes no filesystem: the application's own pause and resume. Its "mounts"
# are plain directories, and it needs no root.
APP = "app"
# The profiles that take pre_freeze_command / post_thaw_command.
COMMAND_PROFILES = frozenset({"custom", APP})


def _system_mounts() -> frozenset[str]:
    """The guardian's SYSTEM_MOUNTS line: freezing these can hang the host, sshd and sudo;
    refused unless the DAG author forces it with allow_root_fs=True."""
    text = resources.files(__package__).joinpath("guardian.sh").read_text()
    found = re.search(r"^SYSTEM_MOUNTS='([^']*)'$", text, re.MULTILINE)
    if found is None:
        raise RuntimeError("guardian.sh has no SYSTEM_MOUNTS line")
    return frozenset(found.group(1).split())


SYSTEM_MOUNTS = _system_mounts()
STATE_DIR = "/run/skytap-quiesce"
LIB_DIR = f"{STATE_DIR}/lib"
# A user other than root (profile app without sudo) keeps the script and the guardians' records
# here instead. The uid is read on the VM, and the Airflow side never names the directory: the
# freeze and the thaw task find the same one. /tmp rather than $XDG_RUNTIME_DIR, because logind
# removes that at the user's last logout, which falls between the freeze task and the thaw task.
USER_STATE_DIR = "/tmp/skytap-quiesce-<uid>"  # noqa: S108 (made 0700 and its owner checked)
# Shell: set b to that directory, made 0700 if missing; refuse it (an @@sq error line, exit 1)
# unless it is a real directory of this user that nobody else may write to, since the script
# run from it and the records in it decide what runs as this user.
_UID_SH = "u=$(id -u); "
_USER_DIR_SH = _UID_SH + (
    'b=/tmp/skytap-quiesce-$u; w=; mkdir -m 700 "$b" 2>/dev/null || :; '
    'if [ -L "$b" ] || [ ! -d "$b" ]; then w="is not a directory"; '
    'elif [ "$(stat -c %u "$b")" != "$u" ]; then '
    'w="belongs to uid $(stat -c %u "$b"), not to this user (uid $u)"; '
    'elif [ $((0$(stat -c %a "$b") & 022)) != 0 ]; then '
    'w="may be written by its group or others (mode $(stat -c %a "$b"))"; fi; '
    'if [ -n "$w" ]; then printf "@@sq error=%s\\n" "$b $w: refusing to keep the guardian script '
    "and its records there, where someone else could change them; remove it, or chown it to this "
    'user with mode 0700"; exit 1; fi; '
)
# The script's own exit code for "not installed here": the operator installs it and retries.
NOT_INSTALLED = 99
REPORT_PREFIX = "@@sq "
# Report keys that may appear several times (one line per mount).
LIST_KEYS = frozenset({"mount", "outcome", "mount_ok"})
# How the guardian's hold ended when it did not end by the thaw task: the copy may be torn.
# "external-thaw": a mount the guardian held was unfrozen by someone else while it held it.
GUARDIAN_FIRED = frozenset({"deadline", "signal", "guardian-died", "backstop", "external-thaw"})
# The report's one line terminator is "\n". Any other character some reader takes for a line
# end or a control (C0, DEL, C1, U+2028/9) has no place in a report value or a mount name:
# the script strips them from what it quotes, and refuses mounts holding them.
_LINE_BREAKERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def bad_character(text: str) -> str | None:
    """The first control or line-separator character in ``text``, as ``U+XXXX``, or None."""
    found = _LINE_BREAKERS.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


@dataclass(frozen=True)
class GuardianScript:
    """The VM-side script: its text, its sha256 (the installed file's name) and its payload."""

    text: str
    sha256: str

    @property
    def path(self) -> str:
        return f"{LIB_DIR}/{self.sha256[:16]}.sh"

    @property
    def payload(self) -> str:
        """gzip + base64 of the text: one shell word, safe to send inside single quotes."""
        return base64.b64encode(gzip.compress(self.text.encode(), 9, mtime=0)).decode()


@lru_cache(maxsize=1)
def guardian_script() -> GuardianScript:
    """guardian.sh, then each profile, then the call of ``main``; read from package data."""
    pkg = resources.files(__package__)
    parts = [pkg.joinpath("guardian.sh").read_text()]
    parts += [pkg.joinpath("profiles", f"{name}.sh").read_text() for name in PROFILES]
    text = "#!/bin/sh\n" + "\n".join(parts) + '\nmain "$@"\n'
    return GuardianScript(text, hashlib.sha256(text.encode()).hexdigest())


def _sudo(sudo: bool) -> str:
    return "sudo -n " if sudo else ""


def run_command(action: str, args: Sequence[str], *, sudo: bool) -> str:
    """Run the installed script; exit code ``NOT_INSTALLED`` when it is not there (yet).

    As root the script is ``$0``, under ``/run/skytap-quiesce``; any other user runs the copy in
    its own directory (:data:`USER_STATE_DIR`), found and checked on the VM.
    """
    script = guardian_script()
    # The uid is asked once, here, and handed to the script (one fork less per command).
    user_dir = _USER_DIR_SH[len(_UID_SH) :]
    runner = (
        f'{_UID_SH}if [ "$u" = 0 ]; then s=$0; else {user_dir}s=$b/lib/${{0##*/}}; fi; '
        f'[ -f "$s" ] || exit {NOT_INSTALLED}; export SKYTAP_QUIESCE_UID="$u"; exec sh "$s" "$@"'
    )
    words = ["sh", "-c", runner, script.path, action, *args]
    return _sudo(sudo) + shlex.join(words)


def install_command(*, sudo: bool) -> str:
    """Write the script to ``/run/skytap-quiesce/lib/<sha256 prefix>.sh`` (another user than
    root: the same name in its own directory), checking its hash."""
    script = guardian_script()
    install = (
        'set -eu; umask 077; if [ "$(id -u)" != 0 ]; then '
        + _USER_DIR_SH
        + 'set -- "$b/lib" "$2" "$b/lib/${3##*/}"; fi; '
        'mkdir -p "$1"; t=$(mktemp "$1/.in.XXXXXX"); '
        'base64 -d | gzip -dc >"$t"; '
        'if printf "%s  %s\\n" "$2" "$t" | sha256sum -c --status; then mv -f "$t" "$3"; '
        'else rm -f "$t"; echo "the script arrived damaged (sha256 mismatch)" >&2; exit 1; fi'
    )
    return (
        f"printf %s {shlex.quote(script.payload)} | "
        + _sudo(sudo)
        + shlex.join(
            ["sh", "-c", install, "skytap-quiesce-install", LIB_DIR, script.sha256, script.path]
        )
    )


def parse_report(stdout: bytes | str) -> dict[str, Any]:
    """The script's ``@@sq key=value`` lines; LIST_KEYS collect every value, others the last.

    Lines end at ``\n`` only (never ``str.splitlines``, which also splits at ``\v``, ``\x85``
    or U+2028 that a command's output may carry). A report line whose key or value holds a
    control or line-separator character raises :class:`ReportError` naming the key.
    """
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    report: dict[str, Any] = {key: [] for key in LIST_KEYS}
    for line in text.split("\n"):
        if not line.startswith(REPORT_PREFIX):
            continue
        key, _, value = line[len(REPORT_PREFIX) :].partition("=")
        bad = bad_character(line)
        if bad is not None:
            raise ReportError(
                f"the report line for {key[:40]!r} holds the character {bad}, which the guardian "
                "strips: refusing a report that may be forged by a command's output"
            )
        if key in LIST_KEYS:
            report[key].append(value)
        else:
            report[key] = value
    return report


def mount_states(lines: Iterable[str]) -> dict[str, str]:
    """``["frozen /data", ...]`` -> ``{"/data": "frozen"}``."""
    states: dict[str, str] = {}
    for line in lines:
        state, _, mount = line.partition(" ")
        states[mount] = state
    return states


# ---------------------------------------------------------------- validation


def validate_mounts(mounts: Any, *, allow_root_fs: bool, profile: str = "fsfreeze") -> list[str]:
    """Absolute, normalised, distinct paths; system filesystems only when forced.

    For profile ``app`` the paths are plain directories (nothing is frozen); the same rules
    apply, and the messages say directories.
    """
    if isinstance(mounts, str) or not isinstance(mounts, Iterable):
        raise ValueError(f"mounts must be a list of absolute paths, got {mounts!r}")
    found: list[str] = []
    for mount in mounts:
        if not isinstance(mount, str) or not mount.startswith("/"):
            raise ValueError(f"mounts: {mount!r} is not an absolute path")
        bad = bad_character(mount)
        if bad is not None:
            raise ValueError(
                f"mounts: {mount!r} contains the control or line-separator character {bad}"
            )
        norm = posixpath.normpath(mount)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        if norm != mount.rstrip("/") and not (mount == "/" and norm == "/"):
            raise ValueError(f"mounts: {mount!r} is not a normalised path (did you mean {norm!r}?)")
        if norm in SYSTEM_MOUNTS and not allow_root_fs:
            if profile == APP:
                raise ValueError(
                    f"mounts: refusing {norm!r}, a system directory: list the application's own "
                    "data directories (the thaw checks each is writable); pass allow_root_fs=True "
                    "to force it"
                )
            raise ValueError(
                f"mounts: refusing to freeze {norm!r}: freezing a system filesystem can hang the "
                "host, its SSH logins and sudo; pass allow_root_fs=True to force it"
            )
        if norm in found:
            raise ValueError(f"mounts: {norm!r} is listed twice")
        found.append(norm)
    if not found:
        if profile == APP:
            raise ValueError(
                f"mounts must name at least one directory of the application, got {mounts!r}"
            )
        raise ValueError(f"mounts must name at least one filesystem to freeze, got {mounts!r}")
    return found


def validate_mount_map(
    mounts: Any, *, allow_root_fs: bool, profile: str = "fsfreeze"
) -> dict[str, list[str]]:
    """``mounts`` as a mapping target name -> mounts; a plain list applies to every target."""
    if not isinstance(mounts, Mapping):
        return {"*": validate_mounts(mounts, allow_root_fs=allow_root_fs, profile=profile)}
    if not mounts:
        raise ValueError(f"mounts must not be an empty mapping, got {mounts!r}")
    found: dict[str, list[str]] = {}
    for name, paths in mounts.items():
        try:
            found[str(name)] = validate_mounts(paths, allow_root_fs=allow_root_fs, profile=profile)
        except ValueError as exc:
            raise ValueError(f"mounts[{name!r}]: {exc}") from None
    return found


def mounts_per_target(
    mounts: Mapping[str, list[str]], names: Sequence[str]
) -> dict[str, list[str]]:
    """Each target's mounts: its own entry, else ``"*"``; a key naming no target is an error."""
    unknown = sorted(set(mounts) - set(names) - {"*"})
    if unknown:
        raise ValueError(
            f"mounts names {unknown!r}, which are not targets; targets: {list(names)!r}"
        )
    found: dict[str, list[str]] = {}
    for name in names:
        if name not in mounts and "*" not in mounts:
            raise ValueError(f"mounts has no entry for {name!r} (and no '*' entry)")
        found[name] = mounts.get(name, mounts.get("*", []))
    return found


def validate_profile(
    profile: Any,
    options: Mapping[str, Any] | None,
    *,
    pre_freeze_command: str | None = None,
    post_thaw_command: str | None = None,
) -> dict[str, str]:
    """The profile's options as strings, unknown keys refused; custom and app commands folded
    in (``app`` needs both: the pause and the resume)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"profile_options must be a mapping, got {options!r}")
    found = {str(k): "" if v is None else str(v) for k, v in (options or {}).items()}
    for key, command in (("pre_freeze", pre_freeze_command), ("post_thaw", post_thaw_command)):
        if command is None or command == "":
            continue
        if profile not in COMMAND_PROFILES:
            raise ValueError(
                f"{key}_command is only used by profile='custom' or 'app' (profile is {profile!r})"
            )
        if not isinstance(command, str):
            raise ValueError(f"{key}_command must be a shell command line, got {command!r}")
        found[key] = command
    unknown = sorted(set(found) - PROFILE_OPTIONS[profile])
    if unknown:
        allowed = sorted(PROFILE_OPTIONS[profile]) or "none"
        raise ValueError(
            f"profile_options {unknown!r} are not options of profile {profile!r} "
            f"(its options: {allowed})"
        )
    for key, value in found.items():
        if "\0" in value:
            raise ValueError(f"profile_options[{key!r}] contains a NUL byte")
        values = PROFILE_OPTION_VALUES.get(profile, {}).get(key)
        if values is not None and value not in values:
            raise ValueError(
                f"profile_options[{key!r}] of profile {profile!r} must be one of "
                f"{', '.join(values)}, got {value!r}"
            )
    if profile == "custom" and not found:
        raise ValueError("profile='custom' needs pre_freeze_command and/or post_thaw_command")
    if profile == APP:
        missing = [f"{key}_command" for key in ("pre_freeze", "post_thaw") if not found.get(key)]
        if missing:
            raise ValueError(
                f"profile='app' needs {' and '.join(missing)}: it freezes no filesystem, so the "
                "application's own pause (pre_freeze_command, e.g. kill -STOP <pid>) is the "
                "freeze, and its resume (post_thaw_command, e.g. kill -CONT <pid>) the thaw"
            )
    return found


_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


def guardian_id(dag_id: str, run_id: str, target: str) -> str:
    """The guardian's name on the VM, the same in the freeze and the thaw task of one run.

    Unique per (DAG, run, target): several targets may be one machine (tests: one sshd), and
    the thaw task finds the guardian from these three alone, without the freeze task's XCom.
    """
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{target}".encode()).hexdigest()[:20]
    slug = _SLUG.sub("-", target).strip("-")[:40] or "target"
    return f"{slug}-{digest}"


def preflight_args(
    gid: str, mounts: Sequence[str], *, allow_root_fs: bool, profile: str = "fsfreeze"
) -> list[str]:
    args = ["--id", gid, "--profile", profile]
    return [*args, *(["--allow-system-mounts"] if allow_root_fs else []), "--", *mounts]


def arm_args(
    gid: str,
    mounts: Sequence[str],
    *,
    profile: str,
    options: Mapping[str, str],
    max_seconds: int,
    step_timeout: int,
    staged: bool = False,
) -> list[str]:
    args = ["--id", gid, "--profile", profile, "--max-seconds", str(max_seconds)]
    args += ["--step-timeout", str(step_timeout)]
    for key, value in sorted(options.items()):
        args += ["--opt", f"{key}={value}"]
    return [*args, *(["--staged"] if staged else []), "--", *mounts]


# arm --staged says this line when its guardian is ready, thaw --staged when it is started; each
# then reads go (or stop).
READY_LINE = REPORT_PREFIX + "ready=1"


def thaw_args(
    gid: str,
    mounts: Sequence[str],
    *,
    reason: str,
    probe_timeout: int,
    wait: int,
    profile: str = "fsfreeze",
    staged: bool = False,
) -> list[str]:
    args = ["--id", gid, "--profile", profile, "--reason", reason]
    args += ["--probe-timeout", str(probe_timeout), *(["--staged"] if staged else [])]
    return [*args, "--wait", str(wait), "--", *mounts]
