"""What the browser tests share: Debian's Chromium (``TATLAS_CHROMIUM`` to point elsewhere) driven by
Playwright's ``executable_path`` (Playwright's own browser download cannot work here), and the marks
that skip them, with the reason, where either is missing."""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("TATLAS_CHROMIUM", "/usr/bin/chromium")
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TATLAS_CHROMIUM)"),
]
