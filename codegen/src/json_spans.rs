//! Byte ranges of every key and value in a JSON document, so that a diagnostic about
//! `$.shares[0].proto` can point at the exact text. serde_json keeps no positions, so this is a
//! small scanner of its own. It sees any text (reports are rendered for rejected text too), so
//! it is bounded: it nests at most [`MAX_DEPTH`] deep (serde_json's own limit, so no accepted
//! document is cut short) and keeps one small node per value, not a path per value.
//!
//! It also finds what serde_json lets pass silently: a key written twice in one object.

use std::collections::HashMap;
use std::ops::Range;

use crate::json_path::{JsonPath, Segment};

/// serde_json refuses deeper nesting ("recursion limit exceeded"); the scanner stops there too,
/// which keeps its recursion far from the stack's end on any input.
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The key's range (with quotes) when the value is an object member.
    pub key: Option<Range<usize>>,
    pub value: Range<usize>,
}

/// A key that occurs twice in one object: JSON parsers keep the last and drop the first
/// without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The member's path (where the last occurrence, the one that wins, is).
    pub path: JsonPath,
    /// The key (quotes included) written first.
    pub first: Range<usize>,
    /// The key written later, which wins.
    pub last: Range<usize>,
}

/// No node: the end of a sibling chain.
const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Node {
    located: Located,
    parent: u32,
    first_child: u32,
    last_child: u32,
    next_sibling: u32,
}

#[derive(Debug, Default)]
pub struct SpanIndex {
    text: String,
    /// In document order; the root (when the text has one) is node 0.
    nodes: Vec<Node>,
    /// (first, later) key nodes of each repeated key.
    duplicates: Vec<(u32, u32)>,
}

impl SpanIndex {
    /// Indexes `text`. On text that is not valid JSON the index is partial, never a panic.
    pub fn build(text: &str) -> SpanIndex {
        let mut scanner = Scanner {
            bytes: text.as_bytes(),
            text,
            pos: 0,
            nodes: Vec::new(),
            duplicates: Vec::new(),
        };
        scanner.skip_ws();
        let _ = scanner.value(NONE, None, 0);
        SpanIndex {
            text: text.to_owned(),
            nodes: scanner.nodes,
            duplicates: scanner.duplicates,
        }
    }

    pub fn get(&self, path: &JsonPath) -> Option<&Located> {
        let (found, depth) = self.deepest(path)?;
        (depth == path.0.len()).then(|| &self.nodes[found as usize].located)
    }

    /// The located node for `path`, or for its closest ancestor present in the text (a field
    /// left at its default has no text of its own; its object does).
    pub fn nearest(&self, path: &JsonPath) -> Option<(JsonPath, &Located)> {
        let (found, depth) = self.deepest(path)?;
        Some((
            JsonPath(path.0[..depth].to_vec()),
            &self.nodes[found as usize].located,
        ))
    }

