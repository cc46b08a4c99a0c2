"""`telemon enroll --csv` reads its file in chunks of checked rows; a bad row is named by
its line, with what is wrong, and stops everything from being enrolled."""

from __future__ import annotations

import csv
import io

import pytest
from pydantic import ValidationError

from devices.registry import Enrollment, EnrollmentFileError, read_enrollment_csv

HEADER = "patient_id,programme,device_id,device_type\n"


def chunks_of(text: str, chunk_rows: int = 2) -> list[list[list[str]]]:
    return [
        [list(row) for row in chunk] for chunk in read_enrollment_csv(io.StringIO(text), chunk_rows)
    ]


def test_rows_come_in_chunks_in_file_order_blank_lines_skipped() -> None:
    rows = [f"p-{n},covid,oxi-{n},pulse_oximeter" for n in range(5)]
    text = HEADER + "\n".join(rows[:3]) + "\n\n" + "\n".join(rows[3:]) + "\n"
    assert chunks_of(text) == [
        [["p-0", "covid", "oxi-0", "pulse_oximeter"], ["p-1", "covid", "oxi-1", "pulse_oximeter"]],
        [["p-2", "covid", "oxi-2", "pulse_oximeter"], ["p-3", "covid", "oxi-3", "pulse_oximeter"]],
        [["p-4", "covid", "oxi-4", "pulse_oximeter"]],
    ]
    assert chunks_of(HEADER) == []


def test_every_bad_line_is_named_with_what_is_wrong() -> None:
    text = HEADER + (
        "p-1,covid,oxi-1,pulse_oximeter\n"  # line 2
        "p 2,flu,oxi-2,scale\n"  # 3: two fields wrong
        "\n"  # 4: blank, skipped
        "p-3,covid,oxi-3\n"  # 5: a field short
        "p-4,covid,oxi-4,scale,more\n"  # 6: a field too many
        '"p-5\n",diabetes,gluc-5,glucometer\n'  # 7-8: an id ending with a newline
    )
    with pytest.raises(EnrollmentFileError) as error:
        chunks_of(text)
    assert str(error.value).splitlines() == [
        "line 3: patient_id: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'; "
        "programme: Input should be 'covid', 'heart_failure', 'respiratory' or 'diabetes'",
        "line 5: 3 fields, expected 4 (patient_id,programme,device_id,device_type)",
        "line 6: 5 fields, expected 4 (patient_id,programme,device_id,device_type)",
        "line 8: patient_id: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'",
    ]


def test_no_chunk_is_given_after_a_bad_row_and_the_end_raises() -> None:
    good = [f"p-{n},covid,oxi-{n},pulse_oximeter\n" for n in range(6)]
    text = HEADER + "".join(good[:2]) + "p-x,covid,oxi-x,toaster\n" + "".join(good[2:])
    chunks = read_enrollment_csv(io.StringIO(text), chunk_rows=2)
    assert len(next(chunks)) == 2  # lines 2-3, read before the bad one
    with pytest.raises(EnrollmentFileError, match=r"^line 4: device_type: Input should be"):
        next(chunks)


def test_a_wrong_header_is_refused_at_once() -> None:
    with pytest.raises(EnrollmentFileError, match="header must be patient_id,programme,"):
        read_enrollment_csv(io.StringIO("patient,programme,device,type\n"))
    with pytest.raises(EnrollmentFileError, match=r"got $"):
        read_enrollment_csv(io.StringIO(""))


@pytest.mark.parametrize(
    "patient_id",
    ["p-1", "P.0:a_b-c", "a" * 64, "a" * 65, "-p", "", "p 1", "p-1\n", "é", "p-1\u0660"],
)
@pytest.mark.parametrize("programme", ["covid", "COVID", "diabetes "])
def test_the_quick_check_accepts_what_the_model_accepts(patient_id: str, programme: str) -> None:
    try:
        Enrollment(patient_id=patient_id, programme=programme, device_id="d-1", device_type="scale")
        model_accepts = True
    except ValidationError:
        model_accepts = False
    text = HEADER + _csv_line(patient_id, programme, "d-1", "scale")
    rows = read_enrollment_csv(io.StringIO(text))
    try:
        accepted = list(rows) == [[[patient_id, programme, "d-1", "scale"]]]
    except EnrollmentFileError:
        accepted = False
    assert accepted == model_accepts


def _csv_line(*fields: str) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(fields)
    return out.getvalue()
