//! The error every simulated upstream answers with, in Stripe's envelope:
//! `{"error": {"type", "code", "message", "param", "doc_url"}}`.

use serde_json::{Value, json};

/// An error in Stripe's shape; `status` is the HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn invalid(param: &str, message: String) -> Self {
        ApiError { status: 400, kind: "invalid_request_error", code: Some("parameter_invalid"), param: Some(param.into()), message }
    }

    pub fn missing(param: &str, object: &str, id: &str) -> Self {
        ApiError {
            status: 404,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            param: Some(param.into()),
            message: format!("No such {object}: '{id}'"),
        }
    }

    /// A required parameter is absent.
    pub fn required(param: &str) -> Self {
        ApiError { code: Some("parameter_missing"), ..ApiError::invalid(param, format!("Missing required param: {param}.")) }
    }

    /// Another request is executing on the same object.
    pub fn lock_timeout() -> Self {
        ApiError {
            status: 429,
            kind: "invalid_request_error",
            code: Some("lock_timeout"),
            param: None,
            message: "This object cannot be accessed right now because another API request or Stripe process is currently accessing it. \
                      If you see this error intermittently, retry the request. If you see this error frequently and are making multiple \
                      concurrent requests to a single object, make your requests serially or at a lower rate."
                .into(),
        }
    }

    /// A parameter this endpoint does not take.
    pub fn unknown(param: &str) -> Self {
        ApiError { code: Some("parameter_unknown"), ..ApiError::invalid(param, format!("Received unknown parameter: {param}")) }
    }

    /// The error envelope, with the page of Stripe's documentation for its
    /// code (`request_log_url` is added where the request id is known).
    pub fn body(&self) -> Value {
        let mut error = json!({"type": self.kind, "message": self.message});
        if let Some(code) = self.code {
            error["code"] = json!(code);
            error["doc_url"] = json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")));
        }
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        json!({ "error": error })
    }
}
