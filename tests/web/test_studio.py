"""Threshold studio routes: OOF figures, presets, saving and activating points, changed labels."""

from __future__ import annotations

import csv
import html
import re
import shutil
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from ml.bundle import load_bundle
from ml.evaluate import figures as plots
from ml.evaluate import oof
from ml.metrics import scores as metrics
from ml.metrics.thresholds import read_thresholds
from tests.web.helpers import phantom_slices, post, upload
from webapp import ROOT
from webapp.extensions import db
from webapp.models import AuditEvent, OperatingPointRecord, Prediction

STATIC = ROOT / "static"


@pytest.fixture
def bundle(bundle_dir):
    return load_bundle(bundle_dir / "tiny")


def _studio(client, bundle, **args):
    return client.get(f"/studio/{bundle.id}", query_string=args)


def test_active_studio_redirects_to_the_bundle(client, bundle) -> None:
    response = client.get("/studio?level=patient")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/studio/{bundle.id}?level=patient")


@pytest.mark.parametrize("level", ["slice", "patient"])
def test_table_equals_python_at_the_threshold(client, bundle, level) -> None:
    scores = oof.oof_scores(bundle, level)
    threshold = float(np.quantile(scores.scores, 0.6))
    page = _studio(client, bundle, level=level, threshold=threshold).get_data(as_text=True)
    expected = metrics.at_threshold(scores.labels, scores.scores, threshold)
    for key in ("tp", "fp", "tn", "fn"):
        assert f'id="cm-{key}">{expected[key]}<' in page, key
    sensitivity = expected["sensitivity"]
    assert f'id="m-sensitivity">{sensitivity:.3f}<' in page
    assert "out-of-fold predictions" in page and "Not for clinical use" in page


def test_prevalence_changes_ppv_and_npv(client, bundle) -> None:
    scores = oof.oof_scores(bundle, "slice")
    figures = oof.metrics_at(scores, 0.5, prevalence=0.05)
    page = _studio(client, bundle, threshold=0.5, prevalence=0.05).get_data(as_text=True)
    expected_ppv = figures["at_prevalence"]["ppv"]
    assert f"At prevalence 0.05: PPV {expected_ppv:.3f}" in page


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2", "abc", "nan"])
def test_a_prevalence_outside_0_1_is_refused_with_a_message(client, bundle, value) -> None:
    response = _studio(client, bundle, threshold=0.5, prevalence=value)
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 400
    problem = re.search(r'id="prevalence-problem"[^>]*>([^<]*)<', page).group(1)
    assert "strictly between 0 and 1" in problem and repr(value) in problem
    assert re.search(rf'id="prevalence"[^>]*value="{re.escape(value)}"', page)  # kept to correct
    assert "PPV and NPV above are at the data's prevalence" in page
    assert "At prevalence" not in page


def test_a_prevalence_is_kept_in_the_links(client, bundle) -> None:
    response = _studio(client, bundle, threshold=0.5, prevalence=0.05)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert re.search(r'id="prevalence"[^>]*value="0.05"', page)
    assert re.search(r'id="prevalence-problem"[^>]*hidden', page)
    links = re.findall(r'<a class="(?:level|level current|preset)" href="([^"]+)"', page)
    own, _ = read_thresholds(bundle.path / "thresholds.json")
    assert len(links) == 2 + len(own)
    for link in links:
        assert parse_qs(urlsplit(html.unescape(link)).query)["prevalence"] == ["0.05"]
    plain = _studio(client, bundle, threshold=0.5).get_data(as_text=True)
    levels = re.findall(r'<a class="level[^"]*" href="([^"]+)"', plain)
    assert len(levels) == 2 and not any("prevalence=" in link for link in levels)


