"""The model pages: the active bundle's card, the bundle list, and honest failure."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from ml.bundle import load_bundle
from ml.evaluate.numbers import interval, number
from tests.web.test_caveats import relabel
from webapp.extensions import db


def test_index_shows_the_active_bundle_card(client, bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir / "tiny")
    page = client.get("/model").get_data(as_text=True)
    assert bundle.id in page
    assert "test_efficientnet" in page
    assert "Not for clinical use" in page
    slice_auc = bundle.metrics["slice"]["roc_auc"]
    assert f"{slice_auc:.3f}" in page
    assert "patients it did not see" in page
    assert '<dd id="data-origin">synthetic phantoms: not real CT</dd>' in page
    assert 'id="synthetic-model"' in page
    assert "optimistic" in page  # the checkpoint-selection caveat travels to the page
    check = bundle.metrics["checkpoint_check"]
    chose = check["kept_epochs"]["epochs"] != [bundle.config["epochs"]] * bundle.config["folds"]
    # Where a fold kept an earlier epoch, the page says what the choice added; else it is moot.
    assert ("chosen on nothing" in page) == chose
    if chose:
        assert f"{check['last_epochs']['slice_roc_auc']:.3f}" in page


def test_the_upload_page_names_the_model_that_will_predict(client, bundle_dir: Path) -> None:
    page = client.get("/").get_data(as_text=True)
    assert load_bundle(bundle_dir / "tiny").id in page and 'type="file"' in page


def test_no_bundle_is_said_plainly(app_without_bundle: Flask) -> None:
    response = app_without_bundle.test_client().get("/model")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "No model bundle is loaded" in page
    assert "make run" in page


def test_a_tampered_bundle_is_not_loaded(tmp_path: Path, bundle_dir: Path) -> None:
    from tests.web.conftest import _make_app

    metrics = bundle_dir / "tiny" / "metrics.json"
    data = json.loads(metrics.read_text())
    data["slice"]["roc_auc"] = 0.99  # someone improving the figures by hand
    metrics.write_text(json.dumps(data))
    page = (
        _make_app(tmp_path, bundle_dir, "tiny").test_client().get("/model").get_data(as_text=True)
    )
    assert "No model bundle is loaded" in page
    assert "metrics.json" in page


def test_sync_registers_bundles_once_and_lists_them(app: Flask, runner, client) -> None:
    first = runner.invoke(args=["bundles", "sync"])
    assert first.exit_code == 0 and "registered tiny" in first.output
    second = runner.invoke(args=["bundles", "sync"])
    assert "registered" not in second.output
    with app.app_context():
        assert db.session.scalar(sa.text("select count(*) from bundles")) == 1
    page = client.get("/models").get_data(as_text=True)
    assert "tiny" in page and "active" in page


def test_bundle_detail_and_404(runner, client, bundle_dir: Path) -> None:
    bundle_id = load_bundle(bundle_dir / "tiny").id
    # The loaded bundle is known by id before it is registered; others only once registered.
    assert client.get(f"/models/{bundle_id}").status_code == 200
    runner.invoke(args=["bundles", "sync"])
    page = client.get(f"/models/{bundle_id}")
    assert page.status_code == 200 and bundle_id in page.get_data(as_text=True)
    assert client.get("/models/0000000000000000").status_code == 404


def test_schema_comes_from_migrations(app: Flask) -> None:
    with app.app_context():
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"bundles", "alembic_version"} <= tables
        assert db.session.scalar(sa.text("pragma foreign_keys")) == 1
        assert db.session.scalar(sa.text("pragma journal_mode")) == "wal"


def _row(page: str, bundle_id: str) -> str:
    match = re.search(rf'<tr data-bundle="{bundle_id}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {bundle_id}"
    return match.group(1)


def test_the_list_gives_each_bundle_its_figures_and_links(
    app: Flask, runner, client, bundle_dir: Path
) -> None:
    shutil.copytree(bundle_dir / "tiny", bundle_dir / "other")
    relabel(bundle_dir / "other", "real CT from somewhere")
    assert runner.invoke(args=["bundles", "sync"]).exit_code == 0
    page = client.get("/models").get_data(as_text=True)
    for name in ("tiny", "other"):
        bundle = load_bundle(bundle_dir / name)
        row = _row(page, bundle.id)
        for level in ("slice", "patient"):
            figures = bundle.metrics[level]
            ci = interval(figures["roc_auc_ci95"])
            expected = f'{number(figures["roc_auc"])}<br><span class="small">({ci})</span>'
            assert expected in row, (name, level)
        assert f'href="/models/{bundle.id}"' in row and f'href="/studio/{bundle.id}"' in row
        assert ("phantoms only" in row) == (name == "tiny")
        assert ("active" in row) == (name == "tiny")


def test_the_list_says_when_a_bundle_is_damaged_or_gone(app, runner, client, bundle_dir) -> None:
    shutil.copytree(bundle_dir / "tiny", bundle_dir / "other")
    relabel(bundle_dir / "other", "real CT from somewhere")
    runner.invoke(args=["bundles", "sync"])
    other = load_bundle(bundle_dir / "other")
    metrics = bundle_dir / "other" / "metrics.json"
    data = json.loads(metrics.read_text())
    data["slice"]["roc_auc"] = 0.99  # someone improving the figures by hand
    metrics.write_text(json.dumps(data))
    row = _row(client.get("/models").get_data(as_text=True), other.id)
    assert "0.990" not in row and "damaged" in row and "/studio/" not in row
    shutil.rmtree(bundle_dir / "other")
    row = _row(client.get("/models").get_data(as_text=True), other.id)
    assert "not found" in row


def test_the_card_gives_operating_points_their_wilson_intervals(client, bundle_dir) -> None:
    bundle = load_bundle(bundle_dir / "tiny")
    page = html.unescape(client.get("/model").get_data(as_text=True))
    figures = bundle.point_figures()
    for level in ("slice", "patient"):
        table = re.search(rf'id="points-{level}">(.*?)</table>', page, re.S).group(1)
        for name, at in figures[level].items():
            row = re.search(rf"<tr><td>{re.escape(name)}\b.*?</tr>", table, re.S).group(0)
            for key in ("sensitivity", "specificity", "ppv", "npv"):
                ci = at["ci95"][key]
                cell = number(at[key]) + (
                    f'<br><span class="small ci">({interval(ci)})</span>' if ci else ""
                )
                assert cell in row, (level, name, key)
    active = bundle.metrics["operating_point"]["slice"]
    at = figures["slice"][active]
    top = re.search(r'id="operating-point">(.*?)</table>', page, re.S).group(1)
    assert f"({interval(at['ci95']['sensitivity'])})" in top
    assert f"({interval(at['ci95']['accuracy'])})" in top


def test_the_card_gives_each_source_its_figures_and_labels(
    make_app, bundle_dir: Path, slice_label_bundle: Path
) -> None:
    shutil.copytree(slice_label_bundle, bundle_dir / "two")
    client = make_app(active="two").test_client()
    page = html.unescape(client.get("/model").get_data(as_text=True))
    metrics = json.loads((slice_label_bundle / "metrics.json").read_text())
    table = page[
        page.index('id="by-source"') : page.index("</table>", page.index('id="by-source"'))
    ]
    for source, figures in metrics["by_source"].items():
        slice_ = figures["slice"]
        assert f"{number(slice_['roc_auc'])} ({interval(slice_['roc_auc_ci95'])})" in table
        assert f"<td>{source}</td>" in table
    folder = metrics["by_source"]["folder"]["patient"]
    assert f"{number(folder['roc_auc'])} ({interval(folder['roc_auc_ci95'])})" in table
    assert "counted at slice level only" in table  # every site patient is positive: said so
    notes = page[page.index('id="label-notes"') :]
    assert "source folder:" in notes and "Patient score: " in notes
    assert "the patient row counts folder only" in " ".join(page.split())
