//! Holds real answers to the OpenAPI document (tests and the `testing`
//! feature only): an answer's status must be one its operation lists
//! (exactly, as a range like `4XX`, or `default`), and a JSON body must
//! validate against the schema given for it, formats included.

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;
use serde_json::{Value, json};

pub struct Conformance {
    document: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
    /// (method, template, status) of every answer checked.
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

impl Conformance {
    pub fn new(document: Value) -> Conformance {
        Conformance { document, validators: Mutex::default(), seen: Mutex::default() }
    }

    /// The document's path template that `path` (no query) matches: the
    /// one with the most literal segments, as the router picks.
    pub fn template_of(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let templates = self.document["paths"].as_object()?.keys();
        let matching = templates.filter(|template| {
            let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            parts.len() == segments.len() && parts.iter().zip(&segments).all(|(p, s)| p.starts_with('{') || p == s)
        });
        matching.max_by_key(|template| template.split('/').filter(|p| !p.starts_with('{')).count()).cloned()
    }

    /// Check one answer of `method path` against the document.
    pub fn check(&self, method: &str, path: &str, status: u16, content_type: Option<&str>, body: &[u8]) -> Result<(), String> {
        let path = path.split('?').next().unwrap_or(path);
        let template = self.template_of(path).ok_or_else(|| format!("{method} {path}: no path of the document matches"))?;
        let operation = &self.document["paths"][&template][method.to_lowercase()];
        if !operation.is_object() {
            return Err(format!("{method} {template}: not in the document"));
        }
        let responses = &operation["responses"];
        let range = format!("{}XX", status / 100);
        let key = [status.to_string(), range, "default".into()].into_iter().find(|k| responses.get(k).is_some());
        let key = key.ok_or_else(|| format!("{method} {template} answered {status}, which the document does not list"))?;
        self.seen.lock().insert((method.to_uppercase(), template.clone(), status));
        let Some(content) = responses[&key]["content"].as_object() else {
            return if body.is_empty() { Ok(()) } else { Err(format!("{method} {template} {status}: a body where none is documented")) };
        };
        let media = content_type.unwrap_or_default().split(';').next().unwrap_or_default().trim();
        let documented = content.get(media).ok_or_else(|| {
            format!("{method} {template} {status}: content type '{media}' is not one of {:?}", content.keys().collect::<Vec<_>>())
        })?;
        if media != "application/json" {
            return Ok(());
        }
        let instance: Value =
            serde_json::from_slice(body).map_err(|e| format!("{method} {template} {status}: the body is not JSON ({e})"))?;
        let validator = self.validator(&format!("{template} {method} {key}"), &documented["schema"])?;
        let errors: Vec<String> = validator.iter_errors(&instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        if errors.is_empty() {
            return Ok(());
        }
        Err(format!("{method} {template} {status}: the answer does not fit the document: {}\nanswer: {instance}", errors.join("; ")))
    }

    fn validator(&self, key: &str, schema: &Value) -> Result<std::sync::Arc<jsonschema::Validator>, String> {
        if let Some(validator) = self.validators.lock().get(key) {
            return Ok(validator.clone());
        }
        // the schema within a root that holds the components its $refs name
        let root = json!({"allOf": [schema], "components": self.document["components"]});
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("{key}: the document's schema does not compile: {e}"))?;
        let validator = std::sync::Arc::new(validator);
        self.validators.lock().insert(key.to_string(), validator.clone());
        Ok(validator)
    }

    /// Every (method, template, status) checked so far.
    pub fn seen(&self) -> BTreeSet<(String, String, u16)> {
        self.seen.lock().clone()
    }

    /// Every operation of the document as (METHOD, template).
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        let paths = self.document["paths"].as_object().into_iter().flatten();
        paths
            .flat_map(|(template, item)| {
                item.as_object().into_iter().flatten().map(move |(method, _)| (method.to_uppercase(), template.clone()))
            })
            .collect()
    }
}
