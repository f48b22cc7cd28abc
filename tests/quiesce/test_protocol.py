"""The report channel and the freeze window: what a command's output or a VM's clock can do."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_skytap.quiesce import commands as qc
from airflow_provider_skytap.quiesce.report import Answer, HostReport, ThawReport, boot_id


@pytest.mark.parametrize("separator", ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\r"])
def test_a_value_cannot_carry_a_second_report_line(separator: str) -> None:
    """Finding 3: only ``\\n`` ends a line; a value holding another separator is refused."""
    stdout = f"@@sq fired=deadline\n@@sq post_thaw_error=oops{separator}@@sq fired=thaw\n"
    with pytest.raises(qc.ReportError, match="post_thaw_error"):
        qc.parse_report(stdout)
    # Alone on its line, the forged text is only text: the value keeps it, nothing splits.
    report = qc.parse_report("@@sq fired=deadline\n@@sq post_thaw_error=oops @@sq fired=thaw\n")
    assert report["fired"] == "deadline"


@pytest.mark.parametrize("mount", ["/data\u2028x", "/data\x85x", "/data\u2029", "/data\x7f"])
def test_mounts_with_separator_characters_are_refused(mount: str) -> None:
    with pytest.raises(ValueError, match="mounts"):
        qc.validate_mounts([mount], allow_root_fs=False)


def _host(name: str, frozen_at: float, thawed_at: float, **kwargs: object) -> HostReport:
    return HostReport(
        host=name,
        target=name,
        guardian_id=name,
        profile="fsfreeze",
        status="thawed",
        frozen_at=frozen_at,
        thawed_at=thawed_at,
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_freeze_window_never_spans_two_clocks() -> None:
    """Finding 4: two 5 s freezes, one VM's clock an hour ahead, made a 3605 s window."""
    ahead = 3600.0
    hosts = [_host("a", 1000.0, 1005.0), _host("b", 1000.5 + ahead, 1005.5 + ahead)]
    window = ThawReport(hosts).window()
    assert window == {"seconds": 5.0, "clock": "per-host", "longest_host_seconds": 5.0}
    # Placed on the controller's monotonic clock (each host's freeze and thaw by its own
    # measure of how long before its answer they were): the whole is 5.5 s.
    hosts[0].frozen_mono, hosts[0].thawed_mono = 50.0, 55.0
    hosts[1].frozen_mono, hosts[1].thawed_mono = 50.5, 55.5
    for host in hosts:
        host.mono_boot = boot_id()
    assert ThawReport(hosts).window() == {
        "seconds": 5.5,
        "clock": "controller",
        "longest_host_seconds": 5.0,
    }
    # Readings of another machine's (or boot's) monotonic clock are not ours to subtract.
    hosts[1].mono_boot = "another-boot"
    assert ThawReport(hosts).window()["clock"] == "per-host"


def test_a_vm_clock_more_than_a_second_off_is_a_warning(caplog) -> None:
    host = _host("vm-1", 1000.0, 1005.0)
    on_time = Answer({"now": "2000.2"}, sent_wall=2000.0, received_wall=2000.1, received_mono=9.0)
    with caplog.at_level(logging.WARNING):
        host.note_clock(on_time)
    assert host.clock_offset == 0.0 and not caplog.records
    late = Answer({"now": "5600.05"}, sent_wall=2000.0, received_wall=2000.1, received_mono=9.0)
    with caplog.at_level(logging.WARNING):
        host.note_clock(late)
    assert host.clock_offset == 3600.0
    assert "vm-1: the VM's clock is +3600.0 s off the controller's" in caplog.text
