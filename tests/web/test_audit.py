"""The audit log: each change that is stored leaves one row saying who, what and when."""

from __future__ import annotations

from tests.web.helpers import BOTH_DATABASES, change, phantom_slices, post, upload
from webapp.extensions import db
from webapp.models import AuditEvent

pytestmark = BOTH_DATABASES


def _events(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id)).all()
        return [(e.actor, e.action, e.target) for e in rows]


def test_browser_actions_are_audited_in_order(app, client, phantom_data, bundle_dir) -> None:
    from ml.bundle import load_bundle

    content, name = phantom_slices(phantom_data, 1)[0]
    assert upload(client, [(b"not an image", "x.png")]).status_code == 415
    assert _events(app) == []  # a refused upload changes nothing, the log included
    response = upload(client, [(content, name)])
    result = client.get(response.headers["Location"]).headers["Location"]
    pid = result.rsplit("/", 1)[-1]
    change(client, result, "note", {"note": "seen"})
    change(client, result, "review", {"review": "agree"})
    bundle_id = load_bundle(bundle_dir / "tiny").id
    post(client, f"/studio/{bundle_id}/points",
         {"level": "slice", "threshold": "0.4", "name": "p", "activate": "on"})  # fmt: skip
    change(client, result, "delete", {})
    actions = [(actor, action) for actor, action, _ in _events(app)]
    assert actions == [
        ("browser", "upload"),
        ("browser", "predict"),
        ("browser", "note"),
        ("browser", "review"),
        ("browser", "operating_point"),
        ("browser", "operating_point"),
        ("browser", "delete"),
    ]
    assert _events(app)[-1][2] == f"prediction {pid}"


def test_tokens_and_api_calls_name_their_actor(app, client, runner, phantom_data) -> None:
    created = runner.invoke(args=["tokens", "create", "robot", "--scope", "write"])
    token = created.output.splitlines()[1]
    content, name = phantom_slices(phantom_data, 1)[0]
    import io

    client.post(
        "/api/v1/predict",
        data={"files": [(io.BytesIO(content), name)]},
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
    )
    events = _events(app)
    assert events[0][:2] == ("cli", "token")
    assert events[1][0].startswith("api token 1 (robot)") and events[1][1] == "upload"
    shown = runner.invoke(args=["audit", "show"])
    assert "robot" in shown.output and "upload" in shown.output
