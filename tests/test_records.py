"""The committed records: the runs table the notebooks show, notebook 09's speed record, and the copy of
a reproduction's results into records/ (``make records``)."""

from __future__ import annotations

import json

import pytest

from dlp_lib import experiments as ex
from dlp_lib.errors import ConfigError
from dlp_lib.experiments import archive, speed


def test_runs_table_says_which_run_was_computed_and_where_its_record_lies():
    records = [{"config": {}, "timings": {"total": 12.345}}, {"config": {}, "timings": {"total": 3.0}}]
    runs = [
        {"run": "wanda · DLP (α=0.15) · 70% unstructured · seed 0", "record": "aa.json", "computed": True},
        {"run": "dense", "record": "bb.json", "computed": False},
    ]
    table = ex.runs_table(ex.RunList(records, runs), ex.RunList([], []))
    assert table.columns.tolist() == ["run", "record", "seconds", "source"]
    assert table.values.tolist() == [
        ["wanda · DLP (α=0.15) · 70% unstructured · seed 0", "aa.json", 12.3, "computed"],
        ["dense", "bb.json", 3.0, "read from record"],
    ]


def test_a_run_list_is_still_the_list_of_its_records():
    records = [{"a": 1}, {"b": 2}]
    run_list = ex.RunList(records, [{}, {}])
    assert run_list == records and run_list[1] == {"b": 2} and len(run_list) == 2


PROFILE = {"model": "tiny", "speedup": {"tokens": [1, 16], "formats": ["csr"], "end_to_end": False}}


def test_speed_is_measured_once_then_read_from_its_record(tmp_path, monkeypatch):
    calls = []

    def measure(prof):
        calls.append(prof["model"])
        return {"settings": prof["speedup"], "machine": "a test CPU", "products": [{"speedup": 0.5}], "end_to_end": []}

    monkeypatch.setattr(speed, "_measure", measure)
    first = speed.live_speed(PROFILE, tmp_path)
    second = speed.live_speed(PROFILE, tmp_path)
    assert calls == ["tiny"]
    assert first["computed"] is True and second["computed"] is False
    assert second["products"] == [{"speedup": 0.5}] and second["machine"] == "a test CPU"
    stored = json.loads(speed.live_speed_path(PROFILE, tmp_path).read_text())
    assert "computed" not in stored  # whether it was computed is about this call, not the record

    # other settings are another record; with computing switched off, a missing one is refused
    other = {**PROFILE, "speedup": {**PROFILE["speedup"], "tokens": [1]}}
    assert speed.live_speed_path(other, tmp_path) != speed.live_speed_path(PROFILE, tmp_path)
    monkeypatch.setenv(ex.RECORDS_ONLY_ENV, "1")
    assert speed.live_speed(PROFILE, tmp_path)["computed"] is False
    with pytest.raises(ConfigError, match="no speed measurement .* DLP_RECORDS_ONLY=1 forbids"):
        speed.live_speed(other, tmp_path)
    assert calls == ["tiny"]


def _results(tmp_path):
    results = tmp_path / "results"
    (results / "dsa_search").mkdir(parents=True)
    (results / "aa.json").write_text('{"config": 1}')
    (results / "dsa_search" / "bb.json").write_text('{"best": 2}')
    (results / "notes.txt").write_text("not a record")
    return results


def test_archive_copies_every_json_record_and_nothing_else(tmp_path):
    results, records = _results(tmp_path), tmp_path / "records"
    records.mkdir()
    (records / "stale.json").write_text("{}")  # a record of an earlier reproduction: replaced
    assert archive.archive(results, records) == (2, len('{"config": 1}') + len('{"best": 2}'))
    assert sorted(str(p.relative_to(records)) for p in records.rglob("*") if p.is_file()) == [
        "README.md",
        "aa.json",
        "dsa_search/bb.json",
    ]
    readme = (records / "README.md").read_text()
    assert "2 JSON files" in readme and "- `<key>.json` (1)" in readme and "- `dsa_search/` (1): DSA's" in readme
    assert (records / "dsa_search" / "bb.json").read_text() == '{"best": 2}'
    assert not list(tmp_path.glob(".records.*"))  # no staging folder left behind


def test_archive_refuses_before_writing_when_it_would_lose_a_file_or_has_nothing(tmp_path, capsys):
    results, records = _results(tmp_path), tmp_path / "records"
    records.mkdir()
    (records / "mine.csv").write_text("a user's file")
    with pytest.raises(ConfigError, match="not records .*mine.csv"):
        archive.archive(results, records)
    assert (records / "mine.csv").read_text() == "a user's file" and not (records / "aa.json").exists()
    with pytest.raises(ConfigError, match="no records in .*empty"):
        archive.archive(tmp_path / "empty", tmp_path / "other")
    assert archive.main(["--results", str(tmp_path / "empty"), "--records", str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "other").exists()
