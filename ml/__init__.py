"""Brain-CT slice classifier (Normal vs Stroke): training, bundles and evaluation.

Nothing here imports Flask. Not for clinical use.
"""

from __future__ import annotations

import os

# albumentations asks PyPI for a newer release on import; hospital networks are closed
# and a blocked request must not slow down or hang start-up.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
