//! API errors rendered as Kubernetes `Status` objects.
//!
//! Every failure a handler can produce is an [`ApiError`]; the server turns it into the
//! same JSON body and HTTP code a real kube-apiserver sends, because kube-rs and kubectl
//! branch on `reason` and `code` (e.g. 409 Conflict retries, 410 Gone relists).

use serde_json::{Value, json};

/// One field-level validation failure, formatted like k8s.io/apimachinery `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldErrorKind {
    Required(String),
    Invalid(Value, String),
    TypeInvalid(Value, String),
    NotSupported(Value, Vec<String>),
    Forbidden(String),
    Duplicate(Value),
    TooLong(usize),
    TooMany(usize),
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Required(detail.into()) }
    }
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Invalid(value, detail.into()) }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), kind: FieldErrorKind::Forbidden(detail.into()) }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required(_) => "FieldValueRequired",
            FieldErrorKind::Invalid(..) => "FieldValueInvalid",
            FieldErrorKind::TypeInvalid(..) => "FieldValueTypeInvalid",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::Forbidden(_) => "FieldValueForbidden",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::TooLong(_) => "FieldValueTooLong",
            FieldErrorKind::TooMany(_) => "FieldValueTooMany",
        }
    }

    /// The message without the field prefix ("Required value", "Invalid value: ...").
    fn body(&self) -> String {
        fn with_detail(s: String, d: &str) -> String {
            if d.is_empty() { s } else { format!("{s}: {d}") }
        }
        match &self.kind {
            FieldErrorKind::Required(d) => with_detail("Required value".into(), d),
            FieldErrorKind::Invalid(v, d) | FieldErrorKind::TypeInvalid(v, d) => {
                with_detail(format!("Invalid value: {}", show(v)), d)
            }
            FieldErrorKind::NotSupported(v, allowed) => {
                let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                format!("Unsupported value: {}: supported values: {}", show(v), list.join(", "))
            }
            FieldErrorKind::Forbidden(d) => with_detail("Forbidden".into(), d),
            FieldErrorKind::Duplicate(v) => format!("Duplicate value: {}", show(v)),
            FieldErrorKind::TooLong(n) => format!("Too long: may not be more than {n} bytes"),
            FieldErrorKind::TooMany(n) => format!("Too many: must have at most {n} items"),
        }
    }

    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

/// Renders a value the way Go's `%#v`-ish field errors do for the common cases.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// A failed API request; serialises to a `v1 Status`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError { code, reason: reason.into(), message: message.into(), details: None }
    }

    fn with_details(mut self, name: &str, group: &str, kind: &str) -> Self {
        let mut d = serde_json::Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        if !group.is_empty() {
            d.insert("group".into(), json!(group));
        }
        d.insert("kind".into(), json!(kind));
        self.details = Some(Value::Object(d));
        self
    }

    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    /// `resource` is the plural; `group` empty for core.
    pub(crate) fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(resource, group)))
            .with_details(name, group, resource)
    }

    pub(crate) fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(resource, group)))
            .with_details(name, group, resource)
    }

    pub(crate) fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(resource, group)),
        )
        .with_details(name, group, resource)
    }

    pub(crate) fn modified(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid naming every offending field, e.g.
    /// `CertificateRequest.cert-manager.io "x" is invalid: spec.request: Required value`.
    pub(crate) fn invalid(kind: &str, group: &str, name: &str, errs: &[FieldError]) -> Self {
        let msgs: Vec<String> = errs.iter().map(FieldError::message).collect();
        let joined = if msgs.len() == 1 { msgs[0].clone() } else { format!("[{}]", msgs.join(", ")) };
        let mut e = Self::new(422, "Invalid", format!("{} \"{name}\" is invalid: {joined}", qualified(kind, group)))
            .with_details(name, group, kind);
        let causes: Vec<Value> =
            errs.iter().map(|f| json!({"reason": f.reason(), "message": f.body(), "field": f.field})).collect();
        if let Some(Value::Object(d)) = &mut e.details {
            d.insert("causes".into(), Value::Array(causes));
        }
        e
    }

    pub(crate) fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", msg)
    }

    pub(crate) fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    pub(crate) fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {ct:?}"
            ),
        )
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", msg)
    }

    /// The `Status` object for this error.
    pub(crate) fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// `resource.group`, or just `resource` for the core group.
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
