"""The patient's age as a series states it: PatientAge, else the birth date against the study date."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pydicom import Dataset

_AGE_STRING = re.compile(r"^(\d{3})([DWMY])$")  # PS3.5 AS: nnnD, nnnW, nnnM or nnnY
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12.0, "Y": 365.25}
_UNIT_NAMES = {"D": "day", "W": "week", "M": "month", "Y": "year"}


@dataclass(frozen=True)
class PatientAge:
    years: float
    text: str  # as a reader would say it: "7 years", "10 months"


def patient_age(ds: Dataset) -> PatientAge | None:
    """The patient's age at the study, or None where the series does not say (or says it badly).

    PatientAge (0010,1010) wins; without it (or where it is malformed), PatientBirthDate against
    the first of StudyDate, SeriesDate, AcquisitionDate and ContentDate.
    """
    stated = _AGE_STRING.match(str(ds.get("PatientAge", "") or "").strip().upper())
    if stated:
        count, unit = int(stated.group(1)), stated.group(2)
        return PatientAge(count * _DAYS_PER[unit] / 365.25, _counted(count, _UNIT_NAMES[unit]))
    born = _date(ds.get("PatientBirthDate"))
    scanned = next((d for d in (_date(ds.get(k)) for k in ("StudyDate", "SeriesDate", "AcquisitionDate",
                                                           "ContentDate")) if d is not None), None)
    if born is None or scanned is None or scanned < born:
        return None
    days = (scanned - born).days
    years = days / 365.25
    if years >= 2.0:
        return PatientAge(years, _counted(int(years), "year"))
    return PatientAge(years, _counted(int(days / _DAYS_PER["M"]), "month"))


def _counted(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _date(value: object) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None
