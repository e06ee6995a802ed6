"""``lake.s3`` and the catalog URI: strict settings, pyiceberg's FileIO properties, and
no password in what the sink shows."""

from __future__ import annotations

import re
from typing import Any

import pytest

from inspector.config import (
    ConfigError,
    LakeSettings,
    PlantConfig,
    dump_config,
    parse_config,
    redact_uri,
)
from inspector.lake.catalog import CatalogUnavailable, open_catalog
from tests.act.support import LINES

S3 = {
    "endpoint": "http://127.0.0.1:9000",
    "access_key_id": "key",
    "secret_access_key": "${LAKE_S3_SECRET}",
}


def plant(lake: dict[str, Any], env: dict[str, str] | None = None) -> PlantConfig:
    return parse_config({"lines": LINES, "lake": lake}, "test", env=env or {})


def test_s3_settings_become_pyiceberg_fileio_properties_with_the_secret_from_the_env() -> None:
    cfg = plant({"warehouse": "s3://lake/wh", "s3": S3}, {"LAKE_S3_SECRET": "sh-h"})
    assert cfg.lake.s3 is not None
    assert "sh-h" not in repr(cfg.lake.s3)
    assert cfg.lake.s3.fileio_properties() == {
        "s3.endpoint": "http://127.0.0.1:9000",
        "s3.region": "us-east-1",
        "s3.access-key-id": "key",
        "s3.secret-access-key": "sh-h",
        "s3.force-virtual-addressing": "false",
        "s3.connect-timeout": "5.0",
        "s3.request-timeout": "30.0",
    }
    # the effective config written back keeps the secret apart
    data, secrets = dump_config(cfg)
    ref = data["lake"]["s3"]["secret_access_key"]
    assert ref.startswith("${INSPECTOR_SECRET_LAKE_S3_") and secrets[ref[2:-1]] == "sh-h"


def test_s3_without_keys_leaves_credentials_to_the_aws_chain_and_can_force_virtual_hosts() -> None:
    s3 = LakeSettings(warehouse="s3a://b/p", s3={"path_style": False}).s3
    assert s3 is not None
    props = s3.fileio_properties()
    assert props["s3.force-virtual-addressing"] == "true"
    assert not {"s3.endpoint", "s3.access-key-id", "s3.secret-access-key"} & set(props)


@pytest.mark.parametrize(
    ("lake", "message"),
    [
        ({"s3": S3}, "lake: s3 is set but warehouse (the local default)"),
        ({"warehouse": "file:///tmp/wh", "s3": S3}, "is not an s3:// location"),
        ({"warehouse": "s3://b", "s3": {"access_key_id": "k"}}, "lake.s3: access_key_id and"),
        ({"warehouse": "s3://b", "s3": {"endpoint": "127.0.0.1:9000"}}, "lake.s3.endpoint"),
        ({"warehouse": "s3://b", "s3": {"region": "Mars 1"}}, "lake.s3.region"),
        ({"warehouse": "s3://b", "s3": {"request_timeout_s": 0}}, "lake.s3.request_timeout_s"),
        ({"warehouse": "s3://b", "s3": {"secure": True}}, "lake.s3.secure"),
    ],
)
def test_bad_s3_settings_are_refused_with_their_path(lake: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        plant(lake, {"LAKE_S3_SECRET": "x"})
    assert len(err.value.errors) == 1, err.value.errors


def test_a_catalog_password_is_never_shown() -> None:
    uri = "postgresql://lake:pa55word@127.0.0.1:1/lake"
    assert redact_uri(uri) == "postgresql://lake:***@127.0.0.1:1/lake"
    assert redact_uri("sqlite:////tmp/catalog.db") == "sqlite:////tmp/catalog.db"
    with pytest.raises(CatalogUnavailable) as err:  # nothing listens on port 1
        open_catalog(LakeSettings(catalog_uri=uri))
    assert "pa55word" not in str(err.value)
    assert "lake:***@127.0.0.1:1" in str(err.value)
    assert "\n" not in str(err.value)
