//! Secret setting values, which never print: [`Secret`] for text (passwords),
//! [`SecretBytes`] for keys, which are bytes (`head -c 32 /dev/urandom > key`).
//!
//! A `*_FILE` setting hands the file's contents over unchanged: as text when it
//! is UTF-8, else as bytes. [`Secret`] drops one trailing line end (files
//! written by `echo` end with one); [`SecretBytes`] keeps every byte.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// A text secret (a password): never printed, one trailing `\n` or `\r\n` of
/// its source dropped.
#[derive(Clone)]
pub struct Secret(SecretString);

/// A binary secret (a signing key): never printed, every byte kept.
pub struct SecretBytes(SecretBox<[u8]>);

impl Secret {
    fn from_text(mut text: String) -> Self {
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Self(SecretString::from(text))
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(SecretString::from(text))
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(SecretString::from(text))
    }
}

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(SecretBox::from(bytes.into_boxed_slice()))
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        Self::from(self.0.expose_secret().to_vec())
    }
}

impl ExposeSecret<[u8]> for SecretBytes {
    fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED, {} bytes])", self.0.expose_secret().len())
    }
}

/// Reads a secret's source: text (a file that is UTF-8, an environment
/// variable, a TOML string) or bytes (a file that is not UTF-8).
enum Source {
    Text(String),
    Bytes(Vec<u8>),
}

struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = Source;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret: text, or the bytes of a file")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Source, E> {
        Ok(Source::Text(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Source, E> {
        Ok(Source::Text(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Source, E> {
        Ok(Source::Bytes(v.to_vec()))
    }

    // An environment value that looks like a number or a boolean arrives typed.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Source, E> {
        Ok(Source::Text(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Source, E> {
        Ok(Source::Text(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Source, E> {
        Ok(Source::Text(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Source, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(Source::Bytes(bytes))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(SourceVisitor)? {
            Source::Text(text) => Ok(Self::from_text(text)),
            Source::Bytes(bytes) => String::from_utf8(bytes)
                .map(Self::from_text)
                .map_err(|_| de::Error::custom("this secret is text, and the file is not valid UTF-8")),
        }
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match deserializer.deserialize_any(SourceVisitor)? {
            Source::Text(text) => Self::from(text.into_bytes()),
            Source::Bytes(bytes) => Self::from(bytes),
        })
    }
}
