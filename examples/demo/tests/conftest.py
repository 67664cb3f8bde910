"""A month of the shop's orders, generated the same way every run (fixed seeds)."""

from __future__ import annotations

import io
import random
import sys
from datetime import datetime, timedelta

import pytest

from inventory.orders import OrderLine
from inventory.skus import normalize_sku

ORDER_LINES = 80_000
CUSTOMERS = 600
PRODUCTS = {"MUG": "Stoneware mug", "TEA": "Loose leaf tea", "CUP": "Espresso cup", "PAN": "Cast iron pan",
            "JAR": "Glass storage jar", "LID": "Silicone lid", "BAG": "Cotton tote bag", "BOX": "Bamboo bread box"}


@pytest.fixture(scope="session")
def catalog() -> dict[str, float]:
    """120 SKUs with their unit price."""
    rng = random.Random(1)
    return {f"{product}-{number:04d}": round(rng.uniform(2, 60), 2)
            for product in PRODUCTS for number in range(100, 1600, 100)}


@pytest.fixture(scope="session")
def order_rows(catalog) -> list[tuple[str, str, str, str, str, int, float]]:
    """The export's rows: (order_id, ordered_at, customer, SKU as typed, product, quantity, unit price).

    A few SKUs sell far more than others, and SKUs come typed in various ways.
    """
    rng = random.Random(2)
    skus = list(catalog)
    popularity = [1 / rank for rank in range(1, len(skus) + 1)]
    start = datetime(2024, 3, 1, 8, 0)
    rows = []
    for i, sku in enumerate(rng.choices(skus, popularity, k=ORDER_LINES)):
        typed = rng.choice([sku, sku.lower(), f" {sku}", f"{sku.lower()} "])
        product = f"{PRODUCTS[sku[:3]]} no. {int(sku[4:])}"
        rows.append((f"SO-{100_000 + i // 3}", (start + timedelta(seconds=97 * (i // 3))).isoformat(),
                     f"C{rng.randrange(CUSTOMERS):05d}", typed, product, rng.randint(1, 5), catalog[sku]))
    return rows


@pytest.fixture(scope="session")
def orders_csv(order_rows) -> str:
    """The rows as the shop's CSV export."""
    header = "order_id,ordered_at,customer,sku,product,quantity,unit_price"
    return "\n".join([header] + [",".join(map(str, row)) for row in order_rows]) + "\n"


@pytest.fixture
def export_file(orders_csv) -> io.StringIO:
    """The export as an open file, fresh for each test."""
    return io.StringIO(orders_csv)


@pytest.fixture(scope="session")
def order_lines(order_rows) -> list[OrderLine]:
    """The rows as `parse_orders` returns them (built here, so that a bug in the parser fails one test, not all)."""
    return [OrderLine(order_id, sys.intern(customer), sys.intern(normalize_sku(sku)), quantity, price)
            for order_id, _, customer, sku, _, quantity, price in order_rows]


@pytest.fixture(scope="session")
def fortnight_lines(order_lines) -> list[OrderLine]:
    """The last two weeks of the month, which the accounts report on."""
    return order_lines[-ORDER_LINES * 14 // 30:]


@pytest.fixture(scope="session")
def scanned_codes(catalog) -> list[str]:
    """A day of codes typed in at the goods-in desk, with three typos among them."""
    rng = random.Random(3)
    codes = [rng.choice([sku, sku.lower(), f"{sku} "]) for sku in rng.choices(list(catalog), k=18_000)]
    for position, typo in ((7, "MUG-00042"), (9_000, "TEA 0100"), (17_999, "CUP-03O0")):
        codes[position] = typo
    return codes
