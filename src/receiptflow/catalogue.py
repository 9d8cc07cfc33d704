"""Product catalogue shipped with the package (``receiptflow/data/catalogue.csv``).

EAN-13 SKUs with product group and the per-product attributes profiles need: salt and sugar g/100 g,
energy kcal/100 g, vegetable-or-fruit flag, kg CO2e per unit and domestic origin. The simulator draws
baskets from it; the profile fold reads attributes from it. It is data, loaded once, never generated
at import.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    product_group: str
    unit: str  # pcs, kg or l
    price_cents: int
    salt_g_per_100g: float
    sugar_g_per_100g: float
    energy_kcal_per_100g: float
    vegetable_or_fruit: bool
    kg_co2e_per_unit: float
    domestic: bool


def ean13_check_digit(body12: str) -> int:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body12))
    return (10 - total % 10) % 10


def is_valid_ean13(code: str) -> bool:
    return len(code) == 13 and code.isdigit() and ean13_check_digit(code[:12]) == int(code[12])


@cache
def load_catalogue() -> tuple[Product, ...]:
    text = resources.files("receiptflow").joinpath("data/catalogue.csv").read_text(encoding="utf-8")
    products = []
    for row in csv.DictReader(io.StringIO(text)):
        products.append(
            Product(
                sku=row["sku"],
                name=row["name"],
                product_group=row["product_group"],
                unit=row["unit"],
                price_cents=int(row["price_cents"]),
                salt_g_per_100g=float(row["salt_g_per_100g"]),
                sugar_g_per_100g=float(row["sugar_g_per_100g"]),
                energy_kcal_per_100g=float(row["energy_kcal_per_100g"]),
                vegetable_or_fruit=row["vegetable_or_fruit"] == "1",
                kg_co2e_per_unit=float(row["kg_co2e_per_unit"]),
                domestic=row["domestic"] == "true",
            )
        )
    return tuple(products)


def by_sku() -> dict[str, Product]:
    return {p.sku: p for p in load_catalogue()}
