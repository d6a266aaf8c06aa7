"""Files shipped inside the package (the example configuration used by the demo).

`manifest/mailtriage.example.toml` at the repository root links here, so the admin-facing
path and the installed package share one file.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLE_CONFIG = Path(__file__).resolve().parent / "mailtriage.example.toml"
# Department templates for `mailtriage init` (descriptions and examples).
DEPARTMENTS = Path(__file__).resolve().parent / "departments.toml"
