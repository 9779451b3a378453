"""Make the repository importable when a job runs from an uploaded working dir without an install
(``ray job submit --working-dir .``): the packages live in ./ (diled) and ./platform (diled_platform)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "platform"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
