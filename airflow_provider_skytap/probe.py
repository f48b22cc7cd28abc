"""Check, on a real Skytap account, every Skytap behaviour this provider depends on.

``python -m airflow_provider_skytap.probe --conn-id skytap_default --environment-id N``

Read-only by default: authentication and ``Accept``, the environment and template shapes the
provider reads, paging by offset and ``Content-Range``, ``tags=true`` in lists,
``scope=company``, and whether the environment's region is known. ``--allow-copy`` also saves
the environment once as a template (a live clone) and checks what that proves; ``--dr-region R``
then copies that template once to region R with the override. Everything the probe made is
deleted at the end, also when a step fails, and the probe says what it deleted.

Prints one line per behaviour: ``confirmed``, ``differs`` (with what it saw) or ``not checked``
(with why). Exits 1 when anything differs or something it made could not be deleted, 2 on a
usage or connection error, 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_skytap.hooks.api import (
    PAGE_SIZE,
    Kind,
    Response,
    SkytapApi,
    check_id,
    check_region,
    check_resource,
    describe,
    tag_values,
)
from airflow_provider_skytap.hooks.skytap import (
    SkytapAuthError,
    SkytapError,
    SkytapHook,
    SkytapNotFoundError,
)

Status = Literal["confirmed", "differs", "not checked"]
PROBE_PREFIX = "skytap-probe-"
PROBE_TAG = "skytap-probe"
log = logging.getLogger("airflow_provider_skytap.probe")


@dataclass
class Row:
    """One behaviour and what the probe found."""

    key: str
    behaviour: str
    status: Status = "not checked"
    detail: str = ""


@dataclass
class Probe:
    """Runs the checks through a :class:`SkytapHook` and keeps the table.

    :param hook: the hook of the connection to probe
    :param environment_id: a running environment of the account
    :param template_id: a template to read (default: the first one the list shows)
    :param allow_copy: save the environment once as a template (live) and delete it after
    :param dr_region: with ``allow_copy``, copy that template once to this region
    :param timeout: seconds to wait for each copy
    :param poll: the first pause between polls, seconds
    """

    hook: SkytapHook
    environment_id: str
    template_id: str | None = None
    allow_copy: bool = False
    dr_region: str | None = None
    timeout: float = 4 * 3600
    poll: float = 5.0
    rows: dict[str, Row] = field(default_factory=dict)
    made: list[tuple[str, str]] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)
    failure: str | None = None

    def __post_init__(self) -> None:
        for key, text in BEHAVIOURS:
            self.rows[key] = Row(key, text)

    # ---- bookkeeping

    def mark(self, key: str, status: Status, detail: str) -> None:
        row = self.rows[key]
        if row.status == "differs" and status == "confirmed":
            return  # a later confirmation never hides a difference
        row.status, row.detail = status, detail

    def skip_rest(self, keys: Sequence[str], why: str) -> None:
        for key in keys:
            if self.rows[key].status == "not checked" and not self.rows[key].detail:
                self.rows[key].detail = why

    @property
    def api(self) -> SkytapApi:
        return self.hook.api

    def page(self, kind: Kind, **params: Any) -> tuple[Any, Response]:
        """One list page, unchecked, through the hook's retry loop."""
        return self.hook.run(self.api.raw_page(kind, **params))

    # ---- the run

    def run(self) -> int:
        """Every check, then the cleanup; answers the exit status."""
        try:
            self.read_only()
            if self.allow_copy:
                self.copies()
            else:
                self.skip_rest(COPY_KEYS, "needs --allow-copy")
        except (SkytapError, ValueError) as err:
            self.failure = f"stopped early: {err}"
            self.skip_rest([k for k, _ in BEHAVIOURS], "the probe stopped early")
        finally:
            self.delete_made()
        differs = any(r.status == "differs" for r in self.rows.values())
        leftover = any(line.startswith("NOT deleted") for line in self.cleanup)
        return 1 if differs or leftover or self.failure else 0

    def read_only(self) -> None:
        env = self.check_auth_and_environment()
        if env is None:
            self.skip_rest([k for k, _ in BEHAVIOURS], "the environment could not be read")
            return
        self.check_region(env)
        self.check_scope()
        self.check_paging()
        self.check_list_tags(env)
        self.check_template()

    def check_auth_and_environment(self) -> dict[str, Any] | None:
        eid = self.environment_id
        try:
            data, response = self.hook.run(self.api.raw_get("environment", eid))
        except SkytapNotFoundError as err:
            self.mark("auth", "confirmed", "authenticated (the environment answered 404)")
            self.failure = f"environment {eid} not found: {err}"
            return None
        except SkytapError as err:
            self.mark("auth", "differs", str(err))
            return None
        kind = response.header("Content-Type") or ""
        if "json" not in kind.lower():
            self.mark("auth", "differs", f"answered Content-Type {kind!r}, not JSON")
        else:
            self.mark("auth", "confirmed", f"HTTP {response.status}, {kind}")
        try:
            env = check_resource("environment", data, f"get environment {eid}")
        except SkytapError as err:
            self.mark("environment_shape", "differs", str(err))
            return None
        missing = [k for k in ENV_FIELDS if k not in env]
        vms = env.get("vms") or []
        vm_missing = sorted({k for vm in vms for k in VM_FIELDS if k not in vm})
        if missing or vm_missing or not vms:
            self.mark(
                "environment_shape",
                "differs",
                f"missing {missing + [f'vms[].{k}' for k in vm_missing]}"
                if vms or missing
                else "no vms",
            )
        else:
            self.mark(
                "environment_shape",
                "confirmed",
                f"{describe('environment', eid, env)}: runstate {env['runstate']}, "
                f"{len(vms)} VMs, region {env['region']}",
            )
        return env

    def check_region(self, env: dict[str, Any]) -> None:
        region = env.get("region")
        try:
            check_region(region, self.hook.settings.regions, what="the environment's region")
        except ValueError as err:
            self.mark("region_known", "differs", str(err))
            return
        self.mark("region_known", "confirmed", f"{region} is known")

    def check_scope(self) -> None:
        scope = self.hook.settings.list_scope
        try:
            self.page("environment", count=1, scope=scope, tags=False)
        except SkytapAuthError as err:
            hint = (
                "the user is not a company admin: make it one, or set the connection extra "
                '{"list_scope": "me"} if this user makes every copy the provider manages'
                if scope == "company"
                else "check the user's permissions"
            )
            self.mark("scope", "differs", f"scope={scope} refused ({err}); {hint}")
            return
        except SkytapError as err:
            self.mark("scope", "differs", f"scope={scope} refused: {err}")
            return
        self.mark("scope", "confirmed", f"scope={scope} answered a list")

    def check_paging(self) -> None:
        try:
            first, response = self.page("environment", count=1, offset=0)
            header = response.header("Content-Range")
            if not isinstance(first, list):
                self.mark("paging", "differs", f"the list is {type(first).__name__}, not a list")
                return
            if not header or "/" not in header:
                self.mark("paging", "differs", f"no Content-Range total (got {header!r})")
                return
            total = header.rsplit("/", 1)[1].strip()
            if not total.isdigit():
                self.mark("paging", "differs", f"Content-Range total {total!r} is not a number")
                return
            if int(total) < 2:
                self.mark("paging", "not checked", f"only {total} environment(s): one page")
                return
            second, _ = self.page("environment", count=1, offset=1)
        except SkytapError as err:
            self.mark("paging", "differs", str(err))
            return
        ids = [str(i.get("id")) for i in first + (second if isinstance(second, list) else [])]
        if len(first) != 1 or not isinstance(second, list) or len(second) != 1:
            self.mark(
                "paging", "differs", f"count=1 answered {len(first)} then pages of other sizes"
            )
        elif len(set(ids)) != 2:
            self.mark("paging", "differs", f"offset 0 and offset 1 answered the same id {ids[0]}")
        else:
            self.mark("paging", "confirmed", f"count/offset pages differ; Content-Range {header!r}")

    def check_list_tags(self, env: dict[str, Any]) -> None:
        eid = str(env["id"])
        name = env.get("name") or ""
        try:
            listed, _ = self.page("environment", count=PAGE_SIZE, name=name or None)
            plain, _ = self.page("environment", count=PAGE_SIZE, name=name or None, tags=False)
        except SkytapError as err:
            self.mark("list_tags", "differs", str(err))
            return
        item = next((i for i in listed or [] if str(i.get("id")) == eid), None)
        bare = next((i for i in plain or [] if str(i.get("id")) == eid), None)
        if item is None:
            self.mark("list_tags", "not checked", f"environment {eid} not in its own name's list")
            return
        if not isinstance(item.get("tags"), list):
            self.mark("list_tags", "differs", f"tags=true list has tags = {item.get('tags')!r}")
            return
        if tag_values(item) != tag_values(env):
            self.mark(
                "list_tags",
                "differs",
                f"list shows {sorted(tag_values(item))}, the environment {sorted(tag_values(env))}",
            )
            return
        without = "leaves tags out" if bare is not None and "tags" not in bare else "shows tags"
        self.mark("list_tags", "confirmed", f"tags=true shows them; without it the list {without}")

    def check_template(self) -> None:
        try:
            if self.template_id is None:
                listed, _ = self.page("template", count=1, tags=False)
                if not listed:
                    self.mark("template_shape", "not checked", "the account shows no template")
                    return
                self.template_id = check_id(listed[0].get("id"), "template id")
            tid = self.template_id
            data, _ = self.hook.run(self.api.raw_get("template", tid))
            template = check_resource("template", data, f"get template {tid}")
        except (SkytapError, ValueError) as err:
            self.mark("template_shape", "differs", str(err))
            return
        missing = [k for k in TEMPLATE_FIELDS if k not in data]
        if missing:
            self.mark("template_shape", "differs", f"template {tid} lacks {missing}")
        else:
            self.mark(
                "template_shape",
                "confirmed",
                f"template {tid}: busy {data['busy']!r}, region {template['region']}",
            )

    # ---- with --allow-copy

    def copies(self) -> None:
        eid = self.environment_id
        before = self.hook.get_environment(eid)
        running = [str(vm["id"]) for vm in before.get("vms", []) if vm.get("runstate") == "running"]
        if not running:
            self.skip_rest(COPY_KEYS, f"environment {eid} has no running VM (start it first)")
            return
        name = f"{PROBE_PREFIX}{secrets.token_hex(4)}"
        try:
            made = self.hook.save_as_template(eid, name=name, live=True)
        except SkytapError as err:
            self.mark("live_copy", "differs", f"the live save was refused: {err}")
            self.skip_rest(COPY_KEYS, "the live save failed")
            return
        tid = str(made["id"])
        self.made.append(("template", tid))
        self.mark(
            "name_applied",
            "confirmed" if made.get("name") == name else "differs",
            f"asked {name!r}, Skytap named it {made.get('name')!r}",
        )
        stopped = self.watch_source(eid, running, "template", tid)
        if stopped:
            self.mark("live_copy", "differs", f"source VMs left running: {stopped}")
            self.resume(eid)
        else:
            self.mark("live_copy", "confirmed", f"VMs {running} ran on through the save")
        if self.rows["busy_completion"].status != "confirmed":
            self.skip_rest(COPY_KEYS, "the save did not complete")
            return
        self.check_template_tags(tid)
        if self.dr_region:
            self.region_copy(tid)
        else:
            self.skip_rest(["region_override"], "needs --dr-region")

    def watch_source(self, eid: str, running: list[str], kind: str, rid: str) -> list[str]:
        """Poll the copy until it completes, and the source each time; answers the VMs of the
        source that left ``running`` (as ``id: runstate``)."""
        stopped: dict[str, str] = {}
        saw_busy = False
        deadline = time.monotonic() + self.timeout
        pause = self.poll
        while True:
            env = self.hook.get_environment(eid)
            for vm in env.get("vms", []):
                vid = str(vm.get("id"))
                if vid in running and vm.get("runstate") not in ("running", "busy"):
                    stopped[vid] = str(vm.get("runstate"))
            copy = self.hook.get_resource(kind, rid)  # type: ignore[arg-type]
            if copy.get("error"):
                self.mark("busy_completion", "differs", f"the copy failed: {copy['error']}")
                return [f"{k}: {v}" for k, v in stopped.items()]
            if copy.get("busy"):
                saw_busy = True
            else:
                how = "busy, then not" if saw_busy else "already not busy at the first look"
                self.mark("busy_completion", "confirmed", f"{kind} {rid}: {how}")
                break
            if time.monotonic() > deadline:
                self.mark("busy_completion", "differs", f"still busy after {self.timeout:.0f} s")
                break
            time.sleep(pause)
            pause = min(pause * 1.5, 60.0)
        final = self.hook.get_environment(eid)
        for vm in final.get("vms", []):
            vid = str(vm.get("id"))
            if vid in running and vm.get("runstate") != "running":
                stopped[vid] = str(vm.get("runstate"))
        return [f"{k}: {v}" for k, v in stopped.items()]

    def resume(self, eid: str) -> None:
        """Start again an environment the save suspended: the probe leaves nothing suspended."""
        try:
            env = self.hook.get_environment(eid)
            if env.get("runstate") != "running":
                self.hook.set_runstate(eid, "running", timeout=self.timeout)
        except SkytapError as err:
            self.cleanup.append(f"NOT resumed environment {eid}: {err}; start it by hand")
        else:
            self.cleanup.append(f"resumed environment {eid} (the save had suspended its VMs)")

    def check_template_tags(self, tid: str) -> None:
        try:
            self.hook.add_tags("template", tid, [PROBE_TAG])
            shown = tag_values(self.hook.get_template(tid))
            listed = self.hook.list_resources("template", tags=[PROBE_TAG])
        except SkytapError as err:
            self.mark("template_tags", "differs", str(err))
            return
        if PROBE_TAG not in shown:
            self.mark("template_tags", "differs", f"template {tid} shows tags {sorted(shown)}")
        elif tid not in {str(t["id"]) for t in listed}:
            self.mark("template_tags", "differs", "a tags=true list does not find it by its tag")
        else:
            self.mark("template_tags", "confirmed", f"template {tid} tagged, found by its tag")

    def region_copy(self, tid: str) -> None:
        region = str(self.dr_region)
        name = f"{PROBE_PREFIX}dr-{secrets.token_hex(4)}"
        try:
            copy = self.hook.copy_template(tid, name=name, target_region=region)
        except SkytapError as err:
            self.mark("region_override", "differs", f"the region copy was refused: {err}")
            return
        rid = str(copy["id"])
        self.made.insert(0, ("template", rid))
        try:
            done = self.hook.wait_until_ready(
                "template", rid, timeout=self.timeout, poll_interval=self.poll
            )
        except SkytapError as err:
            self.mark("region_override", "differs", f"template {rid}: {err}")
            return
        if done.get("region") != region:
            self.mark("region_override", "differs", f"the copy is in {done.get('region')!r}")
        else:
            self.mark("region_override", "confirmed", f"template {rid} made in {region}")

    def delete_made(self) -> None:
        """Delete what the probe made (region copies first), whatever happened before."""
        for kind, rid in self.made:
            # A failed copy is not busy and a missing one is gone: the delete says which.
            with contextlib.suppress(SkytapError):
                self.hook.wait_until_ready(
                    kind,  # type: ignore[arg-type]
                    rid,
                    timeout=self.timeout,
                    poll_interval=self.poll,
                )
            try:
                self.hook.delete(kind, rid, timeout=600)  # type: ignore[arg-type]
            except SkytapError as err:
                self.cleanup.append(f"NOT deleted {kind} {rid}: {err}; delete it by hand")
            else:
                self.cleanup.append(f"deleted {kind} {rid}")


