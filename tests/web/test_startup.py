"""Starting the app must not load torch: every `flask` command and each gunicorn worker would
pay several seconds for it (a second `make run` went from 12 s to 34 s when it did)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_creating_the_app_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from webapp import create_app; create_app(); "
        "print(sorted(m for m in ('torch', 'pytorch_grad_cam', 'onnxruntime') if m in sys.modules))"
    )
    env = {
        "BUNDLE_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SECRET_KEY": "not-a-secret-test-only",
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
