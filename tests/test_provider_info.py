"""The provider metadata Airflow reads is valid and declares the connection form."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema

from airflow_provider_skytap.get_provider_info import get_provider_info
from airflow_provider_skytap.hooks.skytap import SkytapHook


def test_provider_info_matches_airflows_schema() -> None:
    schema = json.loads(
        resources.files("airflow").joinpath("provider_info.schema.json").read_text()
    )
    jsonschema.validate(get_provider_info(), schema)


def test_connection_type_is_declarative_and_matches_the_hook() -> None:
    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == SkytapHook.conn_type == "skytap"
    module, _, name = conn["hook-class-name"].rpartition(".")
    assert (module, name) == (SkytapHook.__module__, SkytapHook.__name__)
    # Every extra the hook reads is a declared field with a default the hook also uses.
    fields = conn["conn-fields"]
    assert set(fields) == {
        "timeout",
        "verify_ssl",
        "retry_deadline",
        "extra_regions",
        "list_scope",
        "allow_http",
    }
    assert [
        fields[k]["schema"]["default"] for k in ("timeout", "verify_ssl", "retry_deadline")
    ] == [
        60,
        True,
        600,
    ]
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "API security token"
    # The hook defines no deprecated form methods: the UI reads the declaration above.
    assert "get_connection_form_widgets" not in SkytapHook.__dict__
    assert "get_ui_field_behaviour" not in SkytapHook.__dict__


def test_every_declared_module_and_link_imports() -> None:
    import importlib

    info = get_provider_info()
    for section in ("operators", "sensors", "hooks", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for path in info["extra-links"]:
        module, _, name = path.rpartition(".")
        link = getattr(importlib.import_module(module), name)()
        assert link.name == "Skytap"
