"""tests/ui: a real `prefect server` + workers per module (hg_stack), Chromium for the UI."""

import sys
from pathlib import Path

# hg_stack is shared with tests/scaleout; make it importable however pytest was started.
sys.path.insert(0, str(Path(__file__).resolve().parent))
