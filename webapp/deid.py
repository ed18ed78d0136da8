"""Remove patient-identifying tags from an uploaded DICOM before it is stored.

A subset of the DICOM PS3.15 Annex E basic application level confidentiality profile: the
attributes below are deleted, private tags are removed, and PatientIdentityRemoved /
DeidentificationMethod record that this was done. Kept on purpose: pixel data, rescale
slope/intercept, modality and the tags that order a series (InstanceNumber,
ImagePositionPatient), which the prediction needs. Dates other than the birth date, UIDs and
free-text descriptions are kept; a deployment that needs the full profile must de-identify
before upload. `DEIDENTIFY_DICOM = False` in the config keeps files as uploaded.
"""

from __future__ import annotations

import io

REMOVED_TAGS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "AccessionNumber",
    "StationName",
)
METHOD = "ctstroke: PS3.15 basic profile subset"  # LO: at most 64 characters


def deidentify(data: bytes) -> bytes:
    """The DICOM file's bytes without the identifying tags listed in REMOVED_TAGS."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword in REMOVED_TAGS:
        if keyword in ds:
            delattr(ds, keyword)
    ds.remove_private_tags()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
