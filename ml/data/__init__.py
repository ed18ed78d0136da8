"""From files to tensors: folder and manifest datasets, image readers, the decoded-slice cache,
2.5D neighbours, transforms, test-time views, patient splits, synthetic phantoms, and the check
that a slice looks like an axial head CT at all.

Its modules import only the top-level ones (config, errors, hashing, runtime).
"""

from __future__ import annotations

from ml.lazy import exports

__getattr__, __all__ = exports(
    __name__,
    {
        "load_dataset": "ml.data.dataset",
        "Source": "ml.data.sources",
        "parse_sources": "ml.data.sources",
        "decode_all": "ml.data.cache",
        "to_square": "ml.data.cache",
        "to_tensor": "ml.data.transforms",
        "phantom_patient": "ml.data.synth",
        "window_to_uint8": "ml.data.synth",
        "BRAIN_WINDOW": "ml.data.synth",
        "check_head_ct": "ml.data.headct",
        "HeadCtCheck": "ml.data.headct",
    },
)
