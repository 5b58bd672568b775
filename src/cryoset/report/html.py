"""A small, dependency-free HTML report builder.

Reports are single self-contained HTML files: images are referenced by relative path
(they sit beside the report) so the directory can be browsed or archived as is.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cryoset.io.atomic import write_text_atomic

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { border-bottom: 2px solid #345; } h2 { margin-top: 2em; color: #345; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }
th { background: #eef; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 32em; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; color: #555; max-width: 32em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.ok { color: #186a1c; } .bad { color: #a01616; }
"""


@dataclass
class Report:
    """Accumulate sections, then :meth:`write` one HTML file.

    Examples
    --------
    >>> r = Report("Demo")
    >>> r.heading("Results")
    >>> r.paragraph("All good.")
    >>> "<h2>Results</h2>" in r.to_html()
    True
    """

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, *, css_class: str | None = None) -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, frame: pd.DataFrame, *, float_format: str = "{:.4g}", index: bool = False) -> None:
        formatted = frame.copy()
        for col in formatted.columns:
            if pd.api.types.is_float_dtype(formatted[col]):
                formatted[col] = formatted[col].map(lambda v: "" if pd.isna(v) else float_format.format(v))
        self.parts.append(formatted.to_html(index=index, escape=True, border=0))

    def mapping(self, values: dict[str, Any]) -> None:
        frame = pd.DataFrame({"quantity": list(values), "value": [str(v) for v in values.values()]})
        self.table(frame)

    def figure(self, image_path: str | os.PathLike[str], caption: str, *, relative_to: Path) -> None:
        rel = os.path.relpath(Path(image_path), relative_to)
        self.parts.append(
            f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def code(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def provenance(self, record: dict[str, Any]) -> None:
        self.heading("Provenance")
        self.code(json.dumps(record, indent=2, sort_keys=True, default=str))

    def to_html(self) -> str:
        body = "\n".join(self.parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the report atomically and return its path."""
        return write_text_atomic(path, self.to_html())
