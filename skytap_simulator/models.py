"""Data models of the simulated Skytap account (pydantic, so state files and seeds validate)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Skytap's 16 regions (help topic "understanding-regions").
REGIONS: tuple[str, ...] = (
    "APAC-2",
    "AU-Sydney-I-1",
    "CAN-Toronto",
    "CN-HongKong-M-1",
    "DE-Frankfurt-I-1",
    "EMEA",
    "IE-Dublin-M-1",
    "IN-Pune-M-1",
    "NL-Amsterdam-M-1",
    "SG-Singapore-M-1",
    "UK-London-M-1",
    "US-Central",
    "US-East-2",
    "US-Texas-M-1",
    "US-Virginia-M-1",
    "US-West",
)
ENV_RUNSTATES: tuple[str, ...] = ("running", "suspended", "stopped", "halted")
Kind = Literal["configuration", "template"]
CONFIGURATION: Kind = "configuration"
TEMPLATE: Kind = "template"


class Config(BaseModel):
    """Account settings and simulated durations (seconds, multiplied by ``time_scale``)."""

    model_config = ConfigDict(extra="forbid")

    copy_seconds: float = Field(default=5.0, ge=0)
    region_copy_seconds: float = Field(default=20.0, ge=0)
    delete_seconds: float = Field(default=1.0, ge=0)
    transition_seconds: float = Field(default=2.0, ge=0)
    time_scale: float = Field(default=1.0, gt=0)
    rate_limit_per_s: float | None = Field(default=None, gt=0)
    #: The account has live clone: a copy or save that sends ``"live_copy": true`` leaves the
    #: source's VMs running. Without ``live_copy`` (or with this False) the running VMs are
    #: suspended, as Skytap's help says, and stay suspended (counted: ``/_sim/suspended``).
    live_clone: bool = True
    #: The API users are company admins. False: ``scope=company`` answers 403 [ASSUMED].
    admin: bool = True
    #: A region copy of a template saved from running VMs needs
    #: ``"copy_to_region_vm_status_override": true``, else 422 [ASSUMED].
    region_copy_needs_override: bool = True
    #: List results carry ``tags`` only when the query says ``tags=true``.
    list_tags_on_request: bool = True
    source_lock: bool = True
    #: False: a copy ignores the requested name and is called "<source> - Copy", which
    #: Skytap's Go SDK (rename after create) suggests some calls do.
    copy_names: bool = True
    #: Simulator only: an environment made from a template reaches ``running`` only once a
    #: hypervisor (``demo.lab.Hypervisor``) has booted its VMs and said so
    #: (``POST /_sim/configurations/{id}/booted``); until then it stays ``busy``.
    hypervisor: bool = False


class Service(BaseModel):
    """A published service: a VM port reachable from outside."""

    id: str = ""
    internal_port: int = 22
    external_ip: str = "127.0.0.1"
    external_port: int = 0


class Interface(BaseModel):
    """A VM's network adapter."""

    id: str = ""
    ip: str = ""
    hostname: str = ""
    network_id: str = ""
    services: list[Service] = Field(default_factory=list)


class Disk(BaseModel):
    """A virtual disk; ``size`` in MB."""

    id: str = ""
    size: int = 20480
    type: str = "SCSI"


class Hardware(BaseModel):
    """CPU, RAM (MB) and disks of a VM."""

    cpus: int = 1
    ram: int = 1024
    disks: list[Disk] = Field(default_factory=lambda: [Disk()])


class VM(BaseModel):
    """A virtual machine; ``disk_image`` is simulator-internal and never shown by the API."""

    id: str = ""
    name: str = "vm"
    runstate: str | None = None
    error: str | None = None
    hardware: Hardware = Field(default_factory=Hardware)
    interfaces: list[Interface] = Field(default_factory=list)
    disk_image: str | None = None
    #: simulator-internal: the port a hypervisor booted this VM's SSH server on (see
    #: ``Config.hypervisor``); a service published for port 22 answers it
    booted_ssh_port: int | None = None