    /// Every key written twice in one object, in document order.
    pub fn duplicate_keys(&self) -> Vec<DuplicateKey> {
        self.duplicates
            .iter()
            .map(|&(first, last)| DuplicateKey {
                path: self.path_of(last),
                first: self.nodes[first as usize]
                    .located
                    .key
                    .clone()
                    .unwrap_or_default(),
                last: self.nodes[last as usize]
                    .located
                    .key
                    .clone()
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The node `path` leads to, or its deepest ancestor in the text, with how many segments
    /// of `path` were followed. A repeated key leads to its last occurrence, as in serde_json.
    fn deepest(&self, path: &JsonPath) -> Option<(u32, usize)> {
        if self.nodes.is_empty() {
            return None;
        }
        let mut at = 0;
        for (depth, segment) in path.0.iter().enumerate() {
            match self.child(at, segment) {
                Some(child) => at = child,
                None => return Some((at, depth)),
            }
        }
        Some((at, path.0.len()))
    }

    fn children(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(
            Some(self.nodes[node as usize].first_child).filter(|&c| c != NONE),
            |&c| Some(self.nodes[c as usize].next_sibling).filter(|&n| n != NONE),
        )
    }

    fn child(&self, node: u32, segment: &Segment) -> Option<u32> {
        match segment {
            Segment::Index(index) => self
                .children(node)
                .nth(*index)
                .filter(|&c| self.nodes[c as usize].located.key.is_none()),
            Segment::Key(key) => self
                .children(node)
                .filter(|&c| self.key_of(c).as_deref() == Some(key.as_str()))
                .last(),
        }
    }

    fn key_of(&self, node: u32) -> Option<String> {
        let range = self.nodes[node as usize].located.key.clone()?;
        serde_json::from_str(self.text.get(range)?).ok()
    }

    fn path_of(&self, node: u32) -> JsonPath {
        let mut segments = Vec::new();
        let mut at = node;
        while at != NONE {
            let parent = self.nodes[at as usize].parent;
            if parent == NONE {
                break;
            }
            match self.key_of(at) {
                Some(key) => segments.push(Segment::Key(key)),
                None => {
                    let index = self.children(parent).position(|c| c == at).unwrap_or(0);
                    segments.push(Segment::Index(index));
                }
            }
            at = parent;
        }
        segments.reverse();
        JsonPath(segments)
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    nodes: Vec<Node>,
    duplicates: Vec<(u32, u32)>,
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

    /// Adds a node for the value at `pos` under `parent`, then scans the value. The node is
    /// kept (with the range scanned so far) even when the value is cut short.
    fn value(&mut self, parent: u32, key: Option<Range<usize>>, depth: usize) -> Option<u32> {
        self.peek()?;
        let node = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&n| n != NONE)?;
        let start = self.pos;
        self.nodes.push(Node {
            located: Located {
                key,
                value: start..start,
            },
            parent,
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
        });
        if parent != NONE {
            let previous = self.nodes[parent as usize].last_child;
            if previous == NONE {
                self.nodes[parent as usize].first_child = node;
            } else {
                self.nodes[previous as usize].next_sibling = node;
            }
            self.nodes[parent as usize].last_child = node;
        }
        let scanned = match self.peek() {
            Some(b'{' | b'[') if depth >= MAX_DEPTH => None,
            Some(b'{') => self.object(node, depth + 1),
            Some(b'[') => self.array(node, depth + 1),
            Some(b'"') => self.string().map(|_| ()),
            _ => {
                self.scalar();
                Some(())
            }
        };
        // A string cut short after a backslash ends past the text, or inside a character.
        let mut end = self.pos.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        self.nodes[node as usize].located.value.end = end;
        scanned.map(|()| node)
    }

    fn object(&mut self, node: u32, depth: usize) -> Option<()> {
        self.pos += 1;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        // Each key's first member, while this object is scanned.
        let mut seen: HashMap<String, u32> = HashMap::new();
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
            let member = self.value(node, Some(key_range), depth)?;
            match seen.get(&key) {
                Some(&first) => self.duplicates.push((first, member)),
                None => {
                    seen.insert(key, member);
                }
            }
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

    fn array(&mut self, node: u32, depth: usize) -> Option<()> {
        self.pos += 1;
        self.skip_ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.skip_ws();
            self.value(node, None, depth)?;
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

    #[test]
    fn finds_keys_written_twice_and_resolves_to_the_last() {
        let text = r#"{"hostName": "a", "x": [{"k": 1, "k": 2}], "hostName": "other"}"#;
        let index = SpanIndex::build(text);
        let duplicates = index.duplicate_keys();
        assert_eq!(duplicates.len(), 2);
        assert_eq!(duplicates[0].path, path!["x", 0, "k"]);
        assert_eq!(duplicates[1].path, path!["hostName"]);
        assert_eq!(duplicates[1].first.start, 1);
        assert_eq!(&text[duplicates[1].last.clone()], r#""hostName""#);
        assert!(duplicates[1].last.start > duplicates[1].first.start);
        let host_name = index.get(&path!["hostName"]).unwrap();
        assert_eq!(&text[host_name.value.clone()], r#""other""#);
    }

    /// Nesting beyond serde_json's limit is not followed: no deep recursion, no path per level.
    #[test]
    fn stops_at_the_depth_limit() {
        let depth = 100_000;
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let index = SpanIndex::build(&text);
        assert!(index.nodes.len() <= MAX_DEPTH + 1);
        let inside = JsonPath(vec![Segment::Index(0); MAX_DEPTH]);
        assert!(index.get(&inside).is_some());
    }
}
