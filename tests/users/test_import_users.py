"""manage.py import_users: the seed's JSON-lines file, bad lines mixed in, imported twice."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from ingestion.models import FetchState
from users.jsonlines import ImportSummary, Outcome, import_users
from users.models import EagleUser

pytestmark = pytest.mark.django_db

KRUM = {
    "cloud_id": "002738",
    "user_email": "viktor.krum@durmstrang.edu",
    "user_pw": "1234567",
    "total_events_logged": 2725,
    "first_timestamp": 1443274732.39435,
    "last_timestamp": 1443277732.933939,
}
DELACOUR = {"cloud_id": "00a1f0", "user_email": "fleur@beauxbatons.fr", "user_pw": "veela-secret"}
SEED_LINES = [
    json.dumps(KRUM),
    '{"cloud_id": "002739", "user_email": "broken@example.org", "user_pw": ',  # malformed
    json.dumps({"cloud_id": "002740", "user_email": "no-password@example.org"}),
    json.dumps({**DELACOUR, "cloud_id": "00-27"}),  # bad cloud_id
    "",
    json.dumps({**DELACOUR, "cloud_id": 2741}),  # a number: its leading zeros are gone
    json.dumps(DELACOUR),
    "[1, 2, 3]",
]


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.jl"
    path.write_text("\n".join(SEED_LINES) + "\n")
    return path


def run_import(*args: str) -> tuple[str, int]:
    out = StringIO()
    try:
        call_command("import_users", *args, stdout=out)
    except CommandError:
        return out.getvalue(), 1
    return out.getvalue(), 0


def test_it_imports_the_good_lines_and_reports_each_bad_one_by_number(seed_file: Path) -> None:
    output, status = run_import(str(seed_file))

    assert status == 1
    assert "line 1: 002738 created" in output
    assert "line 2: failed: not JSON" in output
    assert "line 3: failed: missing field eagle_password" in output
    assert "line 4: failed: bad cloud_id '00-27'" in output
    assert "line 6: failed: cloud_id must be a JSON string" in output
    assert "line 7: 00a1f0 created" in output
    assert "line 8: failed: not a JSON object" in output
    assert "line 5" not in output  # blank lines are skipped
    assert "2 created, 0 updated, 0 unchanged, 5 failed" in output
    assert "Failed lines: 2, 3, 4, 6, 8." in output
    assert set(EagleUser.objects.values_list("cloud_id", flat=True)) == {"002738", "00a1f0"}
    krum = EagleUser.objects.select_related("fetch_state").get(cloud_id="002738")
    assert (krum.email, krum.eagle_password) == ("viktor.krum@durmstrang.edu", "1234567")
    assert krum.fetch_state.total_events_logged == 2725
    assert krum.fetch_state.first_timestamp == 1443274732.39435
    assert krum.fetch_state.last_timestamp == 1443277732.933939


def test_a_second_run_changes_nothing_and_says_so(seed_file: Path) -> None:
    run_import(str(seed_file))
    before = {u.cloud_id: u.updated_at for u in EagleUser.objects.all()}

    output, status = run_import(str(seed_file))

    assert status == 1  # the bad lines are still bad
    assert "line 1: 002738 unchanged" in output
    assert "line 7: 00a1f0 unchanged" in output
    assert "0 created, 0 updated, 2 unchanged, 5 failed" in output
    assert "Nothing changed." in output
    assert {u.cloud_id: u.updated_at for u in EagleUser.objects.all()} == before


def test_no_output_line_contains_a_password(seed_file: Path) -> None:
    output, _ = run_import(str(seed_file))
    output += run_import(str(seed_file))[0]
    assert "1234567" not in output
    assert "veela-secret" not in output


def test_a_changed_line_updates_only_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "users.jl"
    path.write_text(json.dumps(KRUM) + "\n")
    run_import(str(path))
    path.write_text(json.dumps({**KRUM, "user_pw": "7654321"}) + "\n")

    output, status = run_import(str(path))

    assert status == 0
    assert "line 1: 002738 updated: eagle_password" in output
    assert EagleUser.objects.get(cloud_id="002738").eagle_password == "7654321"


def test_rainlogs_field_names_and_the_seeds_import_alike_and_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "users.jl"
    own_names = {"cloud_id": "002738", "email": KRUM["user_email"], "eagle_password": "1234567"}
    disagreeing = {**DELACOUR, "email": "someone.else@example.org"}
    path.write_text(f"{json.dumps(own_names)}\n{json.dumps(KRUM)}\n{json.dumps(disagreeing)}\n")

    output, status = run_import(str(path))

    assert status == 1
    assert "line 1: 002738 created" in output
    assert "line 2: 002738 updated: total_events_logged" in output
    assert "line 3: failed: user_email: conflicts with email" in output
    assert list(EagleUser.objects.values_list("email", flat=True)) == [KRUM["user_email"]]


def test_a_dry_run_reports_what_would_happen_and_saves_nothing(seed_file: Path) -> None:
    output, status = run_import(str(seed_file), "--dry-run")

    assert status == 1
    assert "line 1: 002738 created" in output
    assert "Dry run: nothing was saved." in output
    assert not EagleUser.objects.exists()
    assert not FetchState.objects.exists()


def test_a_dry_run_sees_earlier_lines_of_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "users.jl"
    path.write_text(json.dumps(KRUM) + "\n" + json.dumps({**KRUM, "user_pw": "other"}) + "\n")
    output, _ = run_import(str(path), "--dry-run")
    assert "line 1: 002738 created" in output
    assert "line 2: 002738 updated: eagle_password" in output
    assert not EagleUser.objects.exists()


def test_a_line_that_fails_model_validation_saves_nothing_of_itself(tmp_path: Path) -> None:
    path = tmp_path / "users.jl"
    bad_email = {**KRUM, "user_email": "not-an-address"}
    path.write_text(json.dumps(bad_email) + "\n" + json.dumps(DELACOUR) + "\n")

    output, status = run_import(str(path))

    assert status == 1
    assert "line 1: 002738 failed: email: Enter a valid email address." in output
    assert list(EagleUser.objects.values_list("cloud_id", flat=True)) == ["00a1f0"]
    assert FetchState.objects.count() == 1


def test_reimporting_old_metadata_never_moves_it_backwards(tmp_path: Path) -> None:
    path = tmp_path / "users.jl"
    path.write_text(json.dumps(KRUM) + "\n")
    run_import(str(path))
    # Since the first import the poller has logged more readings.
    FetchState.objects.filter(user__cloud_id="002738").update(
        total_events_logged=3000, last_timestamp=1443280000.0
    )

    output, _ = run_import(str(path))

    assert "line 1: 002738 unchanged" in output
    state = FetchState.objects.get(user__cloud_id="002738")
    assert (state.total_events_logged, state.last_timestamp) == (3000, 1443280000.0)


def test_an_unknown_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_users", str(tmp_path / "missing.jl"), stdout=StringIO())


def test_a_stop_request_ends_the_import_between_lines_keeping_what_was_done() -> None:
    lines = [json.dumps(KRUM), json.dumps(DELACOUR)]
    summary = ImportSummary()
    results = []
    for result in import_users(lines, summary=summary, should_stop=lambda: bool(results)):
        results.append(result)

    assert [r.outcome for r in results] == [Outcome.CREATED]
    assert summary.interrupted_at == 2
    assert "Interrupted before line 2" in summary.describe()
    assert list(EagleUser.objects.values_list("cloud_id", flat=True)) == ["002738"]


def test_a_line_that_is_not_utf8_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "users.jl"
    path.write_bytes(b'{"cloud_id": "\xff\xfe"}\n' + json.dumps(DELACOUR).encode() + b"\n")
    output, status = run_import(str(path))
    assert status == 1
    assert "line 1: failed: not UTF-8 text" in output
    assert "line 2: 00a1f0 created" in output
