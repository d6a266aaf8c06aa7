"""Which category a folder path or label stands for.

One mapping serves `mailtriage learn` (staff's own sorting becomes examples) and
correction tracking (a staff move of a triaged message): the mailbox's `folder_map`
first, then a default by name: the category's move_to path, its label, its display
name or its key, compared case- and accent-insensitively, on the whole path or on its
last segment ("Triage/RH" and "RH" both mean rh). Nothing is guessed beyond that, and a
name two categories claim maps to neither.
"""

from __future__ import annotations

import unicodedata

from mailtriage.core.config import Category, Settings


def normalise(name: str) -> str:
    """'/Triage/Publicité ' → 'triage/publicite': case, accents, spaces and slashes folded."""
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    parts = [" ".join(p.split()) for p in bare.casefold().strip().strip("/").split("/")]
    return "/".join(p for p in parts if p)


def _names(category: Category) -> set[str]:
    acts = category.actions
    label = acts.label if acts.label is not None else category.name
    names = {category.key, category.name, label or "", acts.move_to or ""}
    return {normalise(n) for n in names if n}


def category_of_location(settings: Settings, address: str, location: str) -> str | None:
    """The category key `location` (folder path or label name) stands for, or None."""
    loc = normalise(location)
    if not loc:
        return None
    mb = settings.mailbox(address)
    if mb is not None:
        for folder, key in mb.folder_map.items():
            if normalise(folder) == loc:
                return key
    candidates = settings.categories_for(address)
    for probe in (loc, loc.rpartition("/")[2]):
        hits = {c.key for c in candidates if probe in _names(c)}
        if len(hits) == 1:
            return hits.pop()
        if hits:
            return None  # ambiguous: claimed by several categories
    return None
