"""The result viewer without a browser: which slice a study opens on, links that keep the view,
the strip's legend, the heading's wording, and long names."""

from __future__ import annotations

import html
import re

import pytest

from tests.web.helpers import ct_dicom, phantom_slices, upload, wait_for_job
from webapp.extensions import db
from webapp.models import Prediction


@pytest.fixture
def study(app, client, tmp_path) -> str:
    """A study of three DICOM slices; the path of its result."""
    files = [(ct_dicom(tmp_path, f"s{n}.dcm", number=n), f"s{n}.dcm") for n in (1, 2, 3)]
    response = upload(client, files, study=True)
    wait_for_job(app, response.headers["Location"].rsplit("/", 1)[-1])
    return client.get(response.headers["Location"]).headers["Location"]


def _hrefs(page: str, marker: str) -> list[str]:
    """The href of every link carrying `marker` in its attributes, unescaped."""
    return [html.unescape(h) for h in re.findall(rf'<a href="([^"]+)"[^>]*{marker}', page)]


def test_a_study_opens_on_its_highest_scoring_slice_and_says_so(app, client, study) -> None:
    with app.app_context():
        probabilities = [s.probability for s in db.session.get(Prediction, 1).slices]
    best = probabilities.index(max(probabilities))
    page = client.get(study).get_data(as_text=True)
    assert f"Opened on the highest-scoring slice, {best + 1} of 3." in page
    assert f"Slice {best + 1} of 3:" in page
    chosen = client.get(f"{study}?slice={(best + 1) % 3}").get_data(as_text=True)
    assert 'id="opened-on"' not in chosen and f"Slice {(best + 1) % 3 + 1} of 3:" in chosen


def test_every_viewer_link_keeps_the_window_overlay_opacity_and_method(client, study) -> None:
    """Without JavaScript the links themselves carry the view: another slice, another window."""
    page = client.get(f"{study}?slice=0&window=bone&opacity=0.7&method=eigencam").get_data(
        as_text=True
    )
    strip = _hrefs(page, 'hx-get="[^"]+"[^>]*hx-push-url="true" data-keeps-view\\s+class="strip')
    assert len(strip) == 3
    for position, href in enumerate(strip):
        assert href == f"{study}?slice={position}&window=bone&opacity=0.7&method=eigencam"
    windows = re.findall(r'<a href="([^"]+)"[^>]*data-window="(\w+)"', page)
    assert {(html.unescape(h), w) for h, w in windows} == {
        (f"{study}?slice=0{'' if w == 'model' else f'&window={w}'}&opacity=0.7&method=eigencam", w)
        for w in ("model", "brain", "subdural", "stroke", "bone")
    }
    off = client.get(f"{study}?slice=1&window=bone&opacity=0.7&cam=off").get_data(as_text=True)
    for href in _hrefs(
        off, 'hx-get="[^"]+"[^>]*hx-push-url="true" data-keeps-view\\s+class="strip'
    ):
        assert "cam=off" in href and "opacity=0.7" in href and "window=bone" in href
    show = html.unescape(re.search(r'<a href="([^"]+)"[^>]*\s+id="show-overlay"', off).group(1))
    assert show == f"{study}?slice=1&window=bone&opacity=0.7"
    form = re.search(r'<form method="get"[^>]*class="overlay-controls">(.*?)</form>', page, re.S)
    hidden = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', form.group(1)))
    assert hidden == {"slice": "0", "window": "bone", "method": "eigencam"}


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("opacity=nan", 'value="0.4"'),
        ("opacity=7", 'value="1.0"'),
        ("window=nonsense", 'class="window current" data-window="model"'),
        ("method=nope", "cam.png?method=gradcam&amp;record="),
    ],
)
def test_odd_view_values_fall_back_to_the_defaults(client, study, query, shown) -> None:
    response = client.get(f"{study}?slice=0&{query}")
    assert response.status_code == 200 and shown in response.get_data(as_text=True)


def test_the_strip_has_a_legend_and_the_heading_reads_well(client, study) -> None:
    page = client.get(study).get_data(as_text=True)
    legend = re.search(r'id="strip-legend">(.*?)</p>', page, re.S).group(1)
    assert "uncertain" in legend and "swatch unsure" in legend and "probability" in legend
    lead = re.search(r'<p class="lead">(.*?)</p>', page, re.S).group(1)
    assert "Study of 3 slices (s1.dcm … s3.dcm)" in lead and "Study <strong" not in lead


def test_history_shortens_a_long_name_and_keeps_it_whole_on_hover(client, phantom_data) -> None:
    content, _ = phantom_slices(phantom_data, 1)[0]
    name = "scan-" + "y" * 291 + ".png"
    upload(client, [(content, name)])
    page = client.get("/history").get_data(as_text=True)
    link = re.search(r'<td class="name-cell"><a href="[^"]+" title="([^"]+)">([^<]+)</a>', page)
    assert link.group(1) == name
    assert len(link.group(2)) <= 90 and link.group(2).endswith("…")
