"""A patient's national health identity (INS), as French identity vigilance defines it.

The INS matricule is the NIR (or, for people without one, a NIA), 13
characters and a 2-digit key; its OID says which. Identity traits are the
birth family name, the birth first names, the birth date, the sex and the
birthplace code. The identity status says how far it was checked:
provisional (nothing checked), recovered (INS from the INSi service, the
person's documents not checked), validated (documents checked, no INS) and
qualified (both) [Référentiel national d'identitovigilance].

Only `patient_identities` holds these; everything else uses the pseudonymous
patient id. Every read is audited: the operator's here, a clinician's by the
database itself (`read_patient_identity`).
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.platform import Connection

__all__ = [
    "IdentityStatus",
    "InsIdentity",
    "InsKind",
    "nir_key",
    "read_identity_as_clinician",
    "read_identity_as_operator",
    "read_ins_as_operator",
    "store_identity",
]


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


_IDENTITY_COLUMNS = (
    "status, birth_family_name, first_names, birth_date, sex, birthplace_code, ins_matricule, "
    "ins_oid"
)


async def store_identity(conn: Connection, patient_id: str, identity: InsIdentity) -> bool:
    """Record (or replace) the patient's identity; False if the patient is unknown."""
    key = await conn.fetchval("SELECT patient_key FROM patients WHERE patient_id = $1", patient_id)
    if key is None:
        return False
    await conn.execute(
        f"""
        INSERT INTO patient_identities (patient_key, {_IDENTITY_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (patient_key) DO UPDATE SET (updated_at, {_IDENTITY_COLUMNS}) =
            (now(), $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        key,
        identity.status.value,
        identity.birth_family_name,
        identity.first_names,
        identity.birth_date,
        identity.sex,
        identity.birthplace_code,
        identity.ins_matricule,
        identity.ins_kind.value if identity.ins_kind else None,
    )
    return True


async def read_identity_as_operator(conn: Connection, patient_id: str) -> InsIdentity | None:
    """For the operator (the tables' owner, the CLI): the identity, with its audit record."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            SELECT {_IDENTITY_COLUMNS} FROM patient_identities
            JOIN patients USING (patient_key) WHERE patient_id = $1
            """,
            patient_id,
        )
        await conn.execute(
            """
            INSERT INTO audit_events (action, subtype, outcome, http_status, agent, source,
                                      entity, patient_id)
            VALUES ('R', 'identity.read', 0, 200, $1, 'telemon-cli', 'patient_identities', $2)
            """,
            f"operator:{getpass.getuser()}",
            patient_id,
        )
    return None if row is None else _identity(row)


async def read_ins_as_operator(conn: Connection, patient_ids: Sequence[str]) -> dict[str, str]:
    """For the operator's usage-control extract: the INS matricule of these patients (those
    that have one), an audit record for each patient read."""
    async with conn.transaction():
        rows = await conn.fetch(
            """
            SELECT p.patient_id, i.ins_matricule FROM patient_identities i
            JOIN patients p USING (patient_key)
            WHERE p.patient_id = ANY($1::text[]) AND i.ins_matricule IS NOT NULL
            """,
            list(patient_ids),
        )
        await conn.execute(
            """
            INSERT INTO audit_events (action, subtype, outcome, http_status, agent, source,
                                      entity, patient_id)
            SELECT 'R', 'identity.read', 0, 200, $1, 'telemon-cli', 'patient_identities', p
            FROM unnest($2::text[]) AS p
            """,
            f"operator:{getpass.getuser()}",
            [r["patient_id"] for r in rows],
        )
    return {r["patient_id"]: r["ins_matricule"] for r in rows}


async def read_identity_as_clinician(
    conn: Connection, patient_id: str, source: str
) -> tuple[bool, InsIdentity | None]:
    """For the clinician of the transaction (the API): (permitted, identity if recorded).
    The database checks the permission and writes the audit record (read_patient_identity)."""
    row = await conn.fetchrow("SELECT * FROM read_patient_identity($1, $2)", patient_id, source)
    assert row is not None
    if not row["permitted"] or row["status"] is None:
        return row["permitted"], None
    return True, _identity(row)


def _identity(row: Any) -> InsIdentity:
    oid = row["ins_oid"]
    return InsIdentity(
        status=IdentityStatus(row["status"]),
        birth_family_name=row["birth_family_name"],
        first_names=row["first_names"],
        birth_date=row["birth_date"],
        sex=row["sex"],
        birthplace_code=row["birthplace_code"],
        ins_matricule=row["ins_matricule"],
        ins_kind=InsKind(oid) if oid else None,
    )
