"""Realistic, deterministic Cinegraph import data for the demo and the tests.

Jobs look like the ones Cinegraph's importers enqueue for `TMDbDetailsWorker`: canonical lists
(1001 Movies You Must See Before You Die), Oscar ceremonies and festival line-ups by IMDb id, and
plain TMDb ids. `create_legacy_sample` writes Cinegraph's two legacy import tables with sample
rows, to try the migration on a scratch database.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import psycopg

__all__ = ["FILMS", "create_legacy_sample", "import_args"]

#: (imdb_id, title, year, tmdb_id) of films that appear in Cinegraph's canonical lists.
FILMS: tuple[tuple[str, str, int, int], ...] = (
    ("tt0111161", "The Shawshank Redemption", 1994, 278),
    ("tt0068646", "The Godfather", 1972, 238),
    ("tt0033467", "Citizen Kane", 1941, 15),
    ("tt0052357", "Vertigo", 1958, 426),
    ("tt0047478", "Seven Samurai", 1954, 346),
    ("tt0053125", "North by Northwest", 1959, 213),
    ("tt0046912", "Dial M for Murder", 1954, 521),
    ("tt0045152", "Singin' in the Rain", 1952, 872),
    ("tt0034583", "Casablanca", 1942, 289),
    ("tt0050083", "12 Angry Men", 1957, 389),
    ("tt0062622", "2001: A Space Odyssey", 1968, 62),
    ("tt0071562", "The Godfather Part II", 1974, 240),
    ("tt0081505", "The Shining", 1980, 694),
    ("tt0082971", "Raiders of the Lost Ark", 1981, 85),
    ("tt0095016", "Die Hard", 1988, 562),
    ("tt0110912", "Pulp Fiction", 1994, 680),
    ("tt0114369", "Se7en", 1995, 807),
    ("tt0118799", "Life Is Beautiful", 1997, 637),
    ("tt0120737", "The Lord of the Rings: The Fellowship of the Ring", 2001, 120),
    ("tt0245429", "Spirited Away", 2001, 129),
    ("tt0253474", "The Pianist", 2002, 423),
    ("tt0317248", "City of God", 2002, 598),
    ("tt0338013", "Eternal Sunshine of the Spotless Mind", 2004, 38),
    ("tt0405094", "The Lives of Others", 2006, 582),
    ("tt0482571", "The Prestige", 2006, 1124),
    ("tt1255953", "Incendies", 2010, 46738),
    ("tt5311514", "Your Name.", 2016, 372058),
    ("tt6751668", "Parasite", 2019, 496243),
    ("tt0087843", "Once Upon a Time in America", 1984, 311),
    ("tt0056172", "Lawrence of Arabia", 1962, 947),
    ("tt0015864", "The Gold Rush", 1925, 962),
    ("tt0042876", "Rashomon", 1950, 548),
    ("tt0057012", "Dr. Strangelove", 1964, 935),
    ("tt0091251", "Come and See", 1985, 25237),
    ("tt0211915", "Amélie", 2001, 194),
)

_FESTIVALS = ("cannes", "venice", "berlinale", "sundance")
_OSCAR_CATEGORIES = ("best_picture", "best_director", "best_international_feature")


def import_args(count: int, seed: int = 1001) -> Iterator[dict[str, Any]]:
    """`count` job args as Cinegraph's importers write them, in a stable pseudo-random mix."""
    rng = random.Random(seed)
    for n in range(count):
        imdb_id, title, year, tmdb_id = FILMS[n % len(FILMS)]
        if n >= len(FILMS):
            # Beyond the known films, plausible made-up ids keep the args distinct.
            imdb_id = f"tt{rng.randrange(1_000_000, 9_999_999):07d}"
            tmdb_id = rng.randrange(10_000, 900_000)
            year = rng.randrange(1920, 2025)
        kind = rng.random()
        if kind < 0.45:
            yield {
                "imdb_id": imdb_id,
                "source": "canonical_import",
                "source_key": "1001_movies",
                "title": title,
                "year": year,
                "metadata": {"scraped_title": title, "scraped_year": year, "list_position": n + 1},
            }
        elif kind < 0.65:
            ceremony = rng.randrange(1929, 2025)
            yield {
                "imdb_id": imdb_id,
                "source": "oscar_import",
                "source_key": "oscar",
                "title": title,
                "year": year,
                "metadata": {
                    "film_title": title,
                    "ceremony_year": ceremony,
                    "category": rng.choice(_OSCAR_CATEGORIES),
                    "winner": rng.random() < 0.2,
                },
            }
        elif kind < 0.8:
            festival = rng.choice(_FESTIVALS)
            yield {
                "imdb_id": imdb_id,
                "source": "festival_import",
                "source_key": festival,
                "title": title,
                "year": year,
                "metadata": {"festival": festival, "edition": year, "section": "competition"},
            }
        else:
            yield {"tmdb_id": tmdb_id}


def create_legacy_sample(conn: psycopg.Connection[Any], schema: str, rows: int) -> None:
    """Create `schema` if needed, both legacy tables in it as the Ecto migrations made them with
    `rows` sample rows each (legacy/sample_rows.sql.j2), and Ecto's `schema_migrations` if it is
    not there, all in one transaction: a failure leaves none of it behind. `schema` must be a name
    `check_identifier` accepts; the tables must not exist yet (see `legacy.legacy_kinds`)."""
    from cinegraph_oban.migration.legacy import create_legacy_tables
    from cinegraph_oban.sql import builder

    with conn.transaction():
        conn.execute(builder.sql("legacy/create_schema", schema=schema), {})
        create_legacy_tables(conn, schema)
        for statement in builder.statements("legacy/sample_rows", schema=schema):
            conn.execute(statement.encode(), {"rows": rows})
        conn.execute(builder.sql("legacy/create_schema_migrations", schema=schema), {})
