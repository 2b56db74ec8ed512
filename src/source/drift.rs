//! What a comparison of the mirror with the upstream finds: a reconcile's
//! tally, and what `tributary verify` reports per resource. Shared by the
//! source kinds that can be compared.

use serde::{Deserialize, Serialize};

/// What a reconcile (or a verify) found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tally {
    /// Objects the upstream listed.
    pub checked: u64,
    /// Listed, but not in the mirror.
    pub missing: u64,
    /// In the mirror, but no longer listed.
    pub extra: u64,
    /// In both, with different contents.
    pub differed: u64,
    /// Changes recorded by the repairs.
    pub repaired: u64,
    /// Found different but changed by the events tail meanwhile: left to it.
    pub left_to_tail: u64,
    /// Upstream requests made.
    pub requests: u64,
}

impl Tally {
    pub fn drift(&self) -> u64 {
        self.missing + self.extra + self.differed
    }

    pub fn add(&mut self, other: &Tally) {
        self.checked += other.checked;
        self.missing += other.missing;
        self.extra += other.extra;
        self.differed += other.differed;
        self.repaired += other.repaired;
        self.left_to_tail += other.left_to_tail;
        self.requests += other.requests;
    }
}

/// One object that differs, as `verify` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drifted {
    pub object: String,
    pub id: String,
    /// `missing`, `extra` or `differs`.
    pub how: &'static str,
    /// The top-level fields that differ.
    pub fields: Vec<String>,
}

/// What `verify` found in one resource of one scope.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceDrift {
    pub resource: String,
    pub account: Option<String>,
    pub tally: Tally,
    /// The first objects that differ (at most `--limit-ids`).
    pub sample: Vec<Drifted>,
}

/// The top-level fields in which two versions of an object differ.
pub fn differing_fields(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    crate::store::previous_attributes(old, new).and_then(|p| p.as_object().map(|o| o.keys().cloned().collect())).unwrap_or_default()
}
