"""`flask storage clean`: files no record refers to go; stored results and young files stay."""

from __future__ import annotations

import os
import time

from tests.web.helpers import BOTH_DATABASES, phantom_slices, stored_files, upload

pytestmark = BOTH_DATABASES


def test_clean_removes_only_old_orphans(app, client, runner, phantom_data) -> None:
    content, name = phantom_slices(phantom_data, 1)[0]
    result = client.get(upload(client, [(content, name)]).headers["Location"]).headers["Location"]
    client.get(f"{result}/slices/0/image.png").close()  # a cached rendering of a kept slice
    kept = set(stored_files(app))
    folder = next(iter(kept)).parent
    old_orphan = folder / "0123456789abcdef0123456789abcdef.png"
    old_orphan.write_bytes(b"left by a crash")
    (folder / f"{old_orphan.name}.window-model.png").write_bytes(b"its rendering")
    young_orphan = folder / "fedcba9876543210fedcba9876543210.png"
    young_orphan.write_bytes(b"still on its way")
    an_hour_ago = time.time() - 3700
    for path in [*kept, old_orphan, folder / f"{old_orphan.name}.window-model.png"]:
        os.utime(path, (an_hour_ago, an_hour_ago))

    dry = runner.invoke(args=["storage", "clean", "--dry-run"])
    assert "2 orphaned file(s) (dry run)" in dry.output and old_orphan.exists()
    done = runner.invoke(args=["storage", "clean"])
    assert "2 orphaned file(s)" in done.output
    assert set(stored_files(app)) == kept | {young_orphan}
