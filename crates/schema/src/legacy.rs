//! The seed's legacy JSON: what its Python producers write with
//! `json.dumps(value).encode('utf-8')`, decoded into the same domain types,
//! with errors that name the offending field.

use serde::de::DeserializeOwned;

use crate::SchemaError;

/// Decodes a legacy JSON value (no framing) into `T`.
///
/// Syntax errors are [`SchemaError::InvalidJson`]; a required field that is
/// absent is [`SchemaError::MissingField`]; a field of the wrong type is
/// [`SchemaError::IllTypedField`] with its path (`$` for the value itself).
/// Trailing non-whitespace after the document is invalid JSON.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SchemaError> {
    // serde would also accept a struct as a positional array; the seed only writes objects
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => {
            return Err(SchemaError::InvalidJson {
                reason: "empty value".into(),
            })
        }
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() => {
            return Err(SchemaError::InvalidJson {
                reason: "not a JSON document".into(),
            })
        }
        Some(_) => {
            return Err(SchemaError::IllTypedField {
                field: "$".into(),
                reason: "expected a JSON object".into(),
            })
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(classify)?;
    de.end().map_err(|e| SchemaError::InvalidJson {
        reason: e.to_string(),
    })?;
    Ok(value)
}

fn classify(err: serde_path_to_error::Error<serde_json::Error>) -> SchemaError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if !inner.is_data() {
        return SchemaError::InvalidJson {
            reason: inner.to_string(),
        };
    }
    let text = inner.to_string();
    // serde_json appends " at line L column C"; the path already says where
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |i| &text[..i]);
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        let field = if path == "." {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        return SchemaError::MissingField { field };
    }
    let field = if path == "." { "$".to_string() } else { path };
    SchemaError::IllTypedField {
        field,
        reason: message.to_string(),
    }
}
