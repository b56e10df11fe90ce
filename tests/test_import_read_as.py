"""An import says how it read each file: the format detected (or asked for), per file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from conversations.models import ImportJob, ImportStatus, Membership, Role
from conversations.services.imports import import_job_create, import_job_process

from .factories import MembershipFactory

pytestmark = pytest.mark.django_db
REAL = Path(__file__).parent / "fixtures" / "real"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def member() -> Membership:
    return MembershipFactory.create(role=Role.ANALYST)


def _imported(member: Membership, name: str, data: bytes, format: str = "") -> ImportJob:
    upload = SimpleUploadedFile(name, data)
    job = import_job_create(
        organization=member.organization, user=member.user, upload=upload, format=format
    )
    return import_job_process(job)


def test_it_says_the_format_it_detected_for_each_member_of_an_archive(
    client: Client, member: Membership
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(REAL / "braintrust-go.jsonl", "traces/braintrust-go.jsonl")  # a real log
        zipped.writestr("chat.json", json.dumps(CHAT, indent=2))
    job = _imported(member, "both.zip", archive.getvalue())
    assert job.status == ImportStatus.SUCCEEDED
    assert [kind for _, kind in job.read_as] == ["api_log", "chat_json"]
    assert all(name.startswith("both.zip") for name, _ in job.read_as), job.read_as
    client.force_login(member.user)
    page = client.get(reverse("import_job_detail", args=[member.organization.slug, job.code]))
    said = page.content.decode().split("data-read-as>", 1)[1].split("</p>", 1)[0]
    assert said == (
        "Read as (detected): API log (traces/braintrust-go.jsonl); Chat JSON (chat.json)."
    )
    assert job.read_as_groups() == [
        ("api_log", ["traces/braintrust-go.jsonl"]),
        ("chat_json", ["chat.json"]),
    ]


def test_one_file_detected_is_said_in_a_few_words(client: Client, member: Membership) -> None:
    job = _imported(member, "braintrust-go.jsonl", (REAL / "braintrust-go.jsonl").read_bytes())
    client.force_login(member.user)
    page = client.get(reverse("import_job_detail", args=[member.organization.slug, job.code]))
    assert "data-read-as>Read as API log (detected).</p>" in page.content.decode()


def test_a_format_asked_for_is_said_as_asked(client: Client, member: Membership) -> None:
    job = _imported(member, "chat.txt", json.dumps(CHAT).encode(), format="chat_json")
    assert job.status == ImportStatus.SUCCEEDED and job.read_as == [["chat.txt", "chat_json"]]
    client.force_login(member.user)
    page = client.get(reverse("import_job_detail", args=[member.organization.slug, job.code]))
    html = page.content.decode()
    assert "data-read-as" not in html  # said once, where the status says the format picked
    status = " ".join(html.split("data-job-status>", 1)[1].split("bytes</p>", 1)[0].split())
    assert status.startswith("Done</b> · Chat JSON ·"), status  # the name, not chat_json


def test_a_failed_import_still_says_how_it_read_the_file(
    client: Client, member: Membership
) -> None:
    lines = [json.dumps(CHAT), json.dumps({"model": "gpt-4o", "messages": [{"role": "bot"}]})]
    job = _imported(member, "bad.jsonl", "\n".join(lines).encode())
    assert job.status == ImportStatus.FAILED and "line 2" in job.error
    assert job.read_as == [["bad.jsonl", "chat_jsonl"]]
    client.force_login(member.user)
    page = client.get(reverse("import_job_detail", args=[member.organization.slug, job.code]))
    assert "data-read-as>Read as Chat JSONL (detected).</p>" in page.content.decode()


def test_a_file_whose_name_holds_a_plus_is_named_whole(member: Membership) -> None:
    """Two files' names are joined with " + " in the job's name; one file's is its own."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("chat.json", json.dumps(CHAT, indent=2))
    job = _imported(member, "q3 + q4.zip", archive.getvalue())
    assert job.status == ImportStatus.SUCCEEDED
    assert job.read_as == [["q3 + q4.zip:chat.json", "chat_json"]]
    assert job.read_as_groups() == [("chat_json", ["chat.json"])]


def test_two_files_whose_names_hold_a_plus_are_each_named_whole(
    member: Membership, oracles: Path
) -> None:
    """The job's name joins the two with " + "; each file keeps its own name, not a split of
    that (which cut "q3 + q4 in.jsonl" at its own " + ")."""
    uploads = [
        SimpleUploadedFile("q3 + q4 in.jsonl", (oracles / name).read_bytes())
        for name in ("litellm_batch_input_furniture.jsonl", "litellm_batch_output_sample.jsonl")
    ]
    uploads[1].name = "q3 + q4 out.jsonl"
    job = import_job_create(
        organization=member.organization,
        user=member.user,
        upload=uploads[0],
        second_upload=uploads[1],
    )
    assert job.file_names == ["q3 + q4 in.jsonl", "q3 + q4 out.jsonl"]
    assert job.original_name == "q3 + q4 in.jsonl + q3 + q4 out.jsonl"
    job = import_job_process(job)
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert [name for name, _ in job.read_as] == ["q3 + q4 in.jsonl", "q3 + q4 out.jsonl"]


def test_an_error_in_the_second_file_names_it_whole(member: Membership, oracles: Path) -> None:
    first = SimpleUploadedFile(
        "a + b.jsonl", (oracles / "litellm_batch_input_furniture.jsonl").read_bytes()
    )
    output = (oracles / "litellm_batch_output_sample.jsonl").read_bytes().rstrip(b"\n")
    second = SimpleUploadedFile("c + d.jsonl", output + b"\n{not json\n")
    job = import_job_create(
        organization=member.organization, user=member.user, upload=first, second_upload=second
    )
    job = import_job_process(job)
    assert job.status == ImportStatus.FAILED
    broken = len(output.splitlines()) + 1
    assert job.error.startswith(f"c + d.jsonl line {broken}"), job.error
