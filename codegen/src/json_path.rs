//! A location inside the spec document, printed JSONPath-style (`$.shares[0].proto`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JsonPath(pub Vec<Segment>);

impl JsonPath {
    pub fn root() -> JsonPath {
        JsonPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> JsonPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        JsonPath(segments)
    }

    pub fn index(&self, index: usize) -> JsonPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        JsonPath(segments)
    }

    pub fn parent(&self) -> Option<JsonPath> {
        let (_, rest) = self.0.split_last()?;
        Some(JsonPath(rest.to_vec()))
    }

    /// This path, its parent, its parent's parent, … up to the root.
    pub fn ancestors(&self) -> impl Iterator<Item = JsonPath> + '_ {
        (0..=self.0.len())
            .rev()
            .map(|n| JsonPath(self.0[..n].to_vec()))
    }

    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(key)) => Some(key),
            _ => None,
        }
    }
}

/// Where serde_path_to_error stopped, as far as it names keys and indices: a segment that is
/// neither (an enum variant, a place it cannot name) ends the path there, so the path is
/// always a place in the document (the nearest one serde could name).
impl From<&serde_path_to_error::Path> for JsonPath {
    fn from(path: &serde_path_to_error::Path) -> JsonPath {
        let mut segments = Vec::new();
        for segment in path.iter() {
            match segment {
                serde_path_to_error::Segment::Map { key } => {
                    segments.push(Segment::Key(key.clone()));
                }
                serde_path_to_error::Segment::Seq { index } => {
                    segments.push(Segment::Index(*index));
                }
                _ => break,
            }
        }
        JsonPath(segments)
    }
}

/// Builds a path from keys and indices: `path!["shares", 0, "proto"]`.
#[macro_export]
macro_rules! path {
    ($($segment:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut path = $crate::json_path::JsonPath::root();
        $( path = $crate::json_path::IntoSegment::push_onto($segment, path); )*
        path
    }};
}

pub trait IntoSegment {
    fn push_onto(self, path: JsonPath) -> JsonPath;
}

impl IntoSegment for &str {
    fn push_onto(self, path: JsonPath) -> JsonPath {
        path.key(self)
    }
}

impl IntoSegment for &String {
    fn push_onto(self, path: JsonPath) -> JsonPath {
        path.key(self)
    }
}

impl IntoSegment for usize {
    fn push_onto(self, path: JsonPath) -> JsonPath {
        path.index(self)
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for segment in &self.0 {
            match segment {
                Segment::Key(key) if is_plain_key(key) => write!(f, ".{key}")?,
                Segment::Key(key) => write!(f, "[{}]", serde_json::Value::from(key.as_str()))?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_uses_dots_for_plain_keys_and_brackets_otherwise() {
        let path = path!["tools", "mkfs.ext4"];
        assert_eq!(path.to_string(), r#"$.tools["mkfs.ext4"]"#);
        assert_eq!(path!["shares", 0, "proto"].to_string(), "$.shares[0].proto");
        assert_eq!(path!["cloud-hypervisor"].to_string(), "$.cloud-hypervisor");
        assert_eq!(JsonPath::root().to_string(), "$");
    }

    #[test]
    fn ancestors_run_from_the_path_to_the_root() {
        let ancestors: Vec<String> = path!["shares", 0, "proto"]
            .ancestors()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            ancestors,
            ["$.shares[0].proto", "$.shares[0]", "$.shares", "$"]
        );
    }
}
