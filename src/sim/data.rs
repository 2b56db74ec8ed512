//! Deterministic Stripe-shaped objects. Every object is generated from the
//! simulator's seeded RNG, so `--seed 7 --scale 2000` always yields the same data.

use rand::{Rng, rngs::StdRng};
use serde_json::{Value, json};

pub use crate::stripe_api::{NESTED, NESTED_INLINE, RESOURCES, object_for_resource};

/// Base of seeded `created` timestamps (2023-11-14).
const EPOCH: i64 = 1_700_000_000;

const FIRST: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Ken", "Margaret", "Linus", "Radia"];
const LAST: &[&str] = &["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Thompson", "Hamilton", "Torvalds", "Perlman"];
const CITIES: &[(&str, &str, &str)] =
    &[("Berlin", "DE", "BE"), ("Lisbon", "PT", "11"), ("Austin", "US", "TX"), ("Toronto", "CA", "ON"), ("Osaka", "JP", "27")];
const CURRENCIES: &[&str] = &["usd", "eur", "gbp"];

pub fn id_prefix(object: &str) -> &'static str {
    match object {
        "customer" => "cus",
        "product" => "prod",
        "price" => "price",
        "subscription" => "sub",
        "subscription_item" => "si",
        "invoice" => "in",
        "line_item" => "il",
        "charge" => "ch",
        "payment_intent" => "pi",
        "event" => "evt",
        "account" => "acct",
        _ => "obj",
    }
}

pub fn random_id(rng: &mut StdRng, object: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let suffix: String = (0..14).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("{}_{}", id_prefix(object), suffix)
}

/// A Stripe-style list wrapper around items, as embedded in a parent.
pub fn nested_list(url: String, data: Vec<Value>) -> Value {
    json!({"object": "list", "data": data, "has_more": false, "url": url})
}

/// Seeded or live creation context: ids, timestamps and references to
/// objects already in the same account.
pub struct Gen<'a> {
    pub rng: &'a mut StdRng,
    pub created: i64,
}

