//! Stripe's own example objects (`fixtures3.json`, from github.com/stripe/openapi,
//! MIT licensed), which every simulated object is shaped by: the same fields,
//! at the API version the simulator renders.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

use crate::stripe_api::{Resource, catalogue};

static FIXTURES: &str = include_str!("fixtures3.json");

pub struct Fixtures {
    /// Example object per `object` type (the fixture named after it).
    templates: HashMap<String, Value>,
    /// The id prefix of each type's ids (`cus`), without the underscore.
    prefixes: HashMap<String, String>,
    /// The types whose ids carry a prefix.
    by_prefix: HashMap<String, Vec<String>>,
}

/// Id prefixes of types whose example has no usable id (`obj_123`).
const PREFIXES: &[(&str, &str)] = &[
    ("billing.alert", "alrt"),
    ("billing.credit_balance_transaction", "credbtxn"),
    ("billing.credit_grant", "credgr"),
    ("invoice_payment", "inpay"),
    ("invoice_rendering_template", "inrtem"),
    ("payment_attempt_record", "par"),
    ("payment_record", "pr"),
    ("product_feature", "prodft"),
    ("payment_intent_amount_details_line_item", "uli"),
    ("event", "evt"),
];

static LOADED: LazyLock<Fixtures> = LazyLock::new(|| {
    let all: Value = serde_json::from_str(FIXTURES).unwrap_or_default();
    let mut templates = HashMap::new();
    let mut prefixes: HashMap<String, String> = PREFIXES.iter().map(|(o, p)| (o.to_string(), p.to_string())).collect();
    for (name, example) in all["resources"].as_object().into_iter().flatten() {
        // `deleted_*` are tombstones, and a few examples are named apart
        // from their type (`external_account` is a bank account)
        if example["object"] != name.as_str() {
            continue;
        }
        if let Some((prefix, _)) = example["id"].as_str().and_then(|id| id.rsplit_once('_'))
            && prefix != "obj"
        {
            prefixes.entry(name.clone()).or_insert_with(|| prefix.to_string());
        }
        templates.insert(name.clone(), example.clone());
    }
    let mut by_prefix: HashMap<String, Vec<String>> = HashMap::new();
    for (object, prefix) in &prefixes {
        by_prefix.entry(prefix.clone()).or_default().push(object.clone());
    }
    Fixtures { templates, prefixes, by_prefix }
});

pub fn fixtures() -> &'static Fixtures {
    &LOADED
}

impl Fixtures {
    /// The example object of a type.
    pub fn template(&self, object: &str) -> Option<&Value> {
        self.templates.get(object)
    }

    /// The prefix of a type's ids (`cus`); `None` for ids without one
    /// (coupons, country specs).
    pub fn prefix(&self, object: &str) -> Option<&str> {
        self.prefixes.get(object).map(String::as_str)
    }

    /// The types an id may belong to, by its prefix (`price_…`: price or plan).
    pub fn types_of(&self, id: &str) -> &[String] {
        let prefix = id.rsplit_once('_').map_or("", |(p, _)| p);
        self.by_prefix.get(prefix).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Every resource the simulator serves: each mirrored list of the catalogue
/// whose objects have an example and whose parent is served (the events
/// list is served apart).
pub fn served() -> &'static [&'static Resource] {
    static SERVED: LazyLock<Vec<&'static Resource>> = LazyLock::new(|| {
        let mut served: Vec<&'static Resource> = Vec::new();
        // parents come first in the catalogue or not: iterate to a fixpoint
        loop {
            let before = served.len();
            for resource in catalogue() {
                let parent_ok = resource.scope.parent.is_none_or(|p| served.iter().any(|s| s.holds(p)));
                if resource.mirrored() && !served.contains(&resource) && parent_ok && fixtures().template(resource.object).is_some() {
                    served.push(resource);
                }
            }
            if served.len() == before {
                return served;
            }
        }
    });
    &SERVED
}