def test_data_json_holds_arrays_the_report_figures_and_presets(client, bundle) -> None:
    data = client.get(f"/studio/{bundle.id}/data.json?level=slice&threshold=0.25").get_json()
    scores = oof.oof_scores(bundle, "slice")
    assert data["labels"] == scores.labels.tolist() and len(data["scores"]) == len(data["labels"])
    own, active = read_thresholds(bundle.path / "thresholds.json")
    assert [p["name"] for p in data["points"]][: len(own)] == [p.name for p in own]
    assert data["active"]["name"] == active
    assert set(data["figures"]) == {"roc", "pr", "distribution"}
    assert data["moving"] == plots.THRESHOLD_TAG
    roc = data["figures"]["roc"]
    names = [trace.get("name") for trace in roc["data"]]
    assert plots.BAND_NAME in names and all(f"{p.name} (" in " ".join(names) for p in own)
    marker = next(t for t in roc["data"] if t.get("meta") == data["moving"])
    counts = metrics.at_threshold(scores.labels, scores.scores, 0.25)
    assert marker["x"] == [pytest.approx(1 - counts["specificity"])]
    assert marker["y"] == [pytest.approx(counts["sensitivity"])]
    [line] = [s for s in data["figures"]["distribution"]["layout"]["shapes"] if s.get("name")]
    assert (line["name"], line["x0"], line["x1"]) == (data["moving"], 0.25, 0.25)


def test_data_json_draws_at_the_active_point_unless_told(client, bundle) -> None:
    data = client.get(f"/studio/{bundle.id}/data.json").get_json()
    shapes = data["figures"]["distribution"]["layout"]["shapes"]
    assert shapes[0]["x0"] == data["active"]["threshold"]


@pytest.mark.parametrize("threshold", ["1.5", "-0.1", "x"])
def test_data_json_refuses_a_bad_threshold_in_json(client, bundle, threshold) -> None:
    response = client.get(f"/studio/{bundle.id}/data.json?threshold={threshold}")
    assert response.status_code == 400 and response.mimetype == "application/json"
    assert "threshold must be a number between 0 and 1" in response.get_json()["error"]["message"]


def test_the_studio_serves_a_partial_plotly_of_the_reports_version(client, bundle) -> None:
    from plotly.offline import get_plotlyjs_version

    page = _studio(client, bundle).get_data(as_text=True)
    [name] = re.findall(r'src="/static/(plotly[^"]*)"', page)
    version = get_plotlyjs_version()
    assert name == f"plotly-basic-{version}.min.js"  # the version the reports write
    served = client.get(f"/static/{name}")
    head = served.get_data()[:200].decode()
    served.close()
    assert f"plotly.js (basic - minified) v{version}" in head
    assert (STATIC / "plotly-LICENSE.txt").read_text().startswith("MIT License")
    assert {p.name for p in STATIC.glob("plotly*")} == {name, "plotly-LICENSE.txt"}
    assert (STATIC / name).stat().st_size < 1_500_000  # not the 4.8 MB full bundle


def test_bad_level_is_400_and_unknown_bundle_404(client, bundle) -> None:
    assert _studio(client, bundle, level="organ").status_code == 400
    assert client.get("/studio/0000000000000000").status_code == 404


def test_save_and_activate_a_point_labels_new_results(app, client, bundle, phantom_data) -> None:
    response = post(
        client,
        f"/studio/{bundle.id}/points",
        {"level": "slice", "threshold": "0.001", "name": "catch-all", "activate": "on",
         "created_by": "dr test"},
    )  # fmt: skip
    assert response.status_code == 303
    with app.app_context():
        record = db.session.scalars(db.select(OperatingPointRecord)).one()
        assert (record.name, record.active, record.created_by) == ("catch-all", True, "dr test")
        assert record.metrics["tp"] + record.metrics["fn"] > 0 and record.half_width >= 0
    page = _studio(client, bundle).get_data(as_text=True)
    assert 'id="active-name">catch-all<' in page

    upload(client, phantom_slices(phantom_data, 1))
    with app.app_context():
        prediction = db.session.scalars(db.select(Prediction)).one()
        assert prediction.operating_point == "catch-all" and prediction.threshold == 0.001
        assert prediction.label == "Stroke"


