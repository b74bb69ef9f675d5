//! The correlated workload: columns that always agree and skewed joins, where PostgreSQL's
//! independence assumption (selectivities multiplied) and uniform-join estimates pick bad plans,
//! beside templates where the default plan is already the best. Sizes scale with `--scale`.
//!
//! * `orders`: region, country and city always agree (`g % 50`); `customer` drawn from a skewed
//!   distribution (a few customers place most orders); `item` uniform.
//! * `items`: 50 buckets, indexed by bucket (the correlated join key).
//! * `customers`: segment and tier always agree (`id % 10`).

use crate::rng::Rng;

pub struct Sizes {
    pub orders: u64,
    pub items: u64,
    pub customers: u64,
}

/// Sizes grow with the square root of `--scale` (scale 1: 200,000 orders): at TPC-H's small
/// scales the statements would otherwise cost less than `ruvector.dag_replan_min_cost` and be
/// left alone by design.
pub fn sizes(scale: f64) -> Sizes {
    let f = scale.sqrt();
    let n = |base: f64, min: u64| ((base * f) as u64).max(min);
    Sizes {
        orders: n(200_000.0, 10_000),
        items: n(40_000.0, 2_000),
        customers: n(50_000.0, 2_500),
    }
}

/// The dataset's SQL (deterministic: a fixed random seed); VACUUM ANALYZE afterwards.
pub fn dataset(scale: f64) -> String {
    let s = sizes(scale);
    format!(
        "SELECT setseed(0.42);
CREATE TABLE customers (id int PRIMARY KEY, segment int, tier int, name text);
INSERT INTO customers SELECT g, g % 10, g % 10, 'customer ' || g FROM generate_series(1, {c}) g;
CREATE TABLE orders (id int PRIMARY KEY, region int, country int, city int, item int, customer int, amount numeric);
INSERT INTO orders SELECT g, g % 50, g % 50, g % 50, g % {sku},
    1 + floor(power(random(), 4) * {c})::int, round((random() * 500)::numeric, 2)
  FROM generate_series(1, {o}) g;
CREATE INDEX ON orders (customer);
CREATE TABLE items (id int PRIMARY KEY, sku int, bucket int, price numeric);
INSERT INTO items SELECT g, g % {sku}, g % 50, g % 97 FROM generate_series(1, {i}) g;
CREATE INDEX ON items (bucket);",
        c = s.customers,
        o = s.orders,
        i = s.items,
        sku = (s.items / 2).max(1),
    )
}

pub const TABLES: [&str; 3] = ["orders", "items", "customers"];

/// The templates: (name, what it shows).
pub const TEMPLATES: [(&str, &str); 6] = [
    ("c01", "three agreeing filters, then a join on the agreeing key: 1 row expected, 2% of orders come"),
    ("c02", "two agreeing filters and a join to the customers: underestimated outer side"),
    ("c03", "agreeing customer filters joined to skewed orders: the heavy customers hide in the segment"),
    ("c04", "a primary-key range: the default plan is the best"),
    ("c05", "an aggregate over one region: the default plan is the best"),
    ("c06", "filters that never agree (0 rows come): the default plan is the best"),
];

/// Template `name` with its constants drawn by `rng`.
pub fn instance(name: &str, rng: &mut Rng, scale: f64) -> Result<String, String> {
    let s = sizes(scale);
    let r = rng.below(50);
    Ok(match name {
        "c01" => format!(
            "SELECT count(*), sum(i.price) FROM orders o JOIN items i ON i.bucket = o.region AND i.sku = o.item \
             WHERE o.region = {r} AND o.country = {r} AND o.city = {r}"
        ),
        "c02" => format!(
            "SELECT c.segment, count(*), sum(o.amount) FROM orders o JOIN items i ON i.bucket = o.region AND i.sku = o.item \
             JOIN customers c ON c.id = o.customer WHERE o.region = {r} AND o.country = {r} GROUP BY c.segment"
        ),
        "c03" => {
            let seg = rng.below(10);
            format!(
                "SELECT count(*), sum(o.amount) FROM customers c JOIN orders o ON o.customer = c.id \
                 WHERE c.segment = {seg} AND c.tier = {seg} AND c.id < {}",
                (s.customers / 20).max(20)
            )
        }
        "c04" => {
            let a = 1 + rng.below(s.orders.saturating_sub(200).max(1));
            format!("SELECT id, region, amount FROM orders WHERE id BETWEEN {a} AND {} ORDER BY id", a + 100)
        }
        "c05" => format!("SELECT city, count(*), avg(amount) FROM orders WHERE region = {r} GROUP BY city"),
        "c06" => {
            let other = (r + 1 + rng.below(49)) % 50;
            format!(
                "SELECT count(*) FROM orders o JOIN items i ON i.bucket = o.region AND i.sku = o.item \
                 WHERE o.region = {r} AND o.country = {other}"
            )
        }
        other => return Err(format!("no correlated template '{other}'")),
    })
}
