"""The model's unit parsing and defaults: the schema's duration, size and quantity forms."""

from __future__ import annotations

import pytest

from ai4ec.model.defaults import byte_size, operation_name, quantity, quantity_text, seconds


@pytest.mark.parametrize(
    ("raw", "expected"), [(600, 600), ("30s", 30), ("5m", 300), ("1h", 3600), ("1500ms", 2)]
)
def test_seconds_round_sub_second_values_up(raw: object, expected: int) -> None:
    assert seconds(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [(1048576, 1048576), ("4Mi", 4 * 2**20), ("2KB", 2000), ("7", 7)]
)
def test_byte_size_reads_decimal_and_binary_units(raw: object, expected: int) -> None:
    assert byte_size(raw) == expected


def test_quantity_and_its_text() -> None:
    assert quantity("500m") == 0.5
    assert quantity("1Gi") == 2**30
    assert quantity(2) == 2.0
    assert quantity_text(2.0) == "2"
    assert quantity_text("500m") == "500m"


def test_operation_name_is_a_slug_of_the_path() -> None:
    assert operation_name("/detect/v2") == "detect-v2"
    assert operation_name("/") == "root"