def test_bad_saves_are_refused(client, bundle) -> None:
    own, _ = read_thresholds(bundle.path / "thresholds.json")
    url = f"/studio/{bundle.id}/points"
    assert post(client, url, {"level": "slice", "threshold": "0.4", "name": ""}).status_code == 400
    taken = post(client, url, {"level": "slice", "threshold": "0.4", "name": own[0].name})
    assert taken.status_code == 400
    assert "bundle's own points" in html.unescape(taken.get_data(as_text=True))
    assert post(client, url, {"level": "slice", "threshold": "2", "name": "x"}).status_code == 400
    assert (
        client.post(url, data={"level": "slice", "threshold": "0.4", "name": "x"}).status_code
        == 400
    )  # no CSRF


def test_adopting_a_bundle_point_and_counting_changed_labels(app, client, bundle, phantom_data):
    upload(client, phantom_slices(phantom_data, 1))
    with app.app_context():
        prediction = db.session.scalars(db.select(Prediction)).one()
        score, label = prediction.score, prediction.label
    flip = 0.0 if label == "Normal" else 1.0  # a threshold that flips this result's label
    page = _studio(client, bundle, threshold=flip).get_data(as_text=True)
    assert re.search(r'id="changed-count">1<', page)
    listing = client.get(f"/studio/{bundle.id}/changed?level=slice&threshold={flip}")
    assert f"/predictions/{prediction.id}" in listing.get_data(as_text=True)
    same = _studio(client, bundle, threshold=score if label == "Stroke" else 1.0)
    assert 'id="changed-count">0<' in same.get_data(as_text=True)

    own, active = read_thresholds(bundle.path / "thresholds.json")
    other = next(p for p in own if p.name != active)
    response = post(
        client,
        f"/studio/{bundle.id}/points/activate",
        {"level": "slice", "name": other.name, "confirmed": "yes"},
    )
    assert response.status_code == 303
    assert f'id="active-name">{other.name}<' in _studio(client, bundle).get_data(as_text=True)
    with app.app_context():  # the stored result keeps the threshold it was made with
        assert db.session.scalars(db.select(Prediction)).one().label == label
    for confirmed in ("yes", ""):
        missing = post(
            client,
            f"/studio/{bundle.id}/points/activate",
            {"level": "slice", "name": "nope", "confirmed": confirmed},
        )
        assert missing.status_code == 400


def test_make_active_asks_for_confirmation_first(app, client, bundle) -> None:
    own, active = read_thresholds(bundle.path / "thresholds.json")
    other = next(p for p in own if p.name != active)
    page = _studio(client, bundle).get_data(as_text=True)
    form = re.search(
        rf'<form[^>]*data-confirm="([^"]*)">(?:(?!</form>).)*value="{re.escape(other.name)}"',
        page,
        re.S,
    )
    assert form and f"Make {other.name} (" in html.unescape(form.group(1))

    url = f"/studio/{bundle.id}/points/activate"
    asked = post(client, url, {"level": "slice", "name": other.name})
    text = html.unescape(asked.get_data(as_text=True))
    assert asked.status_code == 200
    assert f"Make {other.name} the active slice operating point?" in text
    assert f"at least <strong>{other.threshold:.3f}</strong>" in text
    assert 'name="confirmed" value="yes"' in text
    with app.app_context():  # asking changed nothing
        assert db.session.scalars(db.select(OperatingPointRecord)).all() == []
    assert f'id="active-name">{active}<' in _studio(client, bundle).get_data(as_text=True)

    done = post(client, url, {"level": "slice", "name": other.name, "confirmed": "yes"})
    assert done.status_code == 303
    assert f'id="active-name">{other.name}<' in _studio(client, bundle).get_data(as_text=True)