BEHAVIOURS: tuple[tuple[str, str], ...] = (
    ("auth", "HTTP Basic user:token with Accept: application/json answers JSON"),
    ("environment_shape", "an environment read shows the fields the provider reads"),
    ("template_shape", "a template read shows busy true/false/null, region, name"),
    ("paging", "lists page by count/offset with a Content-Range total"),
    ("list_tags", "lists with tags=true carry each resource's tags"),
    ("scope", "the connection's list scope (company by default) is allowed"),
    ("region_known", "the environment's region is one the provider knows"),
    ("live_copy", "a save with live_copy leaves every running source VM running"),
    ("name_applied", "a copy takes the name it is asked for"),
    ("busy_completion", "a template is busy while it is made, then busy false/null"),
    ("template_tags", "templates take tags, and a tags=true list finds them by tag"),
    ("region_override", "a region copy with copy_to_region_vm_status_override is accepted"),
)
COPY_KEYS = ("live_copy", "name_applied", "busy_completion", "template_tags", "region_override")
ENV_FIELDS = ("id", "name", "runstate", "region", "vms")
VM_FIELDS = ("id", "name", "runstate", "interfaces")
TEMPLATE_FIELDS = ("id", "name", "busy", "region")


def render(rows: Sequence[Row], cleanup: Sequence[str], failure: str | None = None) -> str:
    """The table: behaviour, result, what the probe saw."""
    width = max(len(r.behaviour) for r in rows)
    lines = [f"{'behaviour'.ljust(width)}  {'result'.ljust(11)}  seen", "-" * (width + 40)]
    for row in rows:
        lines.append(f"{row.behaviour.ljust(width)}  {row.status.ljust(11)}  {row.detail}")
    lines.append("")
    if failure:
        lines.append(f"error: {failure}")
    if cleanup:
        lines.append("cleanup: " + "; ".join(cleanup))
    else:
        lines.append("cleanup: the probe made nothing")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_skytap.probe",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--conn-id", default="skytap_default", help="the Skytap connection")
    p.add_argument("--environment-id", required=True, help="a running environment")
    p.add_argument("--template-id", help="a template to read (default: the first listed)")
    p.add_argument(
        "--allow-copy",
        action="store_true",
        help="also save the environment once as a template (live), then delete it",
    )
    p.add_argument("--dr-region", help="with --allow-copy: copy that template to this region")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per copy")
    p.add_argument("--poll", type=float, default=5.0, help="first pause between polls")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    """The command; answers the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        eid = check_id(args.environment_id, "--environment-id")
        tid = check_id(args.template_id, "--template-id") if args.template_id else None
        if args.dr_region and not args.allow_copy:
            raise ValueError("--dr-region copies the probe's template: it needs --allow-copy")
        hook = SkytapHook(args.conn_id)
        if args.dr_region:
            check_region(args.dr_region, hook.settings.regions, what="--dr-region")
        hook.settings  # noqa: B018 - read and check the connection before anything else
    except (ValueError, SkytapError) as err:
        out(f"error: {err}")
        return 2
    probe = Probe(
        hook,
        eid,
        template_id=tid,
        allow_copy=args.allow_copy,
        dr_region=args.dr_region,
        timeout=args.timeout,
        poll=args.poll,
    )
    with hook:
        status = probe.run()
    out(render(list(probe.rows.values()), probe.cleanup, probe.failure))
    if status:
        out("Something differs from what the provider relies on (or failed): see above.")
    return status


if __name__ == "__main__":
    sys.exit(main())
