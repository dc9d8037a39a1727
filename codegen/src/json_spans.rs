//! Byte ranges of every key and value in a JSON document, so that a diagnostic about
//! `$.shares[0].proto` can point at the exact text. serde_json keeps no positions, so this is a
//! small scanner of its own; it only ever sees text that serde_json already accepted.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::json_path::JsonPath;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The key's range (with quotes) when the value is an object member.
    pub key: Option<Range<usize>>,
    pub value: Range<usize>,
}

#[derive(Debug, Default)]
pub struct SpanIndex {
    spans: BTreeMap<JsonPath, Located>,
}

impl SpanIndex {
    /// Indexes `text`. On text that is not valid JSON the index is partial, never a panic.
    pub fn build(text: &str) -> SpanIndex {
        let mut scanner = Scanner {
            bytes: text.as_bytes(),
            text,
            pos: 0,
            spans: BTreeMap::new(),
        };
        scanner.skip_ws();
        let _ = scanner.value(JsonPath::root(), None);
        SpanIndex {
            spans: scanner.spans,
        }
    }

    pub fn get(&self, path: &JsonPath) -> Option<&Located> {
        self.spans.get(path)
    }

    /// The located node for `path`, or for its closest ancestor present in the text (a field
    /// left at its default has no text of its own; its object does).
    pub fn nearest(&self, path: &JsonPath) -> Option<(JsonPath, &Located)> {
        path.ancestors()
            .find_map(|p| self.spans.get(&p).map(|located| (p, located)))
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    spans: BTreeMap<JsonPath, Located>,
}

impl Scanner<'_> {
    fn skip_ws(&mut self) {
        while let Some(b) = self.bytes.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn value(&mut self, path: JsonPath, key: Option<Range<usize>>) -> Option<()> {
        let start = self.pos;
        match self.peek()? {
            b'{' => self.object(&path)?,
            b'[' => self.array(&path)?,
            b'"' => {
                self.string()?;
            }
            _ => self.scalar(),
        }
        self.spans.insert(
            path,
            Located {
                key,
                value: start..self.pos,
            },
        );
        Some(())
    }

    fn object(&mut self, path: &JsonPath) -> Option<()> {
        self.pos += 1;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.skip_ws();
            let key_range = self.string()?;
            let key: String = serde_json::from_str(&self.text[key_range.clone()]).ok()?;
            self.skip_ws();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.skip_ws();
            self.value(path.key(&key), Some(key_range))?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, path: &JsonPath) -> Option<()> {
        self.pos += 1;
        self.skip_ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(());
        }
        let mut index = 0;
        loop {
            self.skip_ws();
            self.value(path.index(index), None)?;
            index += 1;
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string token, quotes included.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.pos;
        if self.peek()? != b'"' {
            return None;
        }
        self.pos += 1;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return Some(start..self.pos);
                }
                _ => self.pos += 1,
            }
        }
    }

    fn scalar(&mut self) {
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;

    #[test]
    fn finds_nested_keys_and_values() {
        let text = r#"{ "a": 1, "shares": [ {"tag": "x\"y", "proto": "9p"} ], "e": {} }"#;
        let index = SpanIndex::build(text);
        let proto = index.get(&path!["shares", 0, "proto"]).unwrap();
        assert_eq!(&text[proto.value.clone()], r#""9p""#);
        assert_eq!(&text[proto.key.clone().unwrap()], r#""proto""#);
        let tag = index.get(&path!["shares", 0, "tag"]).unwrap();
        assert_eq!(&text[tag.value.clone()], r#""x\"y""#);
        assert_eq!(&text[index.get(&path!["a"]).unwrap().value.clone()], "1");
        assert_eq!(&text[index.get(&path!["e"]).unwrap().value.clone()], "{}");
    }

    #[test]
    fn nearest_falls_back_to_the_enclosing_object() {
        let text = r#"{"shares": [{"tag": "t"}]}"#;
        let index = SpanIndex::build(text);
        let (found, located) = index.nearest(&path!["shares", 0, "proto"]).unwrap();
        assert_eq!(found, path!["shares", 0]);
        assert_eq!(&text[located.value.clone()], r#"{"tag": "t"}"#);
    }

    #[test]
    fn survives_garbage() {
        for text in ["", "{", "{\"a\"", "[1,", "\"\\", "{\"a\":}", "}}}", "\u{0}"] {
            let _ = SpanIndex::build(text);
        }
    }
}
