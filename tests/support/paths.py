"""Where the project and its installed console scripts are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() == "true"
