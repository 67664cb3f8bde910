from inventory.skus import invalid_skus, normalize_sku


def test_normalize_sku(scanned_codes):
    assert normalize_sku("  mug-0042 ") == "MUG-0042"
    # Normalising twice changes nothing.
    assert all(normalize_sku(normalize_sku(code)) == normalize_sku(code) for code in scanned_codes)


def test_invalid_skus(scanned_codes):
    assert invalid_skus(scanned_codes) == ["MUG-00042", "TEA 0100", "CUP-03O0"]
