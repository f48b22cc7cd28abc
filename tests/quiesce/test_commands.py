"""The rules for what QuiesceOperator sends to a VM: validation, quoting, ids, reports."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from importlib import resources

import pytest

from airflow_provider_skytap import checks
from airflow_provider_skytap.quiesce import commands as qc

NASTY = [
    "/data/$(touch /tmp/pwned)",
    "/data/`id`",
    "/data; rm -rf /",
    "/it's here",
    '/say "hi" && reboot',
    "/x | sh",
    "/tab\\n",
]


def test_the_script_ships_as_package_data_and_parses() -> None:
    script = qc.guardian_script()
    assert script.text.startswith("#!/bin/sh\n") and script.text.endswith('main "$@"\n')
    for profile in qc.PROFILES:
        assert f"{profile}_pre_freeze()" in script.text
        assert f"{profile}_post_thaw()" in script.text
    for step in ("needs_root", "check", "prepare", "begin", "end", "recover", "release", "verdict"):
        assert f"fsfreeze_{step}()" in script.text  # the step a profile does not define
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell is not None
    check = subprocess.run([shell, "-n"], input=script.text, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def test_the_hold_core_names_no_profile_but_its_fallback() -> None:
    core = resources.files(qc.__package__).joinpath("guardian.sh").read_text()
    code = "\n".join(line.split("#")[0] for line in core.splitlines())
    others = "|".join(p for p in qc.PROFILES if p != "fsfreeze")
    assert re.search(rf"\b({others})_", code) is None  # no profile's step called by name
    assert re.search(rf"= *\"?({others})\b|\b({others})\)", code) is None  # no profile case


def test_the_script_never_evals() -> None:
    code = [line.split("#")[0] for line in qc.guardian_script().text.splitlines() if "eval" in line]
    assert not any("eval " in line for line in code)


@pytest.mark.parametrize("mount", NASTY)
def test_every_user_value_is_one_quoted_argument(mount: str) -> None:
    args = qc.arm_args(
        "db-1-abc",
        [mount, "/var/lib/pg"],
        profile="custom",
        options={"pre_freeze": f"echo {mount}", "post_thaw": "systemctl start app"},
        max_seconds=60,
        step_timeout=120,
    )
    command = qc.run_command("arm", args, sudo=True)
    words = shlex.split(command)
    assert words[:4] == ["sudo", "-n", "sh", "-c"]
    assert words[5] == qc.guardian_script().path
    assert words[6:] == ["arm", *args]
    assert mount in words and f"pre_freeze=echo {mount}" in words


def test_install_command_carries_the_script_and_its_hash() -> None:
    command = qc.install_command(sudo=False)
    script = qc.guardian_script()
    payload, _, runner = command.partition(" | ")
    assert payload == f"printf %s {script.payload}"  # base64 needs no quoting
    words = shlex.split(runner)
    assert words[-3:] == [qc.LIB_DIR, script.sha256, script.path]


@pytest.mark.parametrize(
    ("mounts", "message"),
    [
        ("/data", "mounts must be a list of absolute paths, got '/data'"),
        (["data"], "mounts: 'data' is not an absolute path"),
        ([], "mounts must name at least one filesystem to freeze, got []"),
        (["/data", "/data/"], "mounts: '/data' is listed twice"),
        (["/a/../b"], "not a normalised path (did you mean '/b'?)"),
        (["/new\nline"], "contains the control or line-separator character"),
        (["/"], "refusing to freeze '/'"),
        (["/boot"], "refusing to freeze '/boot'"),
        (["/var"], "refusing to freeze '/var'"),
    ],
)
def test_mounts_are_validated(mounts: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        qc.validate_mounts(mounts, allow_root_fs=False)


def test_system_mounts_only_when_forced() -> None:
    assert qc.validate_mounts(["/", "/boot", "/data/"], allow_root_fs=True) == [
        "/",
        "/boot",
        "/data",
    ]


def test_mounts_per_target() -> None:
    mapping = qc.validate_mount_map({"db-1": ["/pg"], "*": ["/srv"]}, allow_root_fs=False)
    assert qc.mounts_per_target(mapping, ["db-1", "web-1"]) == {
        "db-1": ["/pg"],
        "web-1": ["/srv"],
    }
    assert qc.mounts_per_target(qc.validate_mount_map(["/a"], allow_root_fs=False), ["x"]) == {
        "x": ["/a"]
    }
    with pytest.raises(ValueError, match=r"mounts has no entry for 'web-1' \(and no '\*' entry\)"):
        qc.mounts_per_target({"db-1": ["/pg"]}, ["db-1", "web-1"])
    with pytest.raises(ValueError, match=r"mounts names \['db-2'\], which are not targets"):
        qc.mounts_per_target({"db-2": ["/pg"], "*": ["/srv"]}, ["db-1"])
    with pytest.raises(ValueError, match=r"mounts\['db-1'\]: mounts: 'pg' is not an absolute"):
        qc.validate_mount_map({"db-1": ["pg"]}, allow_root_fs=False)


@pytest.mark.parametrize("value", ["abc", 0, -5, "0.5", None, True, float("nan"), "inf"])
def test_max_freeze_seconds_must_be_positive(value: object) -> None:
    message = f"max_freeze_seconds must be a positive number of seconds (at least 1), got {value!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        checks.whole_seconds("max_freeze_seconds", value)


def test_seconds_accept_templated_strings_and_never_round_up() -> None:
    assert checks.whole_seconds("x", "90") == 90
    assert checks.whole_seconds("x", 59.9) == 59


@pytest.mark.parametrize(
    ("profile", "options", "commands", "message"),
    [
        (
            "zfs",
            None,
            {},
            "profile must be one of fsfreeze, postgres, mysql, custom, app, got 'zfs'",
        ),
        ("postgres", {"password": "x"}, {}, "profile_options ['password'] are not options"),
        ("fsfreeze", None, {"pre_freeze_command": "true"}, "only used by profile='custom'"),
        ("custom", None, {}, "profile='custom' needs pre_freeze_command"),
        ("postgres", "db", {}, "profile_options must be a mapping, got 'db'"),
        (
            "mysql",
            {"lock": "flush"},
            {},
            "profile_options['lock'] of profile 'mysql' must be one of auto, backup_stage, "
            "ftwrl, got 'flush'",
        ),
        ("mysql", {"lock": None}, {}, "must be one of auto, backup_stage, ftwrl, got ''"),
    ],
)
def test_profiles_are_validated(
    profile: str, options: object, commands: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        qc.validate_profile(profile, options, **commands)  # type: ignore[arg-type]


@pytest.mark.parametrize("lock", ["auto", "backup_stage", "ftwrl"])
def test_mysql_lock_values_pass(lock: str) -> None:
    assert qc.validate_profile("mysql", {"lock": lock, "socket": "/run/m.sock"}) == {
        "lock": lock,
        "socket": "/run/m.sock",
    }


@pytest.mark.parametrize(
    ("version", "backup_stage"),
    [
        ("10.11.19-MariaDB-0+deb12u1", True),  # Debian 12
        ("10.4.1-MariaDB", True),  # BACKUP STAGE's first release
        ("10.4.0-MariaDB", False),
        ("10.3.39-MariaDB-0+deb10u2", False),
        ("11.4.2-MariaDB-log", True),
        ("5.5.68-MariaDB", False),
        ("8.0.36", False),  # MySQL: no BACKUP STAGE
        ("8.4.0-0ubuntu0.24.04.1", False),
        ("MariaDB", False),
        ("", False),
    ],
)
def test_mysql_auto_lock_takes_backup_stage_from_mariadb_10_4_1(
    version: str, backup_stage: bool
) -> None:
    # The profile's own function, run by the shell the VM uses, on @@version as servers give it.
    script = qc.guardian_script().text.removesuffix('main "$@"\n')
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell is not None
    answer = subprocess.run(
        [shell, "-c", script + 'mysql_has_backup_stage "$1"', "sh", version],
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.stderr == ""
    assert (answer.returncode == 0) is backup_stage


def test_profile_options_become_strings() -> None:
    found = qc.validate_profile("postgres", {"port": 5432, "os_user": "postgres"})
    assert found == {"port": "5432", "os_user": "postgres"}
    custom = qc.validate_profile("custom", None, post_thaw_command="systemctl start app")
    assert custom == {"post_thaw": "systemctl start app"}


def test_guardian_ids_are_stable_and_unique_per_dag_run_and_target() -> None:
    one = qc.guardian_id("backup", "scheduled__2026-11-24", "ssh_db")
    assert one == qc.guardian_id("backup", "scheduled__2026-11-24", "ssh_db")
    others = {
        qc.guardian_id("backup", "scheduled__2026-11-25", "ssh_db"),
        qc.guardian_id("backup2", "scheduled__2026-11-24", "ssh_db"),
        qc.guardian_id("backup", "scheduled__2026-11-24", "ssh_web"),
        # no ambiguity from where the separator falls
        qc.guardian_id("backup", "scheduled__2026-11-24ssh_db", ""),
    }
    assert one not in others and len(others) == 4
    weird = qc.guardian_id("d", "r", "../../etc; $(x)")
    assert weird.startswith("etc-x-") and set(weird) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    )


def test_parse_report() -> None:
    out = b"noise\n@@sq status=frozen\n@@sq mount=frozen /a b\n@@sq mount=busy /c\n@@sq error=x=y\n"
    report = qc.parse_report(out)
    assert report["status"] == "frozen"
    assert report["error"] == "x=y"
    assert qc.mount_states(report["mount"]) == {"/a b": "frozen", "/c": "busy"}
    assert report["outcome"] == []


# ---------------------------------------------------------------- profile app


@pytest.mark.parametrize(
    ("commands", "missing"),
    [
        ({}, "pre_freeze_command and post_thaw_command"),
        ({"pre_freeze_command": "kill -STOP 42"}, "post_thaw_command"),
        ({"post_thaw_command": "kill -CONT 42", "pre_freeze_command": ""}, "pre_freeze_command"),
    ],
)
def test_app_needs_both_the_pause_and_the_resume(commands: dict[str, str], missing: str) -> None:
    message = f"profile='app' needs {missing}: it freezes no filesystem, so the application's own"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        qc.validate_profile("app", None, **commands)


def test_app_takes_its_commands_and_no_other_option() -> None:
    found = qc.validate_profile(
        "app", None, pre_freeze_command="kill -STOP 42", post_thaw_command="kill -CONT 42"
    )
    assert found == {"pre_freeze": "kill -STOP 42", "post_thaw": "kill -CONT 42"}
    with pytest.raises(ValueError, match=re.escape("['os_user'] are not options of profile 'app'")):
        qc.validate_profile("app", {"os_user": "x"}, pre_freeze_command="a", post_thaw_command="b")


@pytest.mark.parametrize(
    ("mounts", "message"),
    [
        (["srv/app"], "mounts: 'srv/app' is not an absolute path"),
        (["./data"], "mounts: './data' is not an absolute path"),
        (
            ["/"],
            "mounts: refusing '/', a system directory: list the application's own data "
            "directories (the thaw checks each is writable); pass allow_root_fs=True to force it",
        ),
        (["/srv/app", "/var"], "mounts: refusing '/var', a system directory"),
        ([], "mounts must name at least one directory of the application, got []"),
    ],
)
def test_app_directories_are_validated(mounts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        qc.validate_mounts(mounts, allow_root_fs=False, profile="app")


def test_app_directories_need_not_be_mount_points_and_system_ones_only_when_forced() -> None:
    # Nothing is frozen: any absolute directory will do (the VM checks it exists and is writable).
    assert qc.validate_mounts(["/home/app/data/"], allow_root_fs=False, profile="app") == [
        "/home/app/data"
    ]
    assert qc.validate_mounts(["/"], allow_root_fs=True, profile="app") == ["/"]
    with pytest.raises(ValueError, match=r"mounts\['vm-1'\]: mounts: 'data' is not an absolute"):
        qc.validate_mount_map({"vm-1": ["data"]}, allow_root_fs=False, profile="app")


def test_the_profile_reaches_preflight_and_thaw() -> None:
    # The VM refuses every profile but app to a user other than root, before anything else.
    assert qc.preflight_args("g", ["/d"], allow_root_fs=False, profile="app") == [
        "--id",
        "g",
        "--profile",
        "app",
        "--",
        "/d",
    ]
    thaw = qc.thaw_args("g", ["/d"], reason="thaw", probe_timeout=10, wait=30, profile="app")
    assert thaw[:4] == ["--id", "g", "--profile", "app"] and thaw[-2:] == ["--", "/d"]


def test_the_per_user_state_dir_is_found_on_the_vm() -> None:
    # The Airflow side never names it: the runner reads the uid on the VM, and root keeps
    # /run/skytap-quiesce (the path given as $0).
    words = shlex.split(qc.run_command("thaw", ["--id", "g"], sudo=False))
    runner = words[2]
    assert words[3] == qc.guardian_script().path
    assert runner.startswith('u=$(id -u); if [ "$u" = 0 ]; then s=$0; else')
    assert 'export SKYTAP_QUIESCE_UID="$u"; exec sh "$s" "$@"' in runner  # asked once
    assert "b=/tmp/skytap-quiesce-$u" in runner and "s=$b/lib/${0##*/}" in runner
    assert "/tmp/skytap-quiesce-0" not in runner
