//! The surface of Stripe's API that both sides agree on: the simulator serves
//! it, the `stripe` source reads it.

/// Each list resource: URL segment under `/v1` and the `object` value of its items.
pub const RESOURCES: &[(&str, &str)] = &[
    ("customers", "customer"),
    ("products", "product"),
    ("prices", "price"),
    ("subscriptions", "subscription"),
    ("invoices", "invoice"),
    ("charges", "charge"),
    ("payment_intents", "payment_intent"),
];

/// Nested lists Stripe embeds in a parent object: (parent object, field).
pub const NESTED: &[(&str, &str)] = &[("invoice", "lines"), ("subscription", "items")];

/// Items a nested list shows inline before it says `has_more`.
pub const NESTED_INLINE: usize = 10;

/// Largest page a list endpoint serves.
pub const MAX_PAGE: usize = 100;

pub fn object_for_resource(resource: &str) -> Option<&'static str> {
    RESOURCES.iter().find(|(r, _)| *r == resource).map(|(_, o)| *o)
}
