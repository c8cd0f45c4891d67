"""The rule language: every operator, missing attributes, validation messages, series attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from dicomnode.config import Config
from dicomnode.errors import ConfigError, RuleError
from dicomnode.rules import (
    CALLING_AE,
    Route,
    Rule,
    load_rules,
    match,
    parse_rules,
    series_attributes,
)

REPO = Path(__file__).resolve().parents[2]
DESTINATIONS = ["pacs", "archive"]


def _rules(*items: dict[str, Any], destinations: list[str] = DESTINATIONS) -> list[Rule]:
    return parse_rules({"rules": list(items)}, destinations)


def _holds(when: dict[str, Any], attrs: dict[str, Any]) -> bool:
    rules = _rules({"name": "r", "when": when, "forward_to": ["pacs"]})
    return [r.rule for r in match(attrs, rules)] == ["r"]


def _error(*items: Any, destinations: list[str] = DESTINATIONS) -> str:
    with pytest.raises(RuleError) as info:
        parse_rules({"rules": list(items)}, destinations)
    return str(info.value)


CT_HEAD: dict[str, Any] = {
    "Modality": "CT",
    "BodyPartExamined": "HEAD",
    "SeriesDescription": "Head routine 5mm",
    "SliceThickness": 5.0,
    "SeriesNumber": 3,
    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
    "KVP": "120",
    CALLING_AE: "CT01",
}


# -- plain equals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"Modality": "CT"}, True),
        ({"Modality": "ct"}, True),
        ({"Modality": " Ct "}, True),
        ({"Modality": "MR"}, False),
        ({"BodyPartExamined": "head"}, True),
        ({"SeriesDescription": "head"}, False),  # equals, not contains
        ({"SliceThickness": 5}, True),
        ({"SliceThickness": 5.0}, True),
        ({"SliceThickness": 3}, False),
        ({"SeriesNumber": 3}, True),
        ({"SeriesNumber": 3.0}, True),
        ({"SeriesNumber": 4}, False),
        ({"KVP": 120}, True),  # a number in the rule compares numerically with a string value
        ({"KVP": 120.0}, True),
        ({"KVP": 100}, False),
        ({"Modality": 5}, False),  # a non-numeric value never equals a number
        ({"Modality": {"equals": "ct"}}, True),
        ({"Modality": {"equals": "MR"}}, False),
        ({"Modality": "CT", "BodyPartExamined": "HEAD"}, True),
        ({"Modality": "CT", "BodyPartExamined": "CHEST"}, False),
        ({}, True),
    ],
)
def test_plain_equals(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CT_HEAD) is expected


def test_equals_on_numeric_string_values() -> None:
    assert _holds({"SliceThickness": 2.5}, {"SliceThickness": "2.50"})
    assert not _holds({"SliceThickness": 2.5}, {"SliceThickness": "2.6"})


# -- in ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"BodyPartExamined": {"in": ["HEAD", "BRAIN"]}}, True),
        ({"BodyPartExamined": {"in": ["brain", "head"]}}, True),
        ({"BodyPartExamined": {"in": ["CHEST", "ABDOMEN"]}}, False),
        ({"SeriesNumber": {"in": [1, 2, 3]}}, True),
        ({"SeriesNumber": {"in": [1, 2]}}, False),
        ({"Modality": {"in": ["CT"]}}, True),
    ],
)
def test_in(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CT_HEAD) is expected


# -- regex -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"SeriesDescription": {"regex": "(?i)head|brain"}}, True),
        ({"SeriesDescription": {"regex": "head"}}, False),  # case-sensitive unless (?i)
        ({"SeriesDescription": {"regex": "Head"}}, True),
        ({"SeriesDescription": {"regex": "5mm$"}}, True),  # search, not fullmatch
        ({"SeriesDescription": {"regex": "^routine"}}, False),
        ({"ImageType": {"regex": r"PRIMARY\\AXIAL"}}, True),  # joined with a backslash
        ({"ImageType": {"regex": "LOCALIZER"}}, False),
        ({"SeriesNumber": {"regex": "^3$"}}, True),
    ],
)
def test_regex(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CT_HEAD) is expected


# -- absent / present --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "attrs", "expected"),
    [
        ({"ContrastBolusAgent": {"absent": True}}, {}, True),
        ({"ContrastBolusAgent": {"absent": True}}, {"ContrastBolusAgent": ""}, True),
        ({"ContrastBolusAgent": {"absent": True}}, {"ContrastBolusAgent": None}, True),
        ({"ContrastBolusAgent": {"absent": True}}, {"ContrastBolusAgent": []}, True),
        ({"ContrastBolusAgent": {"absent": True}}, {"ContrastBolusAgent": "IODINE"}, False),
        ({"ContrastBolusAgent": {"absent": False}}, {"ContrastBolusAgent": "IODINE"}, True),
        ({"ContrastBolusAgent": {"absent": False}}, {}, False),
        ({"ContrastBolusAgent": {"present": True}}, {"ContrastBolusAgent": "IODINE"}, True),
        ({"ContrastBolusAgent": {"present": True}}, {}, False),
        ({"ContrastBolusAgent": {"present": True}}, {"ContrastBolusAgent": ""}, False),
        ({"ContrastBolusAgent": {"present": False}}, {}, True),
        ({"ContrastBolusAgent": {"present": False}}, {"ContrastBolusAgent": "IODINE"}, False),
        ({"SeriesNumber": {"present": True}}, {"SeriesNumber": 0}, True),  # zero is a value
    ],
)
def test_absent_and_present(when: dict[str, Any], attrs: dict[str, Any], expected: bool) -> None:
    assert _holds(when, attrs) is expected


# -- min / max ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"SliceThickness": {"min": 5}}, True),  # bounds are inclusive
        ({"SliceThickness": {"max": 5}}, True),
        ({"SliceThickness": {"min": 5.5}}, False),
        ({"SliceThickness": {"max": 4.9}}, False),
        ({"SliceThickness": {"min": 1, "max": 10}}, True),
        ({"SliceThickness": {"min": 6, "max": 10}}, False),
        ({"KVP": {"min": 100, "max": 140}}, True),  # numeric strings count as numbers
        ({"KVP": {"min": 121}}, False),
        ({"Modality": {"min": 0}}, False),  # a non-number satisfies no bound
        ({"Modality": {"max": 1e9}}, False),
    ],
)
def test_min_and_max(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CT_HEAD) is expected


# -- not ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"Modality": {"not": "MR"}}, True),
        ({"Modality": {"not": "ct"}}, False),
        ({"BodyPartExamined": {"not": {"in": ["CHEST", "ABDOMEN"]}}}, True),
        ({"BodyPartExamined": {"not": {"in": ["HEAD", "BRAIN"]}}}, False),
        ({"ImageType": {"not": {"in": ["LOCALIZER"]}}}, True),
        ({"ImageType": {"not": {"in": ["AXIAL"]}}}, False),
        ({"SliceThickness": {"not": {"min": 3}}}, False),
        ({"SeriesDescription": {"not": {"regex": "(?i)chest"}}}, True),
        ({"Modality": {"not": {"not": "CT"}}}, True),
        ({"Modality": "CT", "SliceThickness": {"not": {"max": 1}}}, True),
    ],
)
def test_not_at_the_test_level(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CT_HEAD) is expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"not": {"Modality": "MR"}}, True),
        ({"not": {"Modality": "CT"}}, False),
        # the negated map holds only when all of it holds
        ({"not": {"Modality": "CT", "BodyPartExamined": "CHEST"}}, True),
        ({"not": {"Modality": "CT", "BodyPartExamined": "HEAD"}}, False),
        ({"Modality": "CT", "not": {"ContrastBolusAgent": {"present": True}}}, True),
        ({"not": {}}, False),
    ],
)
def test_not_at_the_condition_map_level(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CT_HEAD) is expected


# -- any ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"any": [{"BodyPartExamined": "CHEST"}, {"SeriesDescription": {"regex": "(?i)head"}}]}, True),
        ({"any": [{"BodyPartExamined": "HEAD"}, {"SeriesDescription": {"regex": "xyz"}}]}, True),
        ({"any": [{"BodyPartExamined": "CHEST"}, {"SeriesDescription": {"regex": "xyz"}}]}, False),
        ({"any": [{"Modality": "CT", "BodyPartExamined": "CHEST"}]}, False),  # each map is an AND
        ({"Modality": "MR", "any": [{"BodyPartExamined": "HEAD"}]}, False),  # and with the rest
        ({"any": [{"not": {"Modality": "CT"}}, {"any": [{"SeriesNumber": 3}]}]}, True),  # nested
    ],
)
def test_any(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CT_HEAD) is expected


# -- multi-valued attributes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"ImageType": "AXIAL"}, True),
        ({"ImageType": "axial"}, True),
        ({"ImageType": "LOCALIZER"}, False),
        ({"ImageType": {"in": ["LOCALIZER", "PRIMARY"]}}, True),
        ({"ImageType": {"in": ["LOCALIZER", "SECONDARY"]}}, False),
        ({"ImageType": {"regex": "^ORIGINAL"}}, True),
        ({"ImageType": {"present": True}}, True),
    ],
)
def test_multi_valued_attribute(when: dict[str, Any], expected: bool) -> None:
    assert _holds(when, CT_HEAD) is expected


def test_multi_valued_numbers_hold_when_any_value_does() -> None:
    attrs = {"PixelSpacing": [0.5, 0.7]}
    assert _holds({"PixelSpacing": 0.7}, attrs)
    assert _holds({"PixelSpacing": {"min": 0.6}}, attrs)
    assert _holds({"PixelSpacing": {"max": 0.5}}, attrs)
    assert not _holds({"PixelSpacing": {"min": 0.8}}, attrs)
    assert not _holds({"PixelSpacing": 0.6}, attrs)


def test_tuple_values_count_as_multi_valued() -> None:
    assert _holds({"ImageType": "PRIMARY"}, {"ImageType": ("ORIGINAL", "PRIMARY")})


# -- missing attributes ------------------------------------------------------------------


FAILING_WHEN_MISSING = [
    "CT",
    5,
    {"equals": "CT"},
    {"in": ["CT", "MR"]},
    {"regex": ".*"},
    {"regex": "^$"},
    {"absent": False},
    {"present": True},
    {"min": -1e9},
    {"max": 1e9},
    {"min": 0, "max": 10},
]


@pytest.mark.parametrize("attrs", [{}, {"ContrastBolusAgent": None}, {"ContrastBolusAgent": ""}])
@pytest.mark.parametrize("test", FAILING_WHEN_MISSING)
def test_missing_attribute_fails_every_test_except_absent(test: Any, attrs: dict[str, Any]) -> None:
    assert not _holds({"ContrastBolusAgent": test}, attrs)


@pytest.mark.parametrize("test", FAILING_WHEN_MISSING)
def test_not_around_a_failing_test_on_a_missing_attribute_holds(test: Any) -> None:
    assert _holds({"ContrastBolusAgent": {"not": test}}, {})


def test_missing_attribute_holds_absent_true() -> None:
    assert _holds({"ContrastBolusAgent": {"absent": True}}, {})
    assert _holds({"ContrastBolusAgent": {"present": False}}, {})


# -- CallingAETitle ------------------------------------------------------------------------


def test_calling_ae_title_is_a_condition() -> None:
    assert _holds({CALLING_AE: "CT01"}, CT_HEAD)
    assert _holds({CALLING_AE: {"in": ["ct01", "MR01"]}}, CT_HEAD)
    assert not _holds({CALLING_AE: "MR01"}, CT_HEAD)


def test_calling_ae_title_is_set_by_series_attributes() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    attrs = series_attributes(ds, "SCANNER7")
    assert attrs[CALLING_AE] == "SCANNER7"
    assert _holds({CALLING_AE: "scanner7", "Modality": "CT"}, attrs)


# -- match -------------------------------------------------------------------------------


def test_match_returns_every_matching_rule_in_file_order() -> None:
    rules = _rules(
        {"name": "z-first", "when": {"Modality": "CT"}, "forward_to": ["archive"]},
        {"name": "never", "when": {"Modality": "MR"}, "forward_to": ["pacs"]},
        {"name": "b-triage", "when": {"BodyPartExamined": "HEAD"}, "run": "anomaly_triage",
         "params": {"critical": 70}, "send_to": ["pacs", "origin"]},
        {"name": "a-everything", "when": {}, "forward_to": ["pacs", "archive"]},
    )
    routes = match(CT_HEAD, rules)
    assert routes == [
        Route("z-first", ("archive",), None, {}, ()),
        Route("b-triage", (), "anomaly_triage", {"critical": 70}, ("pacs", "origin")),
        Route("a-everything", ("pacs", "archive"), None, {}, ()),
    ]


def test_match_with_no_matching_rule_is_empty() -> None:
    rules = _rules({"name": "mr", "when": {"Modality": "MR"}, "forward_to": ["pacs"]})
    assert match(CT_HEAD, rules) == []
    assert match(CT_HEAD, []) == []


def test_rule_parse_keeps_structure() -> None:
    (rule,) = _rules({"name": "r", "when": {}, "run": "contrast_synthesis", "send_to": ["pacs"]})
    assert rule.name == "r"
    assert rule.run == "contrast_synthesis"
    assert rule.params == {}
    assert rule.send_to == ("pacs",)
    assert rule.forward_to == ()


def test_empty_rule_files_are_empty_rule_lists() -> None:
    assert parse_rules(None, DESTINATIONS) == []
    assert parse_rules({"rules": []}, DESTINATIONS) == []
    assert parse_rules({"rules": None}, DESTINATIONS) == []


# -- validation --------------------------------------------------------------------------


def _fwd(name: str = "my-rule", **extra: Any) -> dict[str, Any]:
    return {"name": name, "when": {"Modality": "CT"}, "forward_to": ["pacs"], **extra}


def _run(name: str = "my-rule", **extra: Any) -> dict[str, Any]:
    return {"name": name, "when": {"Modality": "CT"}, "run": "anomaly_triage", "send_to": ["pacs"], **extra}


@pytest.mark.parametrize(
    ("item", "fragments"),
    [
        (_fwd(wen={}), ["'my-rule'", "'wen'", "unknown key"]),
        (_fwd(when={"Modality": {"equal": "CT"}}), ["'my-rule'", "'equal'", "unknown operator"]),
        (_fwd(when={"Modality": {"not": {"contains": "CT"}}}), ["'my-rule'", "'contains'"]),
        (_fwd(when={"Modalty": "CT"}), ["'my-rule'", "'Modalty'", "DICOM attribute keyword"]),
        (_fwd(when={"any": [{"BodyPart": "HEAD"}]}), ["'my-rule'", "'BodyPart'"]),
        (_fwd(when={"not": {"SeriesDesc": "x"}}), ["'my-rule'", "'SeriesDesc'"]),
        (_fwd(when={"SeriesDescription": {"regex": "(unclosed"}}),
         ["'my-rule'", "SeriesDescription", "regex"]),
        (_fwd(when={"SeriesDescription": {"regex": 5}}), ["'my-rule'", "regex"]),
        (_fwd(when={"BodyPartExamined": ["HEAD", "BRAIN"]}), ["'my-rule'", "BodyPartExamined", "plain list"]),
        (_fwd(when={"BodyPartExamined": {"in": "HEAD"}}), ["'my-rule'", "BodyPartExamined", "in"]),
        (_fwd(when={"BodyPartExamined": {"in": []}}), ["'my-rule'", "BodyPartExamined", "in"]),
        (_fwd(when={"BodyPartExamined": {"in": [["HEAD"]]}}), ["'my-rule'", "BodyPartExamined"]),
        (_fwd(when={"BodyPartExamined": None}), ["'my-rule'", "BodyPartExamined"]),
        (_fwd(when={"BodyPartExamined": {}}), ["'my-rule'", "BodyPartExamined", "empty"]),
        (_fwd(when={"SliceThickness": {"min": "5"}}), ["'my-rule'", "SliceThickness", "min"]),
        (_fwd(when={"SliceThickness": {"max": True}}), ["'my-rule'", "SliceThickness", "max"]),
        (_fwd(when={"ContrastBolusAgent": {"absent": "yes"}}), ["'my-rule'", "ContrastBolusAgent", "absent"]),
        (_fwd(when={"ContrastBolusAgent": {"present": 1}}), ["'my-rule'", "ContrastBolusAgent", "present"]),
        (_fwd(when={"any": []}), ["'my-rule'", "any"]),
        (_fwd(when={"any": {"Modality": "CT"}}), ["'my-rule'", "any"]),
        (_fwd(when=["Modality"]), ["'my-rule'", "when"]),
        ({"name": "my-rule", "forward_to": ["pacs"]}, ["'my-rule'", "'when'"]),
        (_fwd(run="anomaly_triage"), ["'my-rule'", "run", "forward_to"]),
        ({"name": "my-rule", "when": {}}, ["'my-rule'", "run", "forward_to"]),
        (_fwd(send_to=["pacs"]), ["'my-rule'", "'send_to'"]),
        (_fwd(params={"a": 1}), ["'my-rule'", "'params'"]),
        (_run(run="anomaly_triag"), ["'my-rule'", "'anomaly_triag'", "generator"]),
        (_run(send_to=["nowhere"]), ["'my-rule'", "send_to", "'nowhere'"]),
        (_fwd(forward_to=["pacs", "archiv"]), ["'my-rule'", "forward_to", "'archiv'"]),
        (_fwd(forward_to=[]), ["'my-rule'", "forward_to"]),
        (_fwd(forward_to="pacs"), ["'my-rule'", "forward_to"]),
        ({"name": "my-rule", "when": {}, "run": "anomaly_triage"}, ["'my-rule'", "'send_to'"]),
        (_run(params=[1, 2]), ["'my-rule'", "params"]),
    ],
)
def test_validation_error_names_the_rule_and_the_key(item: dict[str, Any], fragments: list[str]) -> None:
    message = _error(_fwd("fine"), item)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_duplicate_rule_names_are_refused() -> None:
    message = _error(_fwd("twice"), _run("twice"))
    assert "'twice'" in message
    assert "twice" in message.split("'twice'", 1)[1]


@pytest.mark.parametrize("name", [None, "", "   ", 5])
def test_rule_without_a_usable_name_is_refused_by_position(name: Any) -> None:
    message = _error(_fwd("first"), {"name": name, "when": {}, "forward_to": ["pacs"]})
    assert "rule #2" in message
    assert "name" in message


def test_rule_that_is_not_a_mapping_is_refused() -> None:
    assert "rule #1" in _error("forward everything")


@pytest.mark.parametrize("raw", [["a"], {"rules": [], "extra": 1}, {"rule": []}, {"rules": {"a": 1}}])
def test_malformed_rule_file_is_refused(raw: Any) -> None:
    with pytest.raises(RuleError):
        parse_rules(raw, DESTINATIONS)


def test_origin_is_always_a_known_destination() -> None:
    (rule,) = _rules(_run(send_to=["origin"]), destinations=[])
    assert rule.send_to == ("origin",)


def test_rule_error_is_a_config_error() -> None:
    assert issubclass(RuleError, ConfigError)


@pytest.mark.parametrize("generator", ["anomaly_triage", "contrast_synthesis", "vendor_harmonization"])
def test_every_generator_is_accepted(generator: str) -> None:
    (rule,) = _rules(_run(run=generator))
    assert rule.run == generator


# -- rule files --------------------------------------------------------------------------


def test_load_rules_reports_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("rules:\n  - name: bad\n    when: {Modalty: CT}\n    forward_to: [pacs]\n",
                    encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules(path, DESTINATIONS)
    assert str(path) in str(info.value)
    assert "'bad'" in str(info.value)
    assert "Modalty" in str(info.value)


def test_load_rules_refuses_invalid_yaml_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("rules: [unclosed\n", encoding="utf-8")
    with pytest.raises(RuleError, match="not valid YAML"):
        load_rules(path, DESTINATIONS)
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml", DESTINATIONS)


def test_shipped_default_rules_load_with_the_default_destinations() -> None:
    rules = load_rules(REPO / "rules" / "default.yaml", Config().destinations)
    assert [r.name for r in rules] == ["emergency-head-ct"]
    (rule,) = rules
    assert rule.run == "anomaly_triage"
    assert rule.send_to == ("pacs",)
    assert [r.rule for r in match(CT_HEAD, rules)] == ["emergency-head-ct"]
    assert match({**CT_HEAD, "ContrastBolusAgent": "IODINE"}, rules) == []
    assert match({**CT_HEAD, "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, rules) == []
    assert match({**CT_HEAD, "Modality": "MR"}, rules) == []
    no_body_part = {"Modality": "CT", "SeriesDescription": "Schädel nativ"}
    assert [r.rule for r in match(no_body_part, rules)] == ["emergency-head-ct"]
    assert match({"Modality": "CT", "SeriesDescription": "Thorax"}, rules) == []


def test_shipped_forward_all_rules_load_with_the_default_destinations() -> None:
    rules = load_rules(REPO / "rules" / "forward-all.yaml", Config().destinations)
    assert len(rules) == 1
    assert rules[0].forward_to == ("pacs",)
    assert len(match({"Modality": "MR"}, rules)) == 1
    assert len(match({"Modality": "CT"}, rules)) == 1
    assert match({"Modality": "US"}, rules) == []


# -- series_attributes -------------------------------------------------------------------


def _dataset() -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    ds.PatientName = "Doe^John"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = "5.0"
    ds.SeriesNumber = "3"
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.Rows = 512
    ds.SeriesDescription = "Head"
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.add_new(0x7FE00010, "OW", b"\x00\x01" * 4)  # PixelData, VR resolved as in a file read
    ds.add_new(0x00420011, "OB", b"%PDF")  # EncapsulatedDocument
    ds.add_new(0x00091001, "LO", "private value")
    ds.add_new(0x00191010, "UN", b"\x01\x02")
    return ds


def test_series_attributes_converts_values_to_plain_python() -> None:
    attrs = series_attributes(_dataset(), "CT01")
    assert attrs["Modality"] == "CT"
    assert attrs["PatientName"] == "Doe^John"
    assert type(attrs["PatientName"]) is str
    assert attrs["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert type(attrs["ImageType"]) is list
    assert attrs["SliceThickness"] == 5.0
    assert attrs["SeriesNumber"] == 3
    assert attrs["PixelSpacing"] == [0.5, 0.5]
    assert type(attrs["PixelSpacing"]) is list
    assert attrs["Rows"] == 512
    assert attrs[CALLING_AE] == "CT01"


def test_series_attributes_skip_binary_and_private_elements_and_count_sequence_items() -> None:
    ds = _dataset()
    ds.SourceImageSequence = Sequence([])
    attrs = series_attributes(ds, "CT01")
    assert attrs["ReferencedImageSequence"] == 1
    assert "SourceImageSequence" not in attrs  # empty: absent
    assert "PixelData" not in attrs
    assert "EncapsulatedDocument" not in attrs
    assert all(key for key in attrs)
    assert set(attrs) == {"Modality", "PatientName", "ImageType", "SliceThickness", "SeriesNumber",
                          "PixelSpacing", "Rows", "SeriesDescription", "ReferencedImageSequence", CALLING_AE}


def test_the_default_rule_leaves_out_an_enhanced_ct_with_contrast() -> None:
    rules = load_rules(REPO / "rules" / "default.yaml", Config().destinations)
    ds = Dataset()
    ds.Modality, ds.BodyPartExamined, ds.ImageType = "CT", "HEAD", ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert [r.rule for r in match(series_attributes(ds, "CT01"), rules)] == ["emergency-head-ct"]
    agent = Dataset()
    agent.ContrastBolusAgentNumber = 1  # Enhanced Contrast/Bolus module: the agent is coded
    ds.ContrastBolusAgentSequence = Sequence([agent])
    assert match(series_attributes(ds, "CT01"), rules) == []


def test_series_attributes_of_a_person_name_object() -> None:
    ds = Dataset()
    ds.ReferringPhysicianName = PersonName("Smith^Anna")
    attrs = series_attributes(ds, "X")
    assert attrs["ReferringPhysicianName"] == "Smith^Anna"
    assert isinstance(attrs["ReferringPhysicianName"], str)


def test_series_attributes_empty_value_counts_as_absent() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    ds.ContrastBolusAgent = ""
    attrs = series_attributes(ds, "X")
    assert _holds({"ContrastBolusAgent": {"absent": True}}, attrs)


def test_series_attributes_feed_the_matcher() -> None:
    attrs = series_attributes(_dataset(), "CT01")
    assert _holds({"ImageType": "axial", "SliceThickness": {"min": 5}, "PixelSpacing": 0.5,
                   "SeriesNumber": 3, "PatientName": "doe^john"}, attrs)


def test_series_attributes_skips_pixel_data_whose_vr_is_still_ambiguous() -> None:
    # A Dataset built in memory (not read from a file) keeps PixelData's dictionary VR "OB or OW".
    ds = Dataset()
    ds.Modality = "CT"
    ds.PixelData = b"\x00\x01" * 4
    assert "PixelData" not in series_attributes(ds, "CT01")
