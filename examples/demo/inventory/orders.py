"""Order lines from the shop's CSV export, and what the warehouse and the accounts need from them."""

from __future__ import annotations

import csv
import heapq
import sys
from collections import defaultdict
from typing import Iterable, NamedTuple

from .skus import normalize_sku


class OrderLine(NamedTuple):
    order_id: str
    customer: str
    sku: str
    quantity: int
    unit_price: float


def parse_orders(export: Iterable[str]) -> list[OrderLine]:
    """The order lines of the shop's CSV export (an open file), whose header is
    `order_id,ordered_at,customer,sku,product,quantity,unit_price`.

    Customers and SKUs repeat on many lines, so each is interned: the lines share one string per value.
    """
    rows = csv.reader(export)
    next(rows)  # the header
    return [OrderLine(order_id, sys.intern(customer), sys.intern(normalize_sku(sku)), int(quantity), float(price))
            for order_id, _, customer, sku, _, quantity, price in rows]


def pick_list(lines: Iterable[OrderLine]) -> list[str]:
    """The SKUs to fetch from the shelves: each once, in the order they were first ordered."""
    seen: set[str] = set()
    picks = []
    for line in lines:
        if line.sku not in seen:
            seen.add(line.sku)
            picks.append(line.sku)
    return picks


def revenue_by_sku(lines: Iterable[OrderLine]) -> dict[str, float]:
    """Total sales per SKU."""
    revenue: dict[str, float] = defaultdict(float)
    for line in lines:
        revenue[line.sku] += line.quantity * line.unit_price
    return dict(revenue)


def top_customers(lines: Iterable[OrderLine], n: int = 10) -> list[tuple[str, float]]:
    """The `n` customers who spent the most, with what they spent, biggest first."""
    spent: dict[str, float] = defaultdict(float)
    for line in lines:
        spent[line.customer] += line.quantity * line.unit_price
    return heapq.nlargest(n, spent.items(), key=lambda item: item[1])
