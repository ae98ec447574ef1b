//! Field checks every gRPC service applies at its edge, each failing with an
//! [`Invalid`] that names the field (INVALID_ARGUMENT on the wire): bounded
//! identifiers and JSON-object text fields. (Invalid UTF-8 never reaches them:
//! [`crate::codec::FieldNamingCodec`] rejects it while decoding.)

use serde_json::{Map, Value};
use tonic::Status;

/// A validation failure: the field (a proto field name, or a path into a JSON
/// field such as `data_json.gaps[2].article`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl Invalid {
    /// `field` is invalid because of `problem`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl From<Invalid> for Status {
    fn from(e: Invalid) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// An identifier: required, at most `max` bytes, printable ASCII without
/// spaces (it becomes a Kafka key, a log field, part of a derived id).
pub fn identifier(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    if value.len() > max {
        return Err(Invalid::new(
            field,
            format!("is {} bytes, at most {max} allowed", value.len()),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::new(
            field,
            "may contain only printable ASCII without spaces",
        ));
    }
    Ok(value.to_string())
}

/// A JSON object given as text, at most `max` bytes; empty text is `{}`.
pub fn json_object(field: &str, value: &str, max: usize) -> Result<Map<String, Value>, Invalid> {
    if value.len() > max {
        return Err(Invalid::new(
            field,
            format!("is {} bytes, at most {max} allowed", value.len()),
        ));
    }
    if value.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(value) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Invalid::new(field, "must be a JSON object")),
        Err(e) => Err(Invalid::new(field, format!("is not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_required_bounded_and_printable() {
        assert_eq!(identifier("org", "org-1", 8).unwrap(), "org-1");
        assert_eq!(identifier("org", "", 8).unwrap_err().problem, "is required");
        assert!(identifier("org", "a b", 8).is_err());
        assert!(identifier("org", "é", 8).is_err());
        let e = identifier("org", "123456789", 8).unwrap_err();
        assert_eq!(e.to_string(), "org: is 9 bytes, at most 8 allowed");
    }

    #[test]
    fn json_objects_name_the_field() {
        assert!(json_object("d", "", 10).unwrap().is_empty());
        assert_eq!(json_object("d", r#"{"a":1}"#, 10).unwrap()["a"], 1);
        assert_eq!(json_object("d", "[1]", 10).unwrap_err().field, "d");
        assert!(json_object("d", "{", 10)
            .unwrap_err()
            .problem
            .starts_with("is not valid JSON"));
        assert!(json_object("d", r#"{"a":"0123456789"}"#, 10).is_err());
        let status: Status = json_object("data_json", "7", 10).unwrap_err().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("data_json:"));
    }
}
