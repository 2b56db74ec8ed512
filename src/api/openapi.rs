//! The OpenAPI 3.1 document served at `/openapi.json`: every route, its
//! parameters, bodies, answers and which token it takes.

use serde_json::{Value, json};

use super::queues::{DEFAULT_PULL_LIMIT, MAX_PULL_LIMIT, MAX_PULL_WAIT_MS};
use super::{DEFAULT_WAIT_MS, MAX_WAIT_MS};
use crate::ids::MAX_TEXT;

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// One operation: `ok` is (status, description, schema of the answer);
/// `errors` are (status, when), each answered with the Error schema.
struct Op<'a> {
    summary: &'a str,
    /// `adminToken`, `appToken` or none.
    security: Option<&'a str>,
    /// Path parameter names.
    params: &'a [&'a str],
    /// Header parameters: (name, required, what it is).
    headers: &'a [(&'a str, bool, &'a str)],
    body: Option<&'a str>,
    ok: (u16, &'a str, Value),
    errors: &'a [(u16, &'a str)],
}

impl Op<'_> {
    fn build(self) -> Value {
        let mut responses = json!({self.ok.0.to_string(): {"description": self.ok.1, "content": json_content(self.ok.2)}});
        let mut errors = Vec::new();
        if !self.params.is_empty() {
            errors.push((400, "a path parameter that does not decode (not UTF-8)"));
        }
        errors.extend_from_slice(self.errors);
        if let Some(security) = self.security {
            errors.push((401, "no token, an unknown or a revoked one"));
            if security == "appToken" {
                errors.push((429, "this token's request rate is exceeded (see Retry-After)"));
            }
        }
        if self.body.is_some() {
            errors.extend([(400, "malformed JSON"), (413, "body over 1 MiB"), (422, "unknown field, wrong type or value out of range")]);
        }
        for (status, when) in errors {
            responses[status.to_string()] = json!({"description": when, "content": json_content(schema("Error"))});
        }
        let mut op = json!({"summary": self.summary, "responses": responses});
        if let Some(security) = self.security {
            op["security"] = json!([{security: []}]);
        }
        let path = self.params.iter().map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
        let headers = self.headers.iter().map(|(name, required, what)| {
            json!({"name": name, "in": "header", "required": required, "description": what, "schema": {"type": "string", "maxLength": 255}})
        });
        let parameters: Vec<Value> = path.chain(headers).collect();
        if !parameters.is_empty() {
            op["parameters"] = json!(parameters);
        }
        if let Some(body) = self.body {
            let mut content = json_content(schema(body));
            if body == "WriteParams" {
                // Stripe's own encoding is taken too
                content["application/x-www-form-urlencoded"] = json!({"schema": schema(body)});
            }
            op["requestBody"] = json!({"required": true, "content": content});
        }
        op
    }
}

/// What every write takes in headers.
const WRITE_HEADERS: &[(&str, bool, &str)] = &[
    ("Idempotency-Key", true, "1 to 255 characters; the same key and request replays the first answer"),
    ("Stripe-Account", false, "the connected account to act for (a public app must name one that granted it access)"),
];

const WRITE_ERRORS: &[(u16, &str)] = &[
    (400, "no Idempotency-Key or a malformed one, a bad object id, a public app without Stripe-Account, or a malformed body"),
    (403, "the account has not granted this app access"),
    (404, "no such source or resource"),
    (409, "a request with this Idempotency-Key is in progress"),
    (502, "the upstream gave no final answer; retry with the same Idempotency-Key"),
];

/// What the Stripe-compatible path takes in headers: Stripe's own.
const STRIPE_HEADERS: &[(&str, bool, &str)] = &[
    (
        "Idempotency-Key",
        false,
        "as with Stripe: the same key and request replays the first answer; a write without one gets a key of its own",
    ),
    ("Stripe-Account", false, "the connected account to act for (a public app must name one that granted it access)"),
];

const STRIPE_READ_ERRORS: &[(u16, &str)] = &[
    (400, "a list parameter the mirror cannot answer (a filter), or a bad limit"),
    (403, "the account has not granted this app access"),
    (404, "no such object for this account (code resource_missing), or a resource the source does not mirror"),
];

fn text() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_TEXT})
}

