"""Config model: every invalid config names the exact key path; secrets never leak."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.config import ConfigError, SfsyncConfig, build_config, load_config, redact_dsn

REPO_ROOT = Path(__file__).resolve().parents[1]

SECRET = "s3cr3t-Hunter2-do-not-leak"


def contact(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "table": "contacts",
        "fields": [
            {"column": "first_name", "field": "FirstName"},
            {"column": "last_name", "field": "LastName"},
            {"column": "email", "field": "Email"},
            {"column": "phone", "field": "Phone"},
        ],
    }
    base.update(over)
    return base


def valid() -> dict[str, Any]:
    return {
        "salesforce": {"auth": {"flow": "password", "username": "u@example.com", "password": SECRET}},
        "objects": {"Contact": contact()},
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(data)
    return [str(p) for p in info.value.problems]


def with_field(i: int, **over: Any) -> dict[str, Any]:
    data = valid()
    data["objects"]["Contact"]["fields"][i].update(over)
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            with_field(3, direction="sideways"),
            "objects.Contact.fields[3].direction: must be one of both, to_salesforce, to_local",
        ),
        ({**valid(), "kafka": {"partitions": 0}}, "kafka.partitions: must be >= 1"),
        ({**valid(), "kafka": {"security_protocol": "TLS"}},
         "kafka.security_protocol: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({**valid(), "kafka": {"security_protocol": "SASL_SSL"}},
         "kafka.sasl_mechanism: is required when security_protocol is SASL_SSL"),
        ({**valid(), "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                               "sasl_username": "svc"}},
         "kafka.sasl_password: is required for SASL mechanism SCRAM-SHA-512"),
        ({**valid(), "kafka": {"bootstrap_servers": "localhost"}},
         "kafka.bootstrap_servers: must be a comma-separated list of host:port"),
        ({**valid(), "salesforce": {"auth": {"flow": "jwt_bearer", "username": "u@example.com"}}},
         "salesforce.auth.private_key_file: is required for auth flow jwt_bearer"),
        ({**valid(), "salesforce": {"api_version": "30.0", "auth": valid()["salesforce"]["auth"]}},
         "salesforce.api_version: must look like 59.0 and be at least 42.0"),
        ({**valid(), "salesforce": {"api_budget_share": 1.5, "auth": valid()["salesforce"]["auth"]}},
         "salesforce.api_budget_share: must be <= 1.0"),
        (with_field(1, column="drop table; --"),
         "objects.Contact.fields[1].column: must be a plain SQL identifier "
         "(letters, digits, '_', not starting with a digit, max 63)"),
        (with_field(2, column="first_name"), "objects.Contact.fields[2].column: column 'first_name' is mapped twice"),
        ({**valid(), "objects": {"Contact": contact(delete_policy="cascade")}},
         "objects.Contact.delete_policy: must be one of propagate, unlink, ignore"),
        ({**valid(), "objects": {"Contact": contact(conflict_policy="newest")}},
         "objects.Contact.conflict_policy: must be one of "
         "salesforce_wins, local_wins, last_writer_wins, fill_empty"),
        ({**valid(), "objects": {"Contact": contact(fields=[])}},
         "objects.Contact.fields: must have at least 1 item(s)"),
        ({**valid(), "objects": {"Contact": {"fields": valid()["objects"]["Contact"]["fields"]}}},
         "objects.Contact.table: is required"),
        ({**valid(), "kafka": {"partitons": 3}}, "kafka.partitons: unknown key"),
        (with_field(0, reference="Account"),
         "objects.Contact.fields[0].reference: names 'Account', which is not a mapped object"),
        ({**valid(), "sinks": {"salesforce": {"batch_size": 500, "linger_ms": 10}}},
         "sinks.salesforce: batch_size is at most 200 (the sObject Collections limit)"),
        ({**valid(), "retry": {"tiers": [{"name": "slow", "delay_ms": 9000}, {"name": "fast", "delay_ms": 10}]}},
         "retry.tiers: delays must not decrease from one tier to the next"),
        ({"objects": {"Contact": contact()}, "salesforce": {"auth": {"flow": "password", "username": "u"}}},
         "salesforce.auth.password: is required for auth flow password"),
    ],
)
def test_invalid_config_names_the_key(data: dict[str, Any], expected: str) -> None:
    assert expected in problems(data)


def test_a_match_key_is_one_pair_or_a_list_of_pairs() -> None:
    one = build_config({**valid(), "objects": {"Contact": contact(match_key={"column": "email", "field": "Email"})}})
    assert [(k.column, k.field) for k in one.objects["Contact"].match_key or []] == [("email", "Email")]
    two = build_config({**valid(), "objects": {"Contact": contact(match_key=[
        {"column": "email", "field": "Email"}, {"column": "last_name", "field": "LastName"}])}})
    assert [k.field for k in two.objects["Contact"].match_key or []] == ["Email", "LastName"]
    assert "objects.Contact.match_key: is empty: name at least one {column, field} pair, or remove the key" in \
        problems({**valid(), "objects": {"Contact": contact(match_key=[])}})
    assert "objects.Contact.match_key: names the same field twice" in problems({**valid(), "objects": {
        "Contact": contact(match_key=[{"column": "email", "field": "Email"}, {"column": "mail", "field": "Email"}])}})
    assert problems({**valid(), "objects": {"Contact": contact(match_key={"field": "Email"})}}) == [
        "objects.Contact.match_key[0].column: is required"]


def test_every_problem_is_reported_at_once() -> None:
    data = with_field(3, direction="sideways")
    data["kafka"] = {"partitions": 0, "replication_factor": "three"}
    found = problems(data)
    assert "kafka.partitions: must be >= 1" in found
    assert "kafka.replication_factor: must be an integer" in found
    assert "objects.Contact.fields[3].direction: must be one of both, to_salesforce, to_local" in found


def test_valid_config_and_defaults() -> None:
    cfg = build_config(valid())
    assert cfg.kafka.topic_prefix == "sfsync"
    assert cfg.sinks.salesforce.batch_size == 200
    assert cfg.sinks.postgres.batch_size == 500 and cfg.sinks.postgres.linger_ms == 50
    assert cfg.objects["Contact"].external_id_field == "Local_Id__c"
    assert [t.name for t in cfg.retry.tiers] == ["5s", "1m", "10m"]


def test_env_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "sfsync.yaml"
    path.write_text(yaml.safe_dump({**valid(), "kafka": {"bootstrap_servers": "file:9092", "partitions": 4}}))
    monkeypatch.setenv("SFSYNC_KAFKA__BOOTSTRAP_SERVERS", "env-host:9093")
    cfg = load_config(path)
    assert cfg.kafka.bootstrap_servers == "env-host:9093"
    assert cfg.kafka.partitions == 4


def test_env_override_errors_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFSYNC_KAFKA__PARTITIONS", "many")
    assert "kafka.partitions: must be an integer" in problems(valid())


def test_config_env_var_selects_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump({**valid(), "kafka": {"topic_prefix": "from-env-file"}}))
    monkeypatch.setenv("SFSYNC_CONFIG", str(path))
    assert load_config().kafka.topic_prefix == "from-env-file"


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  partitions: [1,\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_config(path)


def _all_secret_config() -> dict[str, Any]:
    data = valid()
    data["kafka"] = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "svc",
        "sasl_password": SECRET,
        "ssl_key_password": SECRET,
    }
    data["salesforce"]["auth"].update({"client_secret": SECRET, "security_token": SECRET, "refresh_token": SECRET})
    data["postgres"] = {"dsn": f"postgresql://app:{SECRET}@db:5432/app"}
    data["alerts"] = {"webhook_url": f"https://hooks.example.com/{SECRET}"}
    return data


def test_secrets_absent_from_repr_str_summary_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    cfg = build_config(_all_secret_config())
    logging.getLogger("sfsync.test").warning("config %s %r %s", cfg, cfg, cfg.summary())
    for text in (repr(cfg), str(cfg), str(cfg.summary()), caplog.text, repr(cfg.kafka), repr(cfg.salesforce)):
        assert SECRET not in text
    assert cfg.kafka.sasl_password is not None and cfg.kafka.sasl_password.get_secret_value() == SECRET


def test_secrets_absent_from_error_messages() -> None:
    data = _all_secret_config()
    data["kafka"]["partitions"] = SECRET  # a secret pasted into the wrong key must not be echoed either
    data["salesforce"]["auth"]["password"] = [SECRET]
    with pytest.raises(ConfigError) as info:
        build_config(data)
    assert SECRET not in str(info.value)
    assert "kafka.partitions: must be an integer" in str(info.value)


def test_redact_dsn() -> None:
    assert redact_dsn(f"postgresql://app:{SECRET}@db/app") == "postgresql://app:***@db/app"
    assert SECRET not in redact_dsn(f"host=db user=app password={SECRET} dbname=app")


runner = CliRunner()


def test_config_check_cli_valid(tmp_path: Path) -> None:
    path = tmp_path / "sfsync.yaml"
    path.write_text(yaml.safe_dump(_all_secret_config()))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "Contact -> contacts (4 fields)" in result.output
    assert SECRET not in result.output


def test_config_check_cli_invalid_exits_2(tmp_path: Path) -> None:
    data = _all_secret_config()
    data["objects"]["Contact"]["fields"][3]["direction"] = "sideways"
    path = tmp_path / "sfsync.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "objects.Contact.fields[3].direction: must be one of both, to_salesforce, to_local" in result.output
    assert SECRET not in result.output


def test_example_config_is_valid_and_documented() -> None:
    cfg = load_config(REPO_ROOT / "sfsync.example.yaml")
    assert set(cfg.objects) == {"Account", "Contact", "Case"}
    doc = (REPO_ROOT / "docs" / "configuration.md").read_text()
    for section, model in SfsyncConfig.model_fields.items():
        assert f"`{section}" in doc, section
        for name, info in getattr(model.annotation, "model_fields", {}).items():
            key = info.alias or name
            assert f"`{section}.{key}" in doc, f"{section}.{key} undocumented"


def _filtered(**filters: Any) -> dict[str, Any]:
    return {"salesforce": {"auth": {"username": "u", "password": "p"}},
            "objects": {"Contact": {"table": "contacts", "filters": filters,
                                    "fields": [{"column": "email", "field": "Email"}, {"column": "title",
                                                                                        "field": "Title"}]}}}


@pytest.mark.parametrize(("filters", "expected"), [
    ({"to_local": "Email != null and"}, "objects.Contact.filters.to_local: syntax error at column 18: the condition "
                                        "ends too early"),
    ({"to_salesforce": "title = 'x' or"}, "objects.Contact.filters.to_salesforce: syntax error at column 15"),
    ({"to_salesforce": "phone != null"}, "objects.Contact.filters.to_salesforce: names column 'phone', which is "
                                         "not mapped"),
    ({"exclude_domains": ["example.org", "not a domain"]}, "objects.Contact.filters.exclude_domains: item 1 is not "
                                                            "a domain name"),
    ({"exclude_emails": ["nobody"]}, "objects.Contact.filters.exclude_emails: item 0 is not an email address"),
    ({"email_field": "Title2", "exclude_emails": ["a@b.org"]}, "objects.Contact.filters.email_field: field "
                                                               "'Title2' is not mapped"),
    ({"where": "x"}, "objects.Contact.filters.where: unknown key"),
])
def test_bad_filters_name_their_key(filters: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(_filtered(**filters))
    assert expected in str(caught.value), str(caught.value)


def test_good_filters_and_the_default_email_field() -> None:
    cfg = build_config(_filtered(to_local="Email != null", to_salesforce="email != null and id != '1'",
                                 exclude_domains=["@Example.org"], exclude_ids=["42"]))
    flt = cfg.objects["Contact"].filters
    email = flt.email_key(cfg.objects["Contact"])
    assert email is not None and email.column == "email"
    assert flt.exclusions.domains == {"example.org"} and not flt.empty
    assert build_config(_filtered()).objects["Contact"].filters.empty


# ------------------------------------------------------------------ processor (the records Table's store)


@pytest.mark.parametrize(("processor", "expected"), [
    ({"store": "redis"}, "processor.store: must be one of rocksdb, memory"),
    ({"data_dir": ""}, "processor.data_dir: must be a directory path"),
    ({"cache_mb": 4}, "processor.cache_mb: must be >= 8"),
    ({"write_buffer_mb": 0}, "processor.write_buffer_mb: must be >= 1"),
    ({"datadir": "/var/lib/sfsync"}, "processor.datadir: unknown key"),
])
def test_bad_processor_settings_name_their_key(processor: dict[str, Any], expected: str) -> None:
    assert expected in problems({**valid(), "processor": processor})


def test_the_processor_keeps_its_state_in_rocksdb_by_default(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from processors.store import store_settings

    monkeypatch.chdir(tmp_path)  # the default data_dir is relative to the working directory
    cfg = build_config(valid())
    assert (cfg.processor.store, cfg.processor.data_dir) == ("rocksdb", ".sfsync/processor")
    assert store_settings(cfg) == {"store": "sfsync-rocksdb://?cache_mb=64&write_buffer_mb=8",
                                   "datadir": str(tmp_path / ".sfsync" / "processor" / "sfsync-processor" / "worker-0")}


def test_the_processor_store_can_be_set_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    from processors.store import store_settings

    monkeypatch.setenv("SFSYNC_PROCESSOR__STORE", "memory")
    monkeypatch.setenv("SFSYNC_PROCESSOR__DATA_DIR", str(tmp_path))
    settings = store_settings(build_config(valid()))
    assert settings == {"store": "memory://", "datadir": str(tmp_path / "sfsync-processor")}


def test_config_check_cli_rejects_an_unknown_processor_store(tmp_path: Path) -> None:
    data = _all_secret_config()
    data["processor"] = {"store": "redis"}
    path = tmp_path / "sfsync.yaml"
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "processor.store: must be one of rocksdb, memory" in result.output
