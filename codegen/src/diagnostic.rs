//! Findings about a spec, as data: a stable code, a severity, where (a JSON path), what is
//! wrong and a hint. Rendering them as miette reports against the spec text happens here too,
//! so every command reports the same way.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use crate::json_path::JsonPath;
use crate::json_spans::SpanIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    /// `error` or `warning`, as JSON output names it.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl From<Severity> for miette::Severity {
    fn from(severity: Severity) -> miette::Severity {
        match severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        }
    }
}

/// Where a finding points: a JSON path (resolved against the spec text when it is rendered), or
/// an already known byte range (JSON syntax errors, which have no path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Path(JsonPath),
    /// Point at the key of the member rather than its value (unknown fields).
    Key(JsonPath),
    Offset(usize),
    /// A byte range of the text (a key written twice has no path of its own).
    Bytes(std::ops::Range<usize>),
    Nowhere,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable, e.g. `microvm::capability::share_9p`.
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub location: Location,
    /// Short text under the pointed-at span; the JSON path when empty.
    pub label: Option<String>,
    pub help: Option<String>,
    /// Other places the finding is about, each with its label (the first of two duplicates).
    pub also: Vec<(Location, String)>,
}

impl Diagnostic {
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code: code.into(),
            severity: Severity::Error,
            message: message.into(),
            location: Location::Nowhere,
            label: None,
            help: None,
            also: Vec::new(),
        }
    }

    pub fn warning(code: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at(mut self, path: JsonPath) -> Diagnostic {
        self.location = Location::Path(path);
        self
    }

    pub fn at_key(mut self, path: JsonPath) -> Diagnostic {
        self.location = Location::Key(path);
        self
    }

    pub fn at_offset(mut self, offset: usize) -> Diagnostic {
        self.location = Location::Offset(offset);
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Points at another place too, with its own label.
    pub fn also(mut self, location: Location, label: impl Into<String>) -> Diagnostic {
        self.also.push((location, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn path(&self) -> Option<&JsonPath> {
        match &self.location {
            Location::Path(path) | Location::Key(path) => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The text diagnostics point into. A spec written by Nix is one long line; reports against it
/// would show a 10 kB line, so such text is reformatted first and the report says so.
pub struct SpecText {
    name: String,
    text: String,
    index: SpanIndex,
}

/// Lines longer than this make a report unreadable.
const LONGEST_READABLE_LINE: usize = 400;

/// How much longer than the text its reformatted form may be: deep nesting indents every line,
/// and a report is not worth gigabytes.
const MAX_REFORMAT_GROWTH: usize = 8;

/// A `Vec` that refuses to grow past its limit, so serializing into it stops early.
struct BoundedBuffer {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for BoundedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other("reformatted text too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `text` pretty-printed, unless that would be much longer than `text`.
fn reformat(text: &str) -> Option<String> {
    let value = serde_json::from_str::<serde_json::Value>(text).ok()?;
    let mut buffer = BoundedBuffer {
        bytes: Vec::new(),
        limit: text.len().saturating_mul(MAX_REFORMAT_GROWTH),
    };
    serde_json::to_writer_pretty(&mut buffer, &value).ok()?;
    String::from_utf8(buffer.bytes).ok()
}

impl SpecText {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SpecText {
        let name = name.into();
        let text = text.into();
        let index = SpanIndex::build(&text);
        let too_long = text.lines().any(|line| line.len() > LONGEST_READABLE_LINE);
        // Reformatting keeps one of two duplicate keys; their report needs both.
        let reformatted = (too_long && index.duplicate_keys().is_empty())
            .then(|| reformat(&text))
            .flatten();
        match reformatted {
            Some(pretty) => {
                let text = pretty + "\n";
                SpecText {
                    name: format!("{name} (reformatted)"),
                    index: SpanIndex::build(&text),
                    text,
                }
            }
            None => SpecText { name, text, index },
        }
    }

    /// Every key written twice in one object of the text.
    pub fn duplicate_keys(&self) -> Vec<crate::json_spans::DuplicateKey> {
        self.index.duplicate_keys()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The byte range a location points at, if the text has it.
    pub fn span_of(&self, location: &Location) -> Option<(usize, usize)> {
        match location {
            Location::Path(path) => {
                let (_, located) = self.index.nearest(path)?;
                Some((located.value.start, located.value.len()))
            }
            Location::Key(path) => {
                let (found, located) = self.index.nearest(path)?;
                let range = if &found == path {
                    located.key.clone().unwrap_or(located.value.clone())
                } else {
                    located.value.clone()
                };
                Some((range.start, range.len()))
            }
            Location::Offset(offset) => {
                let mut offset = (*offset).min(self.text.len());
                while !self.text.is_char_boundary(offset) {
                    offset -= 1;
                }
                let len = self.text[offset..].chars().next().map_or(0, char::len_utf8);
                Some((offset, len))
            }
            Location::Bytes(range) => self
                .text
                .get(range.clone())
                .map(|_| (range.start, range.len())),
            Location::Nowhere => None,
        }
    }
}

/// The line starts of a text, for turning byte offsets into 1-based lines and columns (in
/// characters) quickly.
pub struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    pub fn new(text: &'t str) -> Lines<'t> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { text, starts }
    }

    /// 1-based line and column (in characters) of a byte offset. An offset inside a character
    /// is that character's; one beyond the text is the text's end.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts[line - 1];
        (line, self.text[start..offset].chars().count() + 1)
    }
}

/// One diagnostic bound to the text it points into, ready for miette.
#[derive(Debug)]
pub struct Report<'a> {
    diagnostic: &'a Diagnostic,
    source: NamedSource<String>,
    span: Option<SourceSpan>,
    also: Vec<(SourceSpan, &'a str)>,
}

impl<'a> Report<'a> {
    pub fn new(diagnostic: &'a Diagnostic, text: &SpecText) -> Report<'a> {
        Report {
            diagnostic,
            source: NamedSource::new(text.name(), text.text().to_owned()).with_language("json"),
            span: text.span_of(&diagnostic.location).map(SourceSpan::from),
            also: diagnostic
                .also
                .iter()
                .filter_map(|(location, label)| {
                    Some((SourceSpan::from(text.span_of(location)?), label.as_str()))
                })
                .collect(),
        }
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(&self.diagnostic.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.diagnostic.severity.into())
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.span.map(|_| &self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        let text = match (&self.diagnostic.label, self.diagnostic.path()) {
            (Some(label), Some(path)) => format!("{path}: {label}"),
            (Some(label), None) => label.clone(),
            (None, Some(path)) => path.to_string(),
            (None, None) => String::new(),
        };
        let label = (!text.is_empty()).then_some(text);
        let also = self
            .also
            .iter()
            .map(|(span, label)| LabeledSpan::new_with_span(Some((*label).to_owned()), *span));
        Some(Box::new(
            std::iter::once(LabeledSpan::new_with_span(label, span)).chain(also),
        ))
    }
}

/// Renders diagnostics as plain reports (no colour) at a fixed width: the form tests snapshot.
pub fn render_plain(diagnostics: &[Diagnostic], text: &SpecText, width: usize) -> String {
    render_with(
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(width),
        diagnostics,
        text,
    )
}

pub fn render_with(
    handler: GraphicalReportHandler,
    diagnostics: &[Diagnostic],
    text: &SpecText,
) -> String {
    // Errors first, then in the order of the document, so a report reads top to bottom.
    let mut ordered: Vec<&Diagnostic> = diagnostics.iter().collect();
    ordered.sort_by_cached_key(|d| {
        let offset = text
            .span_of(&d.location)
            .map_or(usize::MAX, |(start, _)| start);
        (d.severity, offset)
    });
    let mut out = String::new();
    for diagnostic in ordered {
        let report = Report::new(diagnostic, text);
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&diagnostic.to_string());
            out.push('\n');
        }
    }
    out
}

/// Sorts findings the way reports list them: errors first, then by place in the document.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (a.severity, a.path(), &a.code, &a.message).cmp(&(
            b.severity,
            b.path(),
            &b.code,
            &b.message,
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based_in_characters() {
        let lines = Lines::new("ab\né x\n");
        assert_eq!(lines.line_col(0), (1, 1));
        assert_eq!(lines.line_col(3), (2, 1));
        assert_eq!(lines.line_col(4), (2, 1), "inside é");
        assert_eq!(lines.line_col(6), (2, 3), "é is one column");
        assert_eq!(lines.line_col(100), (3, 1));
    }
}