impl Gen<'_> {
    fn pick<'b>(&mut self, items: &[&'b str]) -> &'b str {
        items[self.rng.gen_range(0..items.len())]
    }

    fn id(&mut self, object: &str) -> String {
        random_id(self.rng, object)
    }

    pub fn customer(&mut self) -> Value {
        let id = self.id("customer");
        let (first, last) = (self.pick(FIRST), self.pick(LAST));
        let (city, country, state) = CITIES[self.rng.gen_range(0..CITIES.len())];
        let n: u32 = self.rng.gen_range(1..999);
        json!({
            "id": id, "object": "customer",
            "address": {"city": city, "country": country, "line1": format!("{n} Main Street"), "line2": null,
                         "postal_code": format!("{:05}", self.rng.gen_range(10000..99999)), "state": state},
            "balance": 0, "created": self.created, "currency": self.pick(CURRENCIES),
            "default_source": null, "delinquent": false,
            "description": format!("{first} {last}, customer since {}", self.created),
            "discount": null, "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), n),
            "invoice_prefix": format!("{:08X}", self.rng.r#gen::<u32>()),
            "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
            "livemode": false, "metadata": {}, "name": format!("{first} {last}"),
            "next_invoice_sequence": 1, "phone": format!("+1555{:07}", self.rng.gen_range(0..9_999_999)),
            "preferred_locales": ["en"], "shipping": null, "tax_exempt": "none", "test_clock": null
        })
    }

    pub fn product(&mut self) -> Value {
        let id = self.id("product");
        let tier = self.pick(&["Starter", "Team", "Business", "Enterprise", "Add-on"]);
        json!({
            "id": id, "object": "product", "active": true, "attributes": [], "created": self.created,
            "default_price": null, "description": format!("The {tier} plan with everything a growing team needs"),
            "features": [{"name": "Unlimited projects"}, {"name": "Priority support"}],
            "images": [], "livemode": false, "metadata": {}, "name": format!("{tier} plan"),
            "package_dimensions": null, "shippable": null, "statement_descriptor": null,
            "tax_code": null, "type": "service", "unit_label": "seat", "updated": self.created, "url": null
        })
    }

    pub fn price(&mut self, product: &str) -> Value {
        let id = self.id("price");
        let monthly = self.rng.gen_bool(0.7);
        json!({
            "id": id, "object": "price", "active": true, "billing_scheme": "per_unit", "created": self.created,
            "currency": self.pick(CURRENCIES), "custom_unit_amount": null, "livemode": false,
            "lookup_key": null, "metadata": {}, "nickname": if monthly { "Monthly" } else { "Yearly" },
            "product": product,
            "recurring": {"aggregate_usage": null, "interval": if monthly { "month" } else { "year" },
                           "interval_count": 1, "trial_period_days": null, "usage_type": "licensed"},
            "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null,
            "type": "recurring", "unit_amount": self.rng.gen_range(5..500) * 100, "unit_amount_decimal": null
        })
    }

    pub fn subscription(&mut self, customer: &str, prices: &[&str]) -> Value {
        let id = self.id("subscription");
        let count = self.rng.gen_range(1..=3);
        let items: Vec<Value> = (0..count)
            .map(|_| {
                let price = prices[self.rng.gen_range(0..prices.len())];
                let item_id = self.id("subscription_item");
                json!({"id": item_id, "object": "subscription_item", "created": self.created, "metadata": {},
                       "price": price, "quantity": self.rng.gen_range(1..20), "subscription": id, "tax_rates": []})
            })
            .collect();
        let period_end = self.created + 30 * 86_400;
        json!({
            "id": id, "object": "subscription", "application": null, "billing_cycle_anchor": self.created,
            "cancel_at": null, "cancel_at_period_end": false, "canceled_at": null, "collection_method": "charge_automatically",
            "created": self.created, "currency": self.pick(CURRENCIES), "current_period_end": period_end,
            "current_period_start": self.created, "customer": customer, "days_until_due": null,
            "default_payment_method": null, "description": null, "discount": null, "ended_at": null,
            "items": nested_list(format!("/v1/subscription_items?subscription={id}"), items),
            "latest_invoice": null, "livemode": false, "metadata": {}, "pending_update": null,
            "start_date": self.created, "status": "active", "trial_end": null, "trial_start": null
        })
    }

    /// An invoice with `lines` line items (Stripe embeds at most 10 of them).
    pub fn invoice(&mut self, customer: &str, lines: usize) -> Value {
        let id = self.id("invoice");
        let currency = self.pick(CURRENCIES);
        let items: Vec<Value> = (0..lines)
            .map(|i| {
                let line_id = self.id("line_item");
                let amount = self.rng.gen_range(1..300) * 100;
                json!({"id": line_id, "object": "line_item", "amount": amount, "currency": currency,
                       "description": format!("Line {} of usage", i + 1), "invoice": id,
                       "period": {"start": self.created, "end": self.created + 30 * 86_400},
                       "quantity": 1, "type": "invoiceitem"})
            })
            .collect();
        let total: i64 = items.iter().filter_map(|l| l["amount"].as_i64()).sum();
        json!({
            "id": id, "object": "invoice", "account_country": "US", "amount_due": total, "amount_paid": 0,
            "amount_remaining": total, "attempt_count": 0, "attempted": false, "auto_advance": true,
            "billing_reason": "manual", "collection_method": "charge_automatically", "created": self.created,
            "currency": currency, "customer": customer, "description": null, "due_date": null,
            "hosted_invoice_url": null, "lines": nested_list(format!("/v1/invoices/{id}/lines"), items),
            "livemode": false, "metadata": {}, "number": format!("INV-{:06}", self.rng.gen_range(0..999_999)),
            "paid": false, "period_end": self.created, "period_start": self.created, "status": "draft",
            "subtotal": total, "tax": null, "total": total
        })
    }

    pub fn charge(&mut self, customer: &str) -> Value {
        let id = self.id("charge");
        let amount = self.rng.gen_range(1..500) * 100;
        json!({
            "id": id, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": 0,
            "balance_transaction": format!("txn_{}", &id[3..]), "billing_details": {"email": null, "name": null, "phone": null},
            "captured": true, "created": self.created, "currency": self.pick(CURRENCIES), "customer": customer,
            "description": "Subscription payment", "disputed": false, "failure_code": null, "failure_message": null,
            "livemode": false, "metadata": {}, "outcome": {"network_status": "approved_by_network", "reason": null,
            "risk_level": "normal", "seller_message": "Payment complete.", "type": "authorized"},
            "paid": true, "payment_method": format!("pm_{}", &id[3..]),
            "payment_method_details": {"card": {"brand": "visa", "country": "US", "exp_month": 12, "exp_year": 2030,
            "funding": "credit", "last4": "4242"}, "type": "card"},
            "receipt_email": null, "refunded": false, "status": "succeeded"
        })
    }

    pub fn payment_intent(&mut self, customer: &str) -> Value {
        let id = self.id("payment_intent");
        let amount = self.rng.gen_range(1..500) * 100;
        json!({
            "id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0, "amount_received": amount,
            "automatic_payment_methods": {"enabled": true}, "canceled_at": null, "cancellation_reason": null,
            "capture_method": "automatic", "client_secret": format!("{id}_secret_{}", self.rng.r#gen::<u32>()),
            "confirmation_method": "automatic", "created": self.created, "currency": self.pick(CURRENCIES),
            "customer": customer, "description": "Checkout", "last_payment_error": null, "livemode": false,
            "metadata": {}, "next_action": null, "payment_method": null, "payment_method_types": ["card"],
            "receipt_email": null, "setup_future_usage": null, "shipping": null, "status": "succeeded"
        })
    }
}

/// Created timestamp of the i-th seeded object: spread over the past year.
pub fn seeded_created(index: usize) -> i64 {
    EPOCH + index as i64 * 37
}

/// Generate a fresh object of a type for a create request or live traffic;
/// references (customer, product, prices) come from the caller.
pub fn generate(g: &mut Gen<'_>, object: &str, refs: &Refs) -> Value {
    let lines = if g.rng.gen_bool(0.1) { g.rng.gen_range(11..16) } else { g.rng.gen_range(1..4) };
    match object {
        "customer" => g.customer(),
        "product" => g.product(),
        "price" => g.price(&refs.product),
        "subscription" => {
            let prices: Vec<&str> = refs.prices.iter().map(String::as_str).collect();
            g.subscription(&refs.customer, &prices)
        }
        "invoice" => g.invoice(&refs.customer, lines),
        "charge" => g.charge(&refs.customer),
        _ => g.payment_intent(&refs.customer),
    }
}

/// Ids an object may point at; placeholders when the account has none yet.
pub struct Refs {
    pub customer: String,
    pub product: String,
    pub prices: Vec<String>,
}

/// Fields that live traffic changes on an update, per type.
pub fn mutate(rng: &mut StdRng, object: &Value) -> Vec<(&'static str, Value)> {
    let kind = object["object"].as_str().unwrap_or_default();
    let n: u32 = rng.gen_range(0..10_000);
    match kind {
        "customer" => vec![("description", json!(format!("Updated profile #{n}"))), ("balance", json!(rng.gen_range(-5000..5000)))],
        "product" => vec![("description", json!(format!("Revised plan copy #{n}"))), ("active", json!(rng.gen_bool(0.8)))],
        "price" => vec![("nickname", json!(format!("Plan v{n}")))],
        "subscription" => vec![("cancel_at_period_end", json!(rng.gen_bool(0.3))), ("description", json!(format!("Seats review #{n}")))],
        "invoice" => {
            let status = ["draft", "open", "paid", "uncollectible"][rng.gen_range(0..4)];
            vec![("status", json!(status)), ("paid", json!(status == "paid"))]
        }
        "charge" => vec![("description", json!(format!("Payment #{n}"))), ("receipt_email", json!(format!("r{n}@example.com")))],
        _ => vec![("description", json!(format!("Checkout #{n}")))],
    }
}
