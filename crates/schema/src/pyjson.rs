//! JSON text exactly as Python's `json.dumps` writes it with default arguments
//! (`", "` and `": "` separators, `ensure_ascii=True`), used to rebuild the
//! original bytes of a legacy JSON dead letter whose payload the seed stored
//! as a parsed dict.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

/// A `serde_json` formatter that writes what `json.dumps(value)` writes.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // ensure_ascii: every non-ASCII character as \uXXXX, astral ones as surrogate pairs
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // Python escapes control characters in lower-case hex, like serde_json
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => return write!(writer, "\\u{:04x}", byte),
        };
        writer.write_all(s)
    }
}

/// `json.dumps(value)` of a JSON value, as bytes.
pub(crate) fn dumps(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .expect("serializing a serde_json::Value into a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_what_python_json_dumps_writes() {
        // python3 -c 'import json; print(json.dumps({"a": [1, 2.5, None, True], "b": {"c": "x\u00e9\U0001F600\n"}}))'
        let v = json!({"a": [1, 2.5, null, true], "b": {"c": "x\u{e9}\u{1F600}\n"}});
        let text = String::from_utf8(dumps(&v)).unwrap();
        assert_eq!(
            text,
            r#"{"a": [1, 2.5, null, true], "b": {"c": "x\u00e9\ud83d\ude00\n"}}"#
        );
    }
}
