from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamsync import __version__


def test_version_from_the_console_script() -> None:
    script = Path(sys.executable).parent / "streamsync"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"streamsync {__version__}"
