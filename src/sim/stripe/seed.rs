//! New objects from Stripe's examples: the example's fields exactly, with a
//! new id, creation time, amounts and names drawn from the simulator's
//! seeded generator (so `--seed 7` always yields the same data). References
//! to other objects are set by the world, which knows what exists.

use rand::{Rng, rngs::StdRng};
use serde_json::{Value, json};

use super::fixtures::fixtures;

const FIRST: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Ken", "Margaret", "Linus", "Radia"];
const LAST: &[&str] = &["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Thompson", "Hamilton", "Torvalds", "Perlman"];
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Seconds between two seeded objects' creation times.
pub const SPACING: i64 = 37;

/// Created timestamp of the i-th seeded object of a history that starts at
/// `base`.
pub fn seeded_created(base: i64, index: usize) -> i64 {
    base + index as i64 * SPACING
}

fn random_text(rng: &mut StdRng, len: usize, alphabet: &[u8]) -> String {
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// A new id for an object type: its prefix and 14 random characters, or,
/// for types whose ids have no prefix (coupons), as many characters as the
/// example's id.
pub fn random_id(rng: &mut StdRng, object: &str) -> String {
    match fixtures().prefix(object) {
        Some(prefix) => format!("{prefix}_{}", random_text(rng, 14, ALPHABET)),
        None => {
            let len = fixtures().template(object).and_then(|t| t["id"].as_str()).map_or(14, str::len).max(8);
            random_text(rng, len, &ALPHABET[..36])
        }
    }
}

/// Seeded or live creation context.
pub struct Gen<'a> {
    pub rng: &'a mut StdRng,
    pub created: i64,
}

impl Gen<'_> {
    pub fn id(&mut self, object: &str) -> String {
        random_id(self.rng, object)
    }

    /// A new object of a type, shaped exactly like Stripe's example of it;
    /// `None` for a type without one. Its nested lists start empty, their
    /// urls pointing at the new id.
    pub fn object(&mut self, object: &str) -> Option<Value> {
        let template = fixtures().template(object)?;
        let Value::Object(mut fields) = template.clone() else { return None };
        let old_id = fields.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let id = self.id(object);
        for (name, value) in fields.iter_mut() {
            match (name.as_str(), &*value) {
                ("id", _) => *value = json!(id),
                ("created", _) => *value = json!(self.created),
                ("livemode", _) => *value = json!(false),
                ("metadata", Value::Object(_) | Value::Null) => *value = json!({}),
                (name, Value::Number(n))
                    if (name == "amount" || name.starts_with("amount_") || name.ends_with("_amount")) && n.is_i64() =>
                {
                    *value = json!(self.rng.gen_range(1..500) * 100)
                }
                (_, Value::Object(list)) if list.get("object").and_then(Value::as_str) == Some("list") => {
                    let url = list.get("url").and_then(Value::as_str).unwrap_or_default();
                    let url = if old_id.is_empty() { url.to_string() } else { url.replace(&old_id, &id) };
                    *value = json!({"object": "list", "data": [], "has_more": false, "url": url});
                }
                _ => {}
            }
        }
        let mut value = Value::Object(fields);
        self.flavour(object, &mut value);
        Some(value)
    }

    /// Names and states a reader recognises, where the example has the field.
    fn flavour(&mut self, object: &str, value: &mut Value) {
        let (first, last) = (FIRST[self.rng.gen_range(0..FIRST.len())], LAST[self.rng.gen_range(0..LAST.len())]);
        let n: u32 = self.rng.gen_range(1..999);
        let mut set = |field: &str, new: Value| {
            if value.get(field).is_some() {
                value[field] = new;
            }
        };
        match object {
            "customer" => {
                set("name", json!(format!("{first} {last}")));
                set("email", json!(format!("{}.{}{n}@example.com", first.to_lowercase(), last.to_lowercase())));
                set("description", json!(format!("{first} {last}, customer since {}", self.created)));
            }
            "product" => {
                let tier = ["Starter", "Team", "Business", "Enterprise", "Add-on"][self.rng.gen_range(0..5)];
                set("name", json!(format!("{tier} plan")));
                set("active", json!(true));
            }
            "price" => set("active", json!(true)),
            "subscription" => {
                set("status", json!("active"));
                for ended in ["cancel_at", "canceled_at", "ended_at"] {
                    set(ended, Value::Null);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn objects_have_exactly_the_examples_fields_with_new_values() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut g = Gen { rng: &mut rng, created: 1_800_000_000 };
        for object in ["customer", "invoice", "subscription", "coupon", "checkout.session"] {
            let example = fixtures().template(object).unwrap();
            let made = g.object(object).unwrap();
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&made), keys(example), "{object}");
            assert_ne!(made["id"], example["id"]);
            assert_eq!(made["created"], 1_800_000_000);
        }
        let invoice = g.object("invoice").unwrap();
        assert!(invoice["id"].as_str().unwrap().starts_with("in_"));
        assert_eq!(invoice["lines"]["url"], format!("/v1/invoices/{}/lines", invoice["id"].as_str().unwrap()));
        let coupon = g.object("coupon").unwrap();
        assert_eq!(coupon["id"].as_str().unwrap().len(), 8, "coupon ids have no prefix");
    }
}