def test_a_saved_point_is_deleted_with_an_audit_row_but_not_while_active(app, client, bundle):
    url = f"/studio/{bundle.id}/points"
    for name, activate in (("wide", "on"), ("narrow", "")):
        saved = post(client, url, {"level": "slice", "threshold": "0.3", "name": name,
                                   "activate": activate})  # fmt: skip
        assert saved.status_code == 303
    page = _studio(client, bundle).get_data(as_text=True)
    assert 'aria-label="delete narrow"' in page and 'aria-label="delete wide"' not in page
    assert "make another active to delete it" in page

    active = post(client, f"{url}/delete", {"level": "slice", "name": "wide"})
    assert active.status_code == 409
    assert "make another active first" in html.unescape(active.get_data(as_text=True))
    own = post(client, f"{url}/delete", {"level": "slice", "name": "youden"})
    assert own.status_code == 400 and "bundle's own" in html.unescape(own.get_data(as_text=True))
    assert post(client, f"{url}/delete", {"level": "slice", "name": "nope"}).status_code == 404
    with app.app_context():
        assert {r.name for r in db.session.scalars(db.select(OperatingPointRecord))} == {
            "wide",
            "narrow",
        }

    deleted = post(client, f"{url}/delete", {"level": "slice", "name": "narrow"})
    assert deleted.status_code == 303
    page = client.get(deleted.headers["Location"]).get_data(as_text=True)
    assert "Deleted the slice operating point narrow" in page and "delete narrow" not in page
    with app.app_context():
        assert [r.name for r in db.session.scalars(db.select(OperatingPointRecord))] == ["wide"]
        event = db.session.scalars(
            db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)
        ).one()
        assert (event.action, event.detail["deleted"]) == ("operating_point", "narrow")


def test_holdout_report_is_shown_apart_when_present(client, bundle) -> None:
    page = _studio(client, bundle).get_data(as_text=True)
    has_holdout = (bundle.path / "report_holdout" / "metrics.json").exists()
    assert ("Holdout (for reading only)" in page) == has_holdout


@pytest.fixture
def two_source_client(make_app, bundle_dir, slice_label_bundle):
    """A studio on a bundle trained on two sources: `folder` (patients of both classes) and
    `site` (every patient positive)."""
    shutil.copytree(slice_label_bundle, bundle_dir / "two")
    app = make_app(active="two")
    return app.test_client(), load_bundle(bundle_dir / "two")


def _oof_rows(bundle, source: str) -> list[dict]:
    with (bundle.path / "oof.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["source"] == source]


def test_the_studio_shows_each_source_on_its_own(two_source_client) -> None:
    client, bundle = two_source_client
    pooled = client.get(f"/studio/{bundle.id}").get_data(as_text=True)
    assert 'id="sources"' in pooled and "source=site" in pooled and "source=folder" in pooled
    site_rows = _oof_rows(bundle, "site")
    data = client.get(f"/studio/{bundle.id}/data.json?source=site").get_json()
    assert data["source"] == "site"
    assert len(data["labels"]) == len(site_rows)
    assert data["labels"] == [int(row["label"]) for row in site_rows]
    page = client.get(f"/studio/{bundle.id}?source=site").get_data(as_text=True)
    assert 'id="source-note"' in page and f"({len(site_rows)} slices" in page
    assert "patient (none for site" in page  # every site patient is positive
    folder = client.get(f"/studio/{bundle.id}/data.json?source=folder&level=patient").get_json()
    patients = {row["patient_id"] for row in _oof_rows(bundle, "folder")}
    assert len(folder["labels"]) == len(patients)


def test_a_source_without_patient_figures_or_unknown_is_refused(two_source_client) -> None:
    client, bundle = two_source_client
    one_class = client.get(f"/studio/{bundle.id}?source=site&level=patient")
    assert one_class.status_code == 400
    assert "same label" in one_class.get_data(as_text=True)
    assert client.get(f"/studio/{bundle.id}/data.json?source=site&level=patient").status_code == 400
    unknown = client.get(f"/studio/{bundle.id}?source=elsewhere")
    assert unknown.status_code == 400 and "folder, site" in unknown.get_data(as_text=True)
