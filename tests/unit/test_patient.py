"""The patient's age as a series states it."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from dicomnode.generators.patient import patient_age


def _dataset(**attributes: str) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


# Malformed values are what these tests send: pydicom warns as it stores them.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")


@pytest.mark.parametrize(("attributes", "years", "text"), [
    ({"PatientAge": "034Y"}, 34.0, "34 years"),
    ({"PatientAge": "001Y"}, 1.0, "1 year"),
    ({"PatientAge": "010M"}, 10 / 12, "10 months"),
    ({"PatientAge": "003W"}, 21 / 365.25, "3 weeks"),
    ({"PatientAge": "005D"}, 5 / 365.25, "5 days"),
    # PatientAge wins over the dates; a malformed one gives way to them.
    ({"PatientAge": "007Y", "PatientBirthDate": "19700101", "StudyDate": "20260101"}, 7.0, "7 years"),
    ({"PatientAge": "7 years", "PatientBirthDate": "20190301", "StudyDate": "20260301"}, 7.0, "7 years"),
    ({"PatientBirthDate": "20250601", "StudyDate": "20260401"}, 304 / 365.25, "9 months"),
    ({"PatientBirthDate": "20250601", "AcquisitionDate": "20260401"}, 304 / 365.25, "9 months"),
])
def test_the_age_is_read_from_patient_age_else_the_dates(attributes: dict[str, str], years: float,
                                                        text: str) -> None:
    age = patient_age(_dataset(**attributes))
    assert age is not None
    assert age.years == pytest.approx(years, abs=0.01) and age.text == text


@pytest.mark.parametrize("attributes", [
    {},
    {"PatientAge": ""},
    {"PatientBirthDate": "19700101"},  # no date of the scan
    {"PatientBirthDate": "1970", "StudyDate": "20260101"},
    {"PatientBirthDate": "19701399", "StudyDate": "20260101"},
    {"PatientBirthDate": "20270101", "StudyDate": "20260101"},  # born after the scan
])
def test_an_unstated_or_malformed_age_is_unknown(attributes: dict[str, str]) -> None:
    assert patient_age(_dataset(**attributes)) is None
