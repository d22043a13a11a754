"""A deterministic synthetic e-commerce data set, with optional injected faults.

Tables (Parquet, timestamps are ``Datetime('us', 'UTC')``):

- ``users``: user_id, signup_ts, age, country, email, plan
- ``orders``: order_id, user_id, order_ts, revenue, product_id, channel
- ``products``: product_id, category, price
- ``product_embeddings``: product_id, embedding (16 x float32)
- ``labels``: user_id, label_ts, churned — churned means no order in the 30 days after label_ts

The same seed and row count give byte-identical files: every random draw comes from one
seeded numpy Generator in a fixed order and the time range is fixed, never "now".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mlpipe_cli.argnames import arg_name
from mlpipe_cli.errors import UsageError

FAULTS = ("renamed-column", "out-of-range", "drift", "bad-dtype")
TABLES = ("users", "orders", "products", "product_embeddings", "labels")
EMBEDDING_DIM = 16

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
DRIFT_DAYS = 21
CHURN_HORIZON_DAYS = 30

_US_PER_DAY = 86_400_000_000
_COUNTRIES = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA"]
_COUNTRY_P = [0.34, 0.14, 0.12, 0.10, 0.12, 0.08, 0.06, 0.04]
_PLANS = ["free", "pro", "enterprise"]
_PLAN_P = [0.70, 0.25, 0.05]
_CHANNELS = ["web", "app", "store"]
_CHANNEL_P = [0.5, 0.4, 0.1]
_CATEGORIES = [
    "books", "electronics", "garden", "grocery", "home",
    "music", "sports", "tools", "toys", "fashion",
]  # fmt: skip


@dataclass(frozen=True)
class SampleDataResult:
    out_dir: Path
    files: dict[str, Path]
    rows: dict[str, int]
    faults: tuple[str, ...]


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000


def generate(
    out_dir: Path | str, *, rows: int = 100_000, seed: int = 42, faults: tuple[str, ...] = ()
) -> SampleDataResult:
    """Write the sample tables to ``out_dir`` (atomically: all tables or none)."""
    import polars as pl

    from mlpipe_cli.io import atomic_outputs, write_parquet_atomic

    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise UsageError(f"unknown fault {unknown[0]!r} (choose from {', '.join(FAULTS)})")
    if rows < 100:
        raise UsageError(f"{arg_name('rows')} must be at least 100, got {rows}")
    out_dir = Path(out_dir)
    rng = np.random.Generator(np.random.PCG64(seed))
    start_us, end_us = _us(START), _us(END)

    n_users = max(50, rows // 20)
    n_products = max(20, min(5000, rows // 100))

    # users
    user_id = np.arange(1, n_users + 1, dtype=np.int64)
    signup_us = rng.integers(start_us - 365 * _US_PER_DAY, start_us + 120 * _US_PER_DAY, n_users)
    age = rng.integers(18, 81, n_users).astype(np.int64)
    age_null = rng.random(n_users) < 0.03
    country = rng.choice(len(_COUNTRIES), n_users, p=_COUNTRY_P)
    plan = rng.choice(len(_PLANS), n_users, p=_PLAN_P)
    email_null = rng.random(n_users) < 0.01
    users = pl.DataFrame(
        {
            "user_id": user_id,
            "signup_ts": signup_us,
            "age": pl.Series(age).set(pl.Series(age_null), None)
            if age_null.any()
            else pl.Series(age),
            "country": np.array(_COUNTRIES)[country],
            "email": [
                None if n else f"user{i}@example.com"
                for i, n in zip(user_id, email_null, strict=True)
            ],
            "plan": np.array(_PLANS)[plan],
        }
    ).with_columns(pl.col("signup_ts").cast(pl.Datetime("us", "UTC")))

    # orders: heavy-tailed activity per user, timestamps after signup
    activity = rng.lognormal(0.0, 1.0, n_users)
    buyer_idx = rng.choice(n_users, rows, p=activity / activity.sum())
    lower = np.maximum(signup_us[buyer_idx], start_us)
    order_us = lower + (rng.random(rows) * (end_us - lower)).astype(np.int64)
    revenue = np.round(rng.lognormal(3.5, 1.0, rows), 2)
    revenue_null = rng.random(rows) < 0.02
    product_weights = 1.0 / np.arange(1, n_products + 1) ** 1.1
    product_id = rng.choice(n_products, rows, p=product_weights / product_weights.sum()) + 1
    channel = rng.choice(len(_CHANNELS), rows, p=_CHANNEL_P)
    order = np.argsort(order_us, kind="stable")
    orders = pl.DataFrame(
        {
            "order_id": np.arange(1, rows + 1, dtype=np.int64),
            "user_id": user_id[buyer_idx][order],
            "order_ts": order_us[order],
            "revenue": np.where(revenue_null, np.nan, revenue)[order],
            "product_id": product_id[order].astype(np.int64),
            "channel": np.array(_CHANNELS)[channel][order],
        }
    ).with_columns(
        pl.col("order_ts").cast(pl.Datetime("us", "UTC")),
        pl.col("revenue").fill_nan(None),
    )

    # products and their embeddings
    products = pl.DataFrame(
        {
            "product_id": np.arange(1, n_products + 1, dtype=np.int64),
            "category": np.array(_CATEGORIES)[rng.integers(0, len(_CATEGORIES), n_products)],
            "price": np.round(rng.lognormal(3.0, 0.8, n_products), 2),
        }
    )
    vectors = rng.normal(0.0, 1.0, (n_products, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    embeddings = pl.DataFrame(
        {
            "product_id": products["product_id"],
            "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, EMBEDDING_DIM)),
        }
    )

    # labels: 1-3 observation times per user; churned = no order in the next 30 days
    per_user = rng.integers(1, 4, n_users)
    label_user = np.repeat(user_id, per_user)
    label_lo = start_us + 30 * _US_PER_DAY
    label_hi = end_us - CHURN_HORIZON_DAYS * _US_PER_DAY
    label_us = rng.integers(label_lo, label_hi, len(label_user))
    labels = _churn_labels(pl, orders, label_user, label_us)

    orders, users = _inject_faults(pl, rng, faults, orders, users, end_us)

    frames = {
        "users": users,
        "orders": orders,
        "products": products,
        "product_embeddings": embeddings,
        "labels": labels,
    }
    files = {}
    with atomic_outputs():  # every table or none (a full disk must not leave half a data set)
        for name, frame in frames.items():
            files[name] = write_parquet_atomic(frame, out_dir / f"{name}.parquet")
    return SampleDataResult(
        out_dir=out_dir,
        files=files,
        rows={name: frame.height for name, frame in frames.items()},
        faults=tuple(faults),
    )


def _churn_labels(pl, orders, label_user: np.ndarray, label_us: np.ndarray):
    spine = pl.DataFrame(
        {"user_id": label_user, "label_ts": label_us, "_row": np.arange(len(label_user))}
    ).with_columns(pl.col("label_ts").cast(pl.Datetime("us", "UTC")))
    nxt = orders.select("user_id", pl.col("order_ts").alias("next_order_ts")).sort("next_order_ts")
    joined = (
        spine.sort("label_ts")
        .join_asof(
            nxt,
            left_on="label_ts",
            right_on="next_order_ts",
            by="user_id",
            strategy="forward",
            allow_exact_matches=False,
            check_sortedness=False,  # sorted by label_ts globally, so within each user too
        )
        .sort("_row")
    )
    horizon = pl.duration(days=CHURN_HORIZON_DAYS)
    return joined.select(
        "user_id",
        "label_ts",
        (
            pl.col("next_order_ts").is_null()
            | (pl.col("next_order_ts") > pl.col("label_ts") + horizon)
        ).alias("churned"),
    )


def _inject_faults(pl, rng, faults, orders, users, end_us):
    if "drift" in faults:
        cutoff = datetime.fromtimestamp((end_us - DRIFT_DAYS * _US_PER_DAY) / 1e6, tz=UTC)
        orders = orders.with_columns(
            pl.when(pl.col("order_ts") >= cutoff)
            .then(pl.col("revenue") * 10)
            .otherwise(pl.col("revenue"))
            .alias("revenue")
        )
    if "out-of-range" in faults:
        bad_rev = pl.Series(rng.random(orders.height) < 0.01)
        orders = orders.with_columns(
            pl.when(bad_rev)
            .then(-pl.col("revenue").abs() - 1)
            .otherwise(pl.col("revenue"))
            .alias("revenue")
        )
        bad_age = pl.Series(rng.random(users.height) < 0.01)
        users = users.with_columns(
            pl.when(bad_age).then(pl.lit(200, pl.Int64)).otherwise(pl.col("age")).alias("age")
        )
    if "bad-dtype" in faults:
        orders = orders.with_columns(pl.col("revenue").cast(pl.String))
        users = users.with_columns(pl.col("age").cast(pl.String))
    if "renamed-column" in faults:
        orders = orders.rename({"user_id": "userId"})
        users = users.rename({"user_id": "userId"})
    return orders, users


# -- rides: a multi-entity data set (riders, drivers, zones) ------------------------------

RIDES_TABLES = ("rides", "drivers", "zone_weather", "labels")
# zone names of very different lengths, some non-ASCII: string keys as real data has them
_ZONES = [
    "JFK", "LGA", "SoHo", "Harlem", "Astoria", "Bushwick", "Q", "Zürich-Nord", "Ōsaka-Namba",
    "São Paulo Centro", "Kreuzberg", "Södermalm", "Le Marais", "Shibuya", "Camden", "Gràcia",
    "Ostkreuz", "Ealing Broadway", "Tribeca", "Køge",
]  # fmt: skip
_RIDER_PREFIXES = ["r", "rider-", "ŕ_", "R"]
_VEHICLES = ["sedan", "suv", "van", "e-bike"]
RIDES_LABELS_FROM = datetime(2026, 1, 15, tzinfo=UTC)  # two weeks of history before labels


def generate_rides(out_dir: Path | str, *, rows: int = 50_000, seed: int = 7) -> SampleDataResult:
    """Write the rides data set (configs/rides.yaml) to ``out_dir``, deterministically.

    - ``rides``: ride_id, rider_id, driver_id, pickup_zone, dropoff_zone, requested_at,
      wait_min (null: cancelled), fare, distance_km, rating (null: not rated)
    - ``drivers``: driver_id, vehicle, joined_at (one row per driver)
    - ``zone_weather``: zone, hour, rain_mm (hourly, some hours missing)
    - ``labels``: rated rides as a spine: ride_id, the four keys, requested_at, rated_low

    Keys are strings of different lengths (rider ids with several prefixes, some non-ASCII;
    zone names from 1 to 16 characters).
    """
    import polars as pl

    from mlpipe_cli.io import write_parquet_atomic

    if rows < 100:
        raise UsageError(f"{arg_name('rows')} must be at least 100, got {rows}")
    out_dir = Path(out_dir)
    rng = np.random.Generator(np.random.PCG64(seed))
    start_us, end_us = _us(START), _us(END)
    n_drivers = max(20, rows // 60)
    n_riders = max(50, rows // 10)
    n_zones = len(_ZONES)

    prefixes = rng.integers(0, len(_RIDER_PREFIXES), n_riders)
    riders = np.array([f"{_RIDER_PREFIXES[p]}{i}" for i, p in enumerate(prefixes, start=1)])
    drivers = np.array([f"drv-{i}" for i in range(1, n_drivers + 1)])
    zones = np.array(_ZONES)

    # rides: heavy-tailed activity per rider and driver, zones by popularity
    rider_w = rng.lognormal(0.0, 1.0, n_riders)
    driver_w = rng.lognormal(0.0, 0.5, n_drivers)
    zone_w = 1.0 / np.arange(1, n_zones + 1) ** 0.8
    rider = rng.choice(n_riders, rows, p=rider_w / rider_w.sum())
    driver = rng.choice(n_drivers, rows, p=driver_w / driver_w.sum())
    pickup = rng.choice(n_zones, rows, p=zone_w / zone_w.sum())
    dropoff = rng.choice(n_zones, rows, p=zone_w / zone_w.sum())
    requested = np.sort(rng.integers(start_us, end_us, rows))
    wait = rng.integers(1, 25, rows)
    cancelled = rng.random(rows) < 0.05
    distance = np.round(rng.lognormal(1.2, 0.6, rows), 2) + 0.1
    fare = np.round(2.5 + distance * rng.uniform(1.2, 2.4, rows), 2)
    rating = rng.integers(1, 6, rows)
    unrated = (rng.random(rows) < 0.3) | cancelled
    rides = pl.DataFrame(
        {
            "ride_id": np.arange(1, rows + 1, dtype=np.int64),
            "rider_id": riders[rider],
            "driver_id": drivers[driver],
            "pickup_zone": zones[pickup],
            "dropoff_zone": zones[dropoff],
            "requested_at": requested,
            "wait_min": pl.Series(wait.astype(np.int64)).set(pl.Series(cancelled), None)
            if cancelled.any()
            else pl.Series(wait.astype(np.int64)),
            "fare": fare,
            "distance_km": distance,
            "rating": pl.Series(rating.astype(np.int64)).set(pl.Series(unrated), None)
            if unrated.any()
            else pl.Series(rating.astype(np.int64)),
        }
    ).with_columns(pl.col("requested_at").cast(pl.Datetime("us", "UTC")))

    joined = start_us - rng.integers(0, 720, n_drivers) * _US_PER_DAY
    drivers_table = pl.DataFrame(
        {
            "driver_id": drivers,
            "vehicle": np.array(_VEHICLES)[rng.integers(0, len(_VEHICLES), n_drivers)],
            "joined_at": joined,
        }
    ).with_columns(pl.col("joined_at").cast(pl.Datetime("us", "UTC")))

    hours = np.arange(start_us, end_us, 3_600_000_000, dtype=np.int64)
    zone_idx = np.repeat(np.arange(n_zones), len(hours))
    hour_col = np.tile(hours, n_zones)
    present = rng.random(len(hour_col)) < 0.9  # some hours have no reading
    rain = np.round(np.maximum(0.0, rng.normal(-0.5, 1.5, len(hour_col))), 1)
    weather = pl.DataFrame(
        {"zone": zones[zone_idx][present], "hour": hour_col[present], "rain_mm": rain[present]}
    ).with_columns(pl.col("hour").cast(pl.Datetime("us", "UTC")))

    labels = (
        rides.filter(pl.col("rating").is_not_null() & (pl.col("requested_at") >= RIDES_LABELS_FROM))
        .select(
            "ride_id",
            "rider_id",
            "driver_id",
            "pickup_zone",
            "dropoff_zone",
            "requested_at",
            (pl.col("rating") <= 3).alias("rated_low"),
        )
        .gather_every(3)
    )
    frames = {"rides": rides, "drivers": drivers_table, "zone_weather": weather, "labels": labels}
    files = {}
    for name, frame in frames.items():
        files[name] = write_parquet_atomic(frame, out_dir / f"{name}.parquet")
    return SampleDataResult(
        out_dir=out_dir,
        files=files,
        rows={name: frame.height for name, frame in frames.items()},
        faults=(),
    )
