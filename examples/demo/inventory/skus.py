"""Stock-keeping units: the product codes on the shelves, like "MUG-0042"."""

from __future__ import annotations

import re

_SKU = re.compile(r"[A-Z]{3}-\d{4}")


def normalize_sku(raw: str) -> str:
    """The canonical form of a code as typed or scanned: ' mug-0042 ' -> 'MUG-0042'."""
    return raw.strip().upper()


def invalid_skus(raw_codes: list[str]) -> list[str]:
    """The codes that are not a valid SKU once normalised, in their original spelling."""
    return [raw for raw in raw_codes if not _SKU.fullmatch(normalize_sku(raw))]
