"""A patient's national health identity (INS), as French identity vigilance defines it.

The INS matricule is the NIR (or, for people without one, a NIA), 13
characters and a 2-digit key; its OID says which. Identity traits are the
birth family name, the birth first names, the birth date, the sex and the
birthplace code. The identity status says how far it was checked:
provisional (nothing checked), recovered (INS from the INSi service, the
person's documents not checked), validated (documents checked, no INS) and
qualified (both) [Référentiel national d'identitovigilance].

Only `patient_identities` holds these; everything else uses the pseudonymous
patient id.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["IdentityStatus", "InsIdentity", "InsKind", "nir_key"]


class IdentityStatus(StrEnum):
    PROVISIONAL = "provisional"
    RECOVERED = "recovered"
    VALIDATED = "validated"
    QUALIFIED = "qualified"


class InsKind(StrEnum):
    """Which register the matricule comes from, and its OID."""

    NIR = "1.2.250.1.213.1.4.8"
    NIA = "1.2.250.1.213.1.4.9"
    NIR_TEST = "1.2.250.1.213.1.4.10"
    NIA_TEST = "1.2.250.1.213.1.4.11"

    @property
    def label(self) -> str:
        """The identifier type code of FHIR FR Core (INS-NIR, INS-NIA, INS-NIR-TEST...)."""
        return "INS-" + self.name.replace("_", "-")


def nir_key(first_13: str) -> int:
    """The control key of a NIR: 97 - (number mod 97), Corsica's 2A / 2B counted as 19 / 18."""
    digits = first_13.upper().replace("2A", "19", 1).replace("2B", "18", 1)
    return 97 - int(digits) % 97


class InsIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    status: IdentityStatus
    birth_family_name: Annotated[str, Field(min_length=1, max_length=100)]
    first_names: Annotated[str, Field(min_length=1, max_length=100)]
    birth_date: date
    sex: Annotated[str, Field(pattern=r"^[MFI]$")]
    birthplace_code: Annotated[str, Field(pattern=r"^[0-9][0-9AB][0-9]{3}$")] | None = None
    ins_matricule: Annotated[str, Field(pattern=r"^[0-9][0-9AB][0-9]{11}[0-9]{2}$")] | None = None
    ins_kind: InsKind | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.ins_matricule is None) != (self.ins_kind is None):
            raise ValueError("an INS matricule goes with its kind (NIR or NIA), and only with it")
        if self.ins_matricule is not None:
            key = nir_key(self.ins_matricule[:13])
            if int(self.ins_matricule[13:]) != key:
                raise ValueError(f"INS matricule: control key should be {key:02d}")
        elif self.status in (IdentityStatus.RECOVERED, IdentityStatus.QUALIFIED):
            raise ValueError(f"a {self.status} identity has its INS matricule")
        return self
