"""Order and stock helpers for a small web shop's warehouse."""
