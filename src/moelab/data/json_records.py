"""Generated structured JSON records ("json" domain): inventory, user and order objects, one per line."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from moelab.data.document import Document

SEED = 20240918
RECORDS_PER_DOC = 20

FIRST = ["ana", "ben", "chen", "dara", "emil", "fatima", "gus", "hana", "ivan", "jules", "kofi", "lea", "mateo",
         "nina", "omar", "priya", "quinn", "rosa", "sven", "tariq", "uma", "vera", "wei", "yusuf", "zoe"]
LAST = ["smith", "garcia", "muller", "rossi", "kowalski", "nguyen", "okafor", "tanaka", "silva", "larsen",
        "haddad", "novak", "ibrahim", "dubois", "kim", "fischer", "moreau", "costa", "ahmed", "jansen"]
CITIES = [("Lyon", "FR"), ("Porto", "PT"), ("Leipzig", "DE"), ("Bologna", "IT"), ("Osaka", "JP"), ("Austin", "US"),
          ("Lagos", "NG"), ("Pune", "IN"), ("Quebec", "CA"), ("Krakow", "PL"), ("Aarhus", "DK"), ("Cusco", "PE")]
STREETS = ["Main St", "Oak Ave", "Harbour Rd", "Mill Lane", "Station Sq", "River Walk", "Hill Crescent"]
PRODUCTS = {
    "hardware": ["steel bolt", "hex nut", "wood screw", "hinge", "drill bit", "wall anchor", "spring washer"],
    "electronics": ["usb cable", "resistor pack", "led strip", "power supply", "relay module", "heat sink"],
    "kitchen": ["chef knife", "cast iron pan", "whisk", "cutting board", "tea kettle", "measuring cup"],
    "office": ["stapler", "notebook", "gel pen", "desk lamp", "paper tray", "label maker"],
}
TAGS = ["sale", "new", "bulk", "fragile", "eco", "imported", "bestseller", "clearance", "limited"]
ROLES = ["viewer", "editor", "admin", "billing", "support", "developer"]
STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"]
SHIPPING = ["standard", "express", "pickup", "freight"]


def _date(rng: random.Random) -> str:
    return f"{rng.randint(2015, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _address(rng: random.Random) -> dict:
    city, country = rng.choice(CITIES)
    return {"street": f"{rng.randint(1, 250)} {rng.choice(STREETS)}", "city": city, "country": country,
            "zip": f"{rng.randint(1000, 99999):05d}"}


def _inventory(rng: random.Random) -> dict:
    category = rng.choice(sorted(PRODUCTS))
    return {"type": "inventory", "sku": f"SKU-{rng.randint(10000, 99999)}", "name": rng.choice(PRODUCTS[category]),
            "category": category, "price": rng.randint(50, 50000) / 100, "quantity": rng.randint(0, 5000),
            "warehouse": {"id": f"WH-{rng.randint(1, 9)}", "city": rng.choice(CITIES)[0],
                          "shelf": f"{rng.choice('ABCDEFG')}{rng.randint(1, 40)}"},
            "dimensions_cm": [rng.randint(1, 120) for _ in range(3)], "weight_kg": rng.randint(1, 50000) / 1000,
            "tags": rng.sample(TAGS, rng.randint(0, 3)), "discontinued": rng.random() < 0.1}


def _user(rng: random.Random) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {"type": "user", "id": rng.randint(1, 999999), "username": f"{first}_{last[:3]}{rng.randint(1, 99)}",
            "name": {"first": first.title(), "last": last.title()}, "email": f"{first}.{last}@example.com",
            "age": rng.randint(18, 90), "address": _address(rng), "roles": rng.sample(ROLES, rng.randint(1, 3)),
            "active": rng.random() < 0.85, "signup": _date(rng),
            "preferences": {"newsletter": rng.random() < 0.5, "language": rng.choice(["en", "fr", "de", "ja", "pt"])}}


def _order(rng: random.Random) -> dict:
    items = [{"sku": f"SKU-{rng.randint(10000, 99999)}", "qty": rng.randint(1, 12),
              "unit_cents": rng.randint(50, 50000)} for _ in range(rng.randint(1, 5))]
    total_cents = sum(item["qty"] * item["unit_cents"] for item in items)
    return {"type": "order", "order_id": f"ORD-{rng.randint(100000, 999999)}", "customer_id": rng.randint(1, 999999),
            "items": items, "total_cents": total_cents, "currency": rng.choice(["EUR", "USD", "JPY", "GBP"]),
            "status": rng.choice(STATUSES),
            "created": f"{_date(rng)}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}Z",
            "shipping": {"method": rng.choice(SHIPPING), "address": _address(rng)},
            "notes": None if rng.random() < 0.7 else rng.choice(["gift wrap", "leave at door", "call first"])}


def json_documents(seed: int = SEED, per_doc: int = RECORDS_PER_DOC) -> Iterator[Document]:
    """Endless "json" documents of `per_doc` records each, one json.dumps object per line, from `seed`."""
    rng = random.Random(seed)
    kinds = (_inventory, _user, _order)
    index = 0
    while True:
        lines = [json.dumps(rng.choice(kinds)(rng)) for _ in range(per_doc)]
        yield Document("json", f"json-{index:05d}", "\n".join(lines) + "\n")
        index += 1
