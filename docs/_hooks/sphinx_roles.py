"""MkDocs hook: show the Sphinx roles of the docstrings (:class:`~.plan.RunPlan`) as plain code.

The docstrings in ``src/`` use Sphinx cross-reference roles, which mkdocstrings renders
literally (``:class:`` before the code). This hook drops the role and, as Sphinx does for a
leading ``~``, keeps only the last part of the name; a leading ``.`` (a relative name) is dropped.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):<code>(~?)\.?([^<]*)</code>")


def _plain(match: re.Match[str]) -> str:
    short, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if short else name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Replace each rendered Sphinx role by its name in code.

    Parameters
    ----------
    html : str
        The page's HTML.
    **kwargs
        The rest of MkDocs' hook arguments (page, config, files).

    Returns
    -------
    str
        The HTML without Sphinx roles.
    """
    return _ROLE.sub(_plain, html)
