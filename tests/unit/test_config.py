"""Configuration: embedded defaults, validation messages that name the dotted key, path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dicomnode.config import (
    Config,
    Destination,
    Hl7Config,
    Peer,
    load_config,
    parse_config,
)
from dicomnode.errors import ConfigError, DicomNodeError


def _error(raw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


# -- embedded defaults -------------------------------------------------------------------


def test_embedded_default_matches_the_design() -> None:
    config = load_config(None)
    assert config.node.ae_title == "DICOMNODE"
    assert config.node.host == "127.0.0.1"
    assert config.node.port == 11112
    assert config.node.data_dir == Path("./var")
    assert config.node.allowed_peers == []
    assert config.rules == Path("rules/default.yaml")
    assert config.destinations == {"pacs": Destination("127.0.0.1", 4242, "ORTHANC")}
    assert config.engines.backend == "auto"
    assert config.engines.models_dir == Path("engines")
    assert (config.web.host, config.web.port, config.web.token) == ("127.0.0.1", 8080, None)
    assert config.series.stable_seconds == 10.0
    assert config.worklist.viewer_url is None
    assert config.worklist.hl7 is None


def test_embedded_default_paths_stay_relative_to_the_working_directory() -> None:
    config = load_config(None)
    assert not config.node.data_dir.is_absolute()
    assert not config.rules.is_absolute()


def test_empty_mapping_gives_the_defaults() -> None:
    assert parse_config({}) == Config()


def test_default_destinations_are_not_shared_between_configs() -> None:
    a, b = Config(), Config()
    a.destinations["other"] = Destination("h", 1, "X")
    assert "other" not in b.destinations


# -- parse_config: values ----------------------------------------------------------------


def test_full_configuration_is_typed() -> None:
    config = parse_config({
        "node": {
            "ae_title": "MYNODE",
            "host": "0.0.0.0",
            "port": 104,
            "data_dir": "/data/node",
            "allowed_peers": [{"ae_title": "CT01", "host": "10.0.0.5"}, {"ae_title": "MR01"}],
        },
        "series": {"stable_seconds": 5, "release_grace_seconds": 0},
        "destinations": {"archive": {"host": "pacs", "port": 11112, "ae_title": "ARCHIVE",
                                     "calling_ae_title": "ME"}},
        "rules": "/etc/rules.yaml",
        "engines": {"backend": "onnxruntime", "models_dir": "/models"},
        "web": {"port": 9000, "token": "s3cret"},
        "worklist": {"viewer_url": "http://v/{study_uid}", "hl7": {"host": "ris", "port": 2575}},
        "anomaly_triage": {"critical": 70, "urgent": 40},
    })
    assert config.node.ae_title == "MYNODE"
    assert config.node.port == 104
    assert config.node.data_dir == Path("/data/node")
    assert config.node.allowed_peers == [Peer("CT01", "10.0.0.5"), Peer("MR01", None)]
    assert config.series.stable_seconds == 5.0
    assert isinstance(config.series.stable_seconds, float)
    assert config.series.release_grace_seconds == 0.0
    assert config.destinations == {"archive": Destination("pacs", 11112, "ARCHIVE", "ME")}
    assert config.rules == Path("/etc/rules.yaml")
    assert config.engines.backend == "onnxruntime"
    assert config.web.port == 9000
    assert config.web.token == "s3cret"
    assert config.worklist.hl7 == Hl7Config("ris", 2575)
    assert config.generator_settings("anomaly_triage") == {"critical": 70, "urgent": 40}
    assert config.generator_settings("contrast_synthesis") == {}


def test_destinations_given_replace_the_default_pacs() -> None:
    config = parse_config({"destinations": {"archive": {"host": "a", "port": 1, "ae_title": "A"}}})
    assert set(config.destinations) == {"archive"}


def test_config_error_is_a_dicomnode_error() -> None:
    assert issubclass(ConfigError, DicomNodeError)


# -- parse_config: unknown keys ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"nodes": {}}, "nodes"),
        ({"node": {"ae_tittle": "X"}}, "node.ae_tittle"),
        ({"series": {"stable": 3}}, "series.stable"),
        ({"web": {"tokn": "x"}}, "web.tokn"),
        ({"node": {"allowed_peers": [{"ae_title": "A", "hots": "h"}]}}, "node.allowed_peers[0].hots"),
        ({"destinations": {"pacs": {"host": "h", "port": 1, "ae_title": "A", "aet": "B"}}},
         "destinations.pacs.aet"),
        ({"worklist": {"hl7": {"host": "h", "port": 1, "extra": 1}}}, "worklist.hl7.extra"),
    ],
)
def test_unknown_key_is_an_error_naming_the_dotted_key(raw: dict[str, Any], key: str) -> None:
    message = _error(raw)
    assert key in message
    assert "unknown key" in message


def test_unknown_key_message_lists_the_known_keys() -> None:
    message = _error({"node": {"ae_tittle": "X"}})
    assert "ae_title" in message.split("ae_tittle", 1)[1]


# -- parse_config: wrong types -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"node": {"port": "11112"}}, "node.port"),
        ({"node": {"port": True}}, "node.port"),
        ({"node": {"port": 104.5}}, "node.port"),
        ({"web": {"port": False}}, "web.port"),
        ({"node": {"max_associations": True}}, "node.max_associations"),
        ({"series": {"stable_seconds": "10"}}, "series.stable_seconds"),
        ({"series": {"stable_seconds": True}}, "series.stable_seconds"),
        ({"node": {"ae_title": 123}}, "node.ae_title"),
        ({"node": {"data_dir": 5}}, "node.data_dir"),
        ({"node": {"data_dir": ""}}, "node.data_dir"),
        ({"node": {"allowed_peers": {"ae_title": "A"}}}, "node.allowed_peers"),
        ({"node": {"allowed_peers": ["CT01"]}}, "node.allowed_peers[0]"),
        ({"node": "DICOMNODE"}, "node"),
        ({"destinations": [{"host": "h"}]}, "destinations"),
        ({"engines": {"backend": "cuda"}}, "engines.backend"),
        ({"engines": {"precision": "int8"}}, "engines.precision"),
        ({"web": {"token": 1234}}, "web.token"),
        ({"anomaly_triage": [1, 2]}, "anomaly_triage"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(raw: dict[str, Any], key: str) -> None:
    message = _error(raw)
    assert message.startswith(f"{key}:"), message


def test_top_level_must_be_a_mapping() -> None:
    assert "expected a mapping" in _error(["node"])


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"destinations": {"pacs": {"host": "h", "ae_title": "A"}}}, "destinations.pacs.port"),
        ({"destinations": {"pacs": {"port": 1, "ae_title": "A"}}}, "destinations.pacs.host"),
        ({"worklist": {"hl7": {"host": "ris"}}}, "worklist.hl7.port"),
        ({"node": {"allowed_peers": [{"host": "10.0.0.5"}]}}, "node.allowed_peers[0].ae_title"),
    ],
)
def test_missing_required_key_is_named(raw: dict[str, Any], key: str) -> None:
    message = _error(raw)
    assert key in message
    assert "required" in message


def test_null_is_accepted_for_optional_values() -> None:
    config = parse_config({"web": {"token": None}, "worklist": {"hl7": None}})
    assert config.web.token is None
    assert config.worklist.hl7 is None


def test_null_is_refused_for_required_values() -> None:
    assert _error({"node": {"port": None}}).startswith("node.port:")


# -- parse_config: semantic checks -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"node": {"ae_title": ""}}, "node.ae_title"),
        ({"node": {"ae_title": "    "}}, "node.ae_title"),
        ({"node": {"ae_title": "A" * 17}}, "node.ae_title"),
        ({"node": {"ae_title": "BACK\\SLASH"}}, "node.ae_title"),
        ({"node": {"ae_title": "TAB\tAE"}}, "node.ae_title"),
        ({"node": {"ae_title": "SCHÄDEL"}}, "node.ae_title"),
        ({"node": {"allowed_peers": [{"ae_title": "OK"}, {"ae_title": "X" * 20}]}},
         "node.allowed_peers[1].ae_title"),
        ({"destinations": {"pacs": {"host": "h", "port": 1, "ae_title": "BAD\\AE"}}},
         "destinations.pacs.ae_title"),
        ({"destinations": {"pacs": {"host": "h", "port": 1, "ae_title": "OK", "calling_ae_title": ""}}},
         "destinations.pacs.calling_ae_title"),
    ],
)
def test_invalid_ae_title_is_refused(raw: dict[str, Any], key: str) -> None:
    message = _error(raw)
    assert message.startswith(f"{key}:"), message
    assert "AE title" in message


@pytest.mark.parametrize("title", ["A", "A" * 16, "CT 01", "my-node_1"])
def test_valid_ae_titles_are_accepted(title: str) -> None:
    assert parse_config({"node": {"ae_title": title}}).node.ae_title == title


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"node": {"port": 65536}}, "node.port"),
        ({"node": {"port": -1}}, "node.port"),
        ({"web": {"port": 70000}}, "web.port"),
        ({"destinations": {"pacs": {"host": "h", "port": 100000, "ae_title": "A"}}},
         "destinations.pacs.port"),
    ],
)
def test_port_out_of_range_is_refused(raw: dict[str, Any], key: str) -> None:
    message = _error(raw)
    assert message.startswith(f"{key}:"), message


@pytest.mark.parametrize("port", [1, 104, 65535])
def test_ports_in_range_are_accepted(port: int) -> None:
    assert parse_config({"node": {"port": port}}).node.port == port


def test_origin_is_reserved_as_destination_name() -> None:
    message = _error({"destinations": {"origin": {"host": "h", "port": 1, "ae_title": "A"}}})
    assert "destinations.origin" in message
    assert "reserved" in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"series": {"stable_seconds": 0}}, "series.stable_seconds"),
        ({"series": {"poll_seconds": -1}}, "series.poll_seconds"),
        ({"series": {"release_grace_seconds": -0.5}}, "series.release_grace_seconds"),
        ({"outbox": {"retry_start_seconds": 0}}, "outbox.retry_start_seconds"),
        ({"outbox": {"retry_start_seconds": 10, "retry_max_seconds": 5}}, "outbox.retry_max_seconds"),
        ({"engines": {"batch_size": 0}}, "engines.batch_size"),
        ({"node": {"max_associations": 0}}, "node.max_associations"),
    ],
)
def test_out_of_range_numbers_are_refused(raw: dict[str, Any], key: str) -> None:
    assert _error(raw).startswith(f"{key}:")


# -- load_config -------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("node:\n  ae_title: FROMFILE\n  port: 4000\n", encoding="utf-8")
    config = load_config(path)
    assert config.node.ae_title == "FROMFILE"
    assert config.node.port == 4000


def test_load_config_names_the_dotted_key_of_a_typo(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("node:\n  ae_tittle: X\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"node\.ae_tittle"):
        load_config(path)


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "node.yaml"
    path.write_text(
        "node: {data_dir: spool}\nrules: my-rules/r.yaml\nengines: {models_dir: ../zoo}\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.node.data_dir == folder / "spool"
    assert config.rules == folder / "my-rules" / "r.yaml"
    assert config.engines.models_dir == folder / ".." / "zoo"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    data = tmp_path / "elsewhere" / "data"
    path.write_text(f"node: {{data_dir: '{data}'}}\nrules: '{tmp_path / 'r.yaml'}'\n", encoding="utf-8")
    config = load_config(path)
    assert config.node.data_dir == data
    assert config.rules == tmp_path / "r.yaml"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    default = Config()
    assert config.node.ae_title == default.node.ae_title
    assert config.node.port == default.node.port
    assert config.node.host == default.node.host
    assert config.destinations == default.destinations
    assert config.series == default.series
    assert config.web == default.web
    assert config.rules.parts[-2:] == ("rules", "default.yaml")
    assert config.node.data_dir.name == "var"


@pytest.mark.parametrize("text", ["node: [unclosed\n", "node:\n  port: 1\n bad: indent\n", "a: b: c\n"])
def test_invalid_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_yaml_that_is_not_a_mapping_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("- node\n- web\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)
