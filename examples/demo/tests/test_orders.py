import pytest

from inventory.orders import OrderLine, parse_orders, pick_list, revenue_by_sku, top_customers


def test_parse_orders(export_file, order_lines):
    parsed = parse_orders(export_file)
    assert isinstance(parsed[0], OrderLine) and parsed[0].order_id == "SO-100000"
    assert parsed == order_lines


def test_pick_list(order_lines, catalog):
    picks = pick_list(order_lines)
    assert sorted(picks) == sorted(catalog)  # every SKU once
    assert picks[0] == order_lines[0].sku  # in the order they were first ordered


def test_revenue_by_sku(fortnight_lines, catalog):
    revenue = revenue_by_sku(fortnight_lines)
    assert set(revenue) == set(catalog)
    assert all(amount >= catalog[sku] for sku, amount in revenue.items())


def test_top_customers(fortnight_lines):
    top = top_customers(fortnight_lines, n=5)
    assert len(top) == 5
    assert [spent for _, spent in top] == sorted((spent for _, spent in top), reverse=True)
    assert top[0][1] == pytest.approx(sum(line.quantity * line.unit_price
                                          for line in fortnight_lines if line.customer == top[0][0]))
