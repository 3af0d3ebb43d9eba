"""sessions/ is the bottom layer: it imports nothing of distributor/, webapp/
or Django, so a driver can be read, imported and tested on its own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
IMPORT_EVERY_KIND = (
    "import sessions, sessions.genode, sessions.qemu, sessions.board, sessions.simso, sessions.stdio; import sys; "
    "assert not [m for m in sys.modules if m.startswith(('distributor', 'webapp', 'django'))], "
    "sorted(m for m in sys.modules if m.startswith(('distributor', 'webapp', 'django')))"
)


def test_sessions_import_without_django_settings_or_models():
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_KIND], cwd=CHECKOUT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
