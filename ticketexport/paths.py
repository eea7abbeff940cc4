"""Where the SQL, the page templates and procrastinate's schema are, checkout or wheel."""

from __future__ import annotations

import sysconfig
from pathlib import Path

# The files live at the top of the repository (sql/, templates/, procrastinate_schema.sql),
# beside the package: a checkout or an editable install reads them there. A wheel cannot
# put files beside site-packages, so it installs them as data files under
# <prefix>/share/ticketexport (pyproject.toml, [tool.setuptools.data-files]).
_CHECKOUT = Path(__file__).resolve().parent.parent
_MARKER = "procrastinate_schema.sql"


def resource_root(checkout: Path = _CHECKOUT, data: Path | None = None) -> Path:
    """The folder holding sql/, templates/ and procrastinate_schema.sql."""
    if (checkout / _MARKER).is_file():
        return checkout
    installed = (data or Path(sysconfig.get_path("data"))) / "share" / "ticketexport"
    if (installed / _MARKER).is_file():
        return installed
    raise RuntimeError(
        f"ticketexport's SQL and templates are neither in {checkout} nor in {installed}; "
        "reinstall the package"
    )


ROOT = resource_root()