class Network(BaseModel):
    """An environment network; ``vpn_attachments`` and ``tunnels`` as Skytap's Go SDK reads
    them (VPN / private network connections, and inter-environment routes, ICNR)."""

    id: str = ""
    name: str = "Default Network"
    network_type: str = "automatic"
    subnet: str = "10.0.0.0/24"
    domain: str = "skytap.example"
    vpn_attachments: list[dict[str, Any]] = Field(default_factory=list)
    tunnels: list[dict[str, Any]] = Field(default_factory=list)


class Tag(BaseModel):
    """A tag on an environment or template."""

    id: str = ""
    value: str


class Resource(BaseModel):
    """An environment (``configuration``) or a template."""

    kind: Kind = "configuration"
    id: str = ""
    name: str = "unnamed"
    description: str = ""
    region: str = "US-West"
    owner: str = "demo"
    runstate: str = "stopped"
    #: environments: may its VMs reach the internet, and may its networks route to each
    #: other (Skytap's ``outbound_traffic`` and ``routable``, set with ``PUT /v2/...``)
    outbound_traffic: bool = True
    routable: bool = False
    #: an environment made from a template: that template's id (what ``/_sim/restored`` counts)
    from_template: str | None = None
    vms: list[VM] = Field(default_factory=list)
    networks: list[Network] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)
    lockversion: int = 1
    error: str | None = None
    #: a template saved from an environment whose VMs were running (or a copy of one)
    from_running_vms: bool = False
    created_at: float = 0.0
    job_id: str | None = None
    transition_to: str | None = None
    transition_until: float | None = None
    delete_until: float | None = None
    deleted: bool = False

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_from_strings(cls, value: Any) -> Any:
        """Let seeds give tags as plain strings."""
        if isinstance(value, list):
            return [{"value": item} if isinstance(item, str) else item for item in value]
        return value


class ImageTask(BaseModel):
    """One VM disk image being copied for a job."""

    vm_id: str
    src: str
    dst: str
    done: bool = False
    error: str | None = None


class Job(BaseModel):
    """An asynchronous copy: environment copy, save as template, template copy, region copy."""

    id: str
    source_kind: Kind
    source_id: str
    target_kind: Kind
    target_id: str
    region: str
    region_copy: bool = False
    live: bool = True
    requested_at: float
    start_at: float
    ready_at: float
    fail_message: str | None = None
    suspended_vm_ids: list[str] = Field(default_factory=list)
    restore_runstate: str | None = None
    images: list[ImageTask] = Field(default_factory=list)
    done: bool = False
    finished_at: float | None = None


class User(BaseModel):
    """An API user: HTTP Basic ``username:token``."""

    username: str
    token: str


class Quota(BaseModel):
    """A company quota's limit; usage is computed."""

    quota_type: str
    units: str
    limit: int


DEFAULT_QUOTAS: list[dict[str, Any]] = [
    {"quota_type": "concurrent_vms", "units": "virtual machines", "limit": 100},
    {"quota_type": "concurrent_storage_size", "units": "MB", "limit": 10_000_000},
]


class Suspension(BaseModel):
    """A VM a copy or save suspended (no ``live_copy``): what the count reports."""

    environment_id: str
    vm_id: str
    job_id: str
    at: float


class StateDoc(BaseModel):
    """Everything the simulator persists (``--state-file``)."""

    config: Config = Field(default_factory=Config)
    users: list[User] = Field(default_factory=list)
    quotas: list[Quota] = Field(default_factory=list)
    environments: dict[str, Resource] = Field(default_factory=dict)
    templates: dict[str, Resource] = Field(default_factory=dict)
    jobs: dict[str, Job] = Field(default_factory=dict)
    region_free_at: dict[str, float] = Field(default_factory=dict)
    suspended_by_copy: list[Suspension] = Field(default_factory=list)
    next_id: int = 10000
    next_port: int = 40000