pub fn document() -> Value {
    let error = schema("Error");
    let unauthorized = json!({"description": "[api] read_token_env is set and neither it nor the admin token was sent",
        "content": json_content(error.clone())});
    let list = |key: &str, item: &str| json!({"type": "object", "properties": {key: {"type": "array", "items": schema(item)}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tributary", "version": env!("CARGO_PKG_VERSION"),
            "description": "Mirror status, the read-after-write barrier, and the built-in pull queues of apps. Errors are {\"error\":{\"type\",\"message\"}}."},
        "paths": {
            "/health": {"get": {"summary": "Health: 503 with the reasons while a source or sink is stuck on a store error (a full disk, a lost database)",
                "responses": {"200": {"description": "ok", "content": json_content(schema("Health"))},
                    "503": {"description": "unhealthy, with the reasons", "content": json_content(schema("Health"))}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [{"readToken": []}],
                "responses": {"200": {"description": "text exposition format"}, "401": unauthorized.clone()}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/sources": {"get": {"summary": "Every source: phase, cursor, lag, objects per type, per-account progress", "security": [{"readToken": []}],
                "responses": {"200": {"description": "sources"}, "401": unauthorized.clone()}}},
            "/v1/sinks": {"get": {"summary": "Every sink and the queue fan-out: role, cursor, delivered, lag, last error, dead letters",
                "security": [{"readToken": []}], "responses": {"200": {"description": "sinks"}, "401": unauthorized.clone()}}},
            "/v1/sources/{name}/wait": {"get": {
                "summary": "Read-after-write barrier: answers once a poll of the upstream that started after the call is applied (callers share polls)",
                "security": [{"readToken": []}],
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "timeout_ms", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "default": DEFAULT_WAIT_MS}}
                ],
                "responses": {"200": {"description": "applied"}, "400": {"description": "bad timeout", "content": json_content(error.clone())},
                    "401": unauthorized,
                    "404": {"description": "no such source", "content": json_content(error.clone())},
                    "504": {"description": "timed out", "content": json_content(error)}}
            }},
            "/v1/apps": {
                "post": Op { summary: "Create an app; its bearer token is in this answer only", security: Some("adminToken"), params: &[], headers: &[],
                    body: Some("NewApp"), ok: (201, "created", schema("NewAppToken")), errors: &[] }.build(),
                "get": Op { summary: "Every app, revoked ones included", security: Some("adminToken"), params: &[], headers: &[], body: None,
                    ok: (200, "apps", list("apps", "App")), errors: &[] }.build(),
            },
            "/v1/apps/{id}": {
                "delete": Op { summary: "Revoke an app's token (401 from then on)", security: Some("adminToken"), params: &["id"], headers: &[], body: None,
                    ok: (200, "revoked", json!({"type": "object", "properties": {"id": {"type": "string"}, "revoked": {"const": true}}})),
                    errors: &[(404, "no such app")] }.build(),
            },
            "/v1/apps/{id}/grants": {
                "post": Op { summary: "An account grants a public app access to its events", security: Some("adminToken"), params: &["id"], headers: &[],
                    body: Some("Grant"), ok: (200, "granted", json!({"type": "object", "properties": {"app": {"type": "string"}, "account": {"type": "string"}}})),
                    errors: &[(404, "no such app")] }.build(),
            },
            "/v1/queues": {
                "post": Op { summary: "Create a queue", security: Some("appToken"), params: &[], headers: &[], body: Some("NewQueue"),
                    ok: (201, "created", schema("Queue")), errors: &[] }.build(),
                "get": Op { summary: "This app's queues", security: Some("appToken"), params: &[], headers: &[], body: None,
                    ok: (200, "queues", list("queues", "Queue")), errors: &[] }.build(),
            },
            "/v1/queues/{code}": {
                "delete": Op { summary: "Delete a queue with its subscriptions and events", security: Some("appToken"), params: &["code"], headers: &[], body: None,
                    ok: (200, "deleted", json!({"type": "object", "properties": {"code": {"type": "string"}, "deleted": {"const": true}}})),
                    errors: &[(404, "no such queue for this app")] }.build(),
            },
            "/v1/queues/{code}/subscriptions": {
                "post": Op { summary: "Subscribe the queue to an event type of an account; events flow from now on, or from the oldest kept with \"from\":\"earliest\"",
                    security: Some("appToken"), params: &["code"], headers: &[], body: Some("NewSubscription"), ok: (201, "subscribed", schema("Subscription")),
                    errors: &[(403, "the account has not granted this app access (or is not an in-house app's own)"), (404, "no such queue for this app")] }.build(),
                "get": Op { summary: "The queue's subscriptions", security: Some("appToken"), params: &["code"], headers: &[], body: None,
                    ok: (200, "subscriptions", list("subscriptions", "Subscription")), errors: &[(404, "no such queue for this app")] }.build(),
            },
            "/v1/queues/{code}/subscriptions/{subscription}": {
                "delete": Op { summary: "Unsubscribe", security: Some("appToken"), params: &["code", "subscription"], headers: &[], body: None,
                    ok: (200, "deleted", json!({"type": "object", "properties": {"code": {"type": "string"}, "deleted": {"const": true}}})),
                    errors: &[(404, "no such queue or subscription")] }.build(),
            },
            "/v1/sources/{name}/{resource}": {
                "post": Op { summary: "Create an object upstream, idempotently; it is in the mirror and the change log when this answers",
                    security: Some("appToken"), params: &["name", "resource"], headers: WRITE_HEADERS, body: Some("WriteParams"),
                    ok: (200, "the upstream's answer as it came, also when replayed (Idempotent-Replayed: true); an upstream 4xx is passed on and stored the same way", json!({"type": "object"})),
                    errors: WRITE_ERRORS }.build(),
            },
            "/v1/sources/{name}/{resource}/{id}": {
                "post": Op { summary: "Update an object upstream, idempotently", security: Some("appToken"), params: &["name", "resource", "id"],
                    headers: WRITE_HEADERS, body: Some("WriteParams"), ok: (200, "the upstream's answer as it came", json!({"type": "object"})),
                    errors: WRITE_ERRORS }.build(),
                "delete": Op { summary: "Delete an object upstream, idempotently", security: Some("appToken"), params: &["name", "resource", "id"],
                    headers: WRITE_HEADERS, body: None, ok: (200, "the upstream's answer as it came", json!({"type": "object"})),
                    errors: WRITE_ERRORS }.build(),
            },
            "/stripe/{source}/v1/{resource}": {
                "get": Op { summary: "Stripe-compatible list, answered from the mirror in Stripe's shape (limit, starting_after, ending_before; newest first)",
                    security: Some("appToken"), params: &["source", "resource"], headers: STRIPE_HEADERS, body: None,
                    ok: (200, "a Stripe list object", json!({"type": "object"})), errors: STRIPE_READ_ERRORS }.build(),
                "post": Op { summary: "Stripe-compatible create, through the atomic phases; answers what the upstream answered",
                    security: Some("appToken"), params: &["source", "resource"], headers: STRIPE_HEADERS, body: Some("WriteParams"),
                    ok: (200, "the upstream's answer as it came (Idempotent-Replayed: true when replayed)", json!({"type": "object"})),
                    errors: WRITE_ERRORS }.build(),
            },
            "/stripe/{source}/v1/{resource}/{id}": {
                "get": Op { summary: "Stripe-compatible retrieve, answered from the mirror", security: Some("appToken"),
                    params: &["source", "resource", "id"], headers: STRIPE_HEADERS, body: None,
                    ok: (200, "the object as mirrored", json!({"type": "object"})), errors: STRIPE_READ_ERRORS }.build(),
                "post": Op { summary: "Stripe-compatible update, through the atomic phases", security: Some("appToken"),
                    params: &["source", "resource", "id"], headers: STRIPE_HEADERS, body: Some("WriteParams"),
                    ok: (200, "the upstream's answer as it came", json!({"type": "object"})), errors: WRITE_ERRORS }.build(),
                "delete": Op { summary: "Stripe-compatible delete, through the atomic phases", security: Some("appToken"),
                    params: &["source", "resource", "id"], headers: STRIPE_HEADERS, body: None,
                    ok: (200, "the upstream's answer as it came", json!({"type": "object"})), errors: WRITE_ERRORS }.build(),
            },
            "/v1/queues/{code}/events/pull": {
                "post": Op { summary: "Acknowledge the batch ack_id names, then take the next unacknowledged events in commit order; wait_ms long-polls",
                    security: Some("appToken"), params: &["code"], headers: &[], body: Some("PullRequest"), ok: (200, "a batch (empty when none arrived in time)", schema("PullResponse")),
                    errors: &[(404, "no such queue for this app, or an ack_id it never handed out"), (409, "a stale ack_id: a later pull superseded it")] }.build(),
            },
        },
        "components": {
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "the token in the env var [api] admin_token_env names"},
                "readToken": {"type": "http", "scheme": "bearer",
                    "description": "when [api] read_token_env is set: the token it names, or the admin token; unset: no token needed"},
                "appToken": {"type": "http", "scheme": "bearer", "description": "an app's token (trb_…), from POST /v1/apps or tributary apps create"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}}, "required": ["type", "message"]}}},
                "Health": {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["ok", "unhealthy"]},
                    "reasons": {"type": "array", "items": {"type": "string"}, "description": "which source or sink is stuck on which store error"}}},
                "WriteParams": {"type": "object", "description": "the object's fields; sent upstream form-encoded (metadata[plan]=pro, items[0][price]=…)"},
                "NewApp": {"type": "object", "additionalProperties": false, "required": ["name", "kind"], "properties": {
                    "name": text(), "kind": {"enum": ["public", "inhouse"]},
                    "account": {"type": "string", "description": "an in-house app's one account; a public app has none"}}},
                "App": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "kind": {"enum": ["public", "inhouse"]},
                    "account": {"type": ["string", "null"]}, "created_at": {"type": "string", "format": "date-time"}, "revoked": {"type": "boolean"}}},
                "NewAppToken": {"allOf": [schema("App"), {"type": "object", "properties": {"token": {"type": "string", "description": "shown once"}}}]},
                "Grant": {"type": "object", "additionalProperties": false, "required": ["account"], "properties": {"account": text()}},
                "NewQueue": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {"name": text()}},
                "Queue": {"type": "object", "properties": {"code": {"type": "string"}, "name": {"type": "string"}, "status": {"const": "ACTIVE"}}},
                "NewSubscription": {"type": "object", "additionalProperties": false, "required": ["event_type", "account"], "properties": {
                    "event_type": {"type": "string", "description": "an event type, or a prefix ending in * (order.*, *)"},
                    "account": {"type": "string", "description": "an account id, or platform for changes without one"},
                    "from": {"enum": ["now", "earliest"], "default": "now"}}},
                "Subscription": {"type": "object", "properties": {"code": {"type": "string"}, "event_type": {"type": "string"},
                    "account": {"type": "string"}, "active": {"type": "boolean"}}},
                "PullRequest": {"type": "object", "additionalProperties": false, "properties": {
                    "ack_id": {"type": ["string", "null"], "description": "the ack_id of the previous pull: acknowledges that batch"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PULL_LIMIT, "default": DEFAULT_PULL_LIMIT},
                    "wait_ms": {"type": "integer", "minimum": 0, "maximum": MAX_PULL_WAIT_MS, "default": 0}}},
                "PullResponse": {"type": "object", "required": ["events", "ack_id", "dropped"], "properties": {
                    "events": {"type": "array", "items": schema("Event")},
                    "ack_id": {"type": ["string", "null"], "description": "send it with the next pull to acknowledge this batch; null when empty"},
                    "dropped": {"type": "integer", "description": "events retention deleted before they were acknowledged, since the last pull"}}},
                "Event": {"type": "object", "properties": {"id": {"type": "string", "description": "the change id: stable across redeliveries"},
                    "account": {"type": "string"}, "type": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                    "payload": schema("Change")}},
                "Change": {"type": "object", "properties": {"id": {"type": "string"}, "source": {"type": "string"}, "object": {"type": "string"},
                    "object_id": {"type": "string"}, "account": {"type": ["string", "null"]}, "op": {"enum": ["read", "insert", "update", "delete"]},
                    "type": {"type": "string"}, "data": {"type": ["object", "null"]}, "previous_attributes": {"type": ["object", "null"]},
                    "upstream_event_id": {"type": ["string", "null"]}, "committed_at": {"type": "string", "format": "date-time"}}},
            }
        }
    })
}
