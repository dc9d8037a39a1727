//! Lint findings as miette reports against the user's `.nix` file, or as JSON for editors.

use std::fmt;
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    NamedSource, SourceCode, SourceSpan, SpanContents,
};
use serde::Serialize;

use super::Finding;
use crate::diagnostic::Lines;
use crate::options::Source;

/// One finding bound to its file, ready for miette.
#[derive(Debug)]
pub struct NixReport<'a> {
    finding: &'a Finding,
    /// Shared by the reports of one file: a copy per report costs the file's size per finding.
    source: NamedSource<Arc<IndexedText>>,
}

impl<'a> NixReport<'a> {
    pub fn new(finding: &'a Finding, file: &Source) -> NixReport<'a> {
        NixReport::with_text(finding, file, Arc::new(IndexedText::new(&file.text)))
    }

    fn with_text(finding: &'a Finding, file: &Source, text: Arc<IndexedText>) -> NixReport<'a> {
        NixReport {
            finding,
            source: NamedSource::new(&file.name, text).with_language("nix"),
        }
    }
}

/// A file's text with the offsets its lines start at. miette reads a span of plain text by
/// counting lines from the start, which costs the file's size per finding; this hands it only
/// the lines around the span.
#[derive(Debug)]
pub struct IndexedText {
    text: String,
    /// Line breaks as miette counts them: `\n`, `\r\n` and a lone `\r`.
    line_starts: Vec<usize>,
}

impl IndexedText {
    fn new(text: &str) -> IndexedText {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        for (i, &b) in bytes.iter().enumerate() {
            let breaks = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            if breaks {
                line_starts.push(i + 1);
            }
        }
        IndexedText {
            text: text.to_owned(),
            line_starts,
        }
    }

    /// The line an offset is on (0-based).
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset) - 1
    }
}

impl SourceCode for IndexedText {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let (start, end) = (span.offset(), span.offset() + span.len());
        if end > self.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        // From a line before the first context line (miette looks at the character before an
        // empty span) to two lines past the last: what miette reads of them is the same as
        // from the whole text, with offsets and line numbers moved.
        let first_line = self.line_of(start).saturating_sub(context_lines_before + 1);
        let window_start = self.line_starts[first_line];
        let window_end = self
            .line_starts
            .get(self.line_of(end) + context_lines_after + 2)
            .copied()
            .unwrap_or(self.text.len());
        let window = &self.text[window_start..window_end];
        let moved = SourceSpan::from((start - window_start, span.len()));
        let contents = window.read_span(&moved, context_lines_before, context_lines_after)?;
        Ok(Box::new(MietteSpanContents::new(
            contents.data(),
            (
                contents.span().offset() + window_start,
                contents.span().len(),
            )
                .into(),
            contents.line() + first_line,
            contents.column(),
            contents.line_count() + first_line,
        )))
    }
}

impl fmt::Display for NixReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.finding.message)
    }
}

impl std::error::Error for NixReport<'_> {}

fn source_span(span: &std::ops::Range<usize>) -> SourceSpan {
    (span.start, span.end.saturating_sub(span.start)).into()
}

impl miette::Diagnostic for NixReport<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(&self.finding.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.finding.severity.into())
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.finding
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let primary = LabeledSpan::new_primary_with_span(
            self.finding.label.clone(),
            source_span(&self.finding.span),
        );
        let related = self.finding.related.iter().map(|(span, label)| {
            LabeledSpan::new_with_span(Some(label.clone()), source_span(span))
        });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// Renders findings as reports, in the order given, at a fixed width.
pub fn render(findings: &[Finding], files: &[Source], width: usize, colour: bool) -> String {
    let theme = if colour {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(width);
    let mut out = String::new();
    let mut texts: Vec<Option<Arc<IndexedText>>> = vec![None; files.len()];
    for finding in findings {
        let Some(file) = files.get(finding.file) else {
            continue;
        };
        let text =
            texts[finding.file].get_or_insert_with(|| Arc::new(IndexedText::new(&file.text)));
        let report = NixReport::with_text(finding, file, Arc::clone(text));
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&format!("{}: {}\n", file.name, finding.message));
        }
    }
    out
}

/// Plain reports (no colour): the form tests snapshot.
pub fn render_plain(findings: &[Finding], files: &[Source], width: usize) -> String {
    render(findings, files, width, false)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    start: usize,
    end: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonRelated<'a> {
    message: &'a str,
    line: usize,
    column: usize,
    span: JsonSpan,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonFinding<'a> {
    code: &'a str,
    severity: &'static str,
    message: &'a str,
    file: &'a str,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    /// Byte offsets.
    span: JsonSpan,
    label: Option<&'a str>,
    help: Option<&'a str>,
    related: Vec<JsonRelated<'a>>,
}

/// The findings as one JSON array (stable fields: code, severity, message, file, line,
/// column, endLine, endColumn, span {start, end} in bytes, label, help, related).
pub fn json(findings: &[Finding], files: &[Source]) -> String {
    let lines: Vec<Lines> = files.iter().map(|f| Lines::new(&f.text)).collect();
    let items: Vec<JsonFinding> = findings
        .iter()
        .filter_map(|finding| {
            let file = files.get(finding.file)?;
            let lines = &lines[finding.file];
            let (line, column) = lines.line_col(finding.span.start);
            let (end_line, end_column) = lines.line_col(finding.span.end);
            Some(JsonFinding {
                code: &finding.code,
                severity: finding.severity.name(),
                message: &finding.message,
                file: &file.name,
                line,
                column,
                end_line,
                end_column,
                span: JsonSpan {
                    start: finding.span.start,
                    end: finding.span.end,
                },
                label: finding.label.as_deref(),
                help: finding.help.as_deref(),
                related: finding
                    .related
                    .iter()
                    .map(|(span, message)| {
                        let (line, column) = lines.line_col(span.start);
                        JsonRelated {
                            message,
                            line,
                            column,
                            span: JsonSpan {
                                start: span.start,
                                end: span.end,
                            },
                        }
                    })
                    .collect(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&items).expect("findings always serialize") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// miette reads the same lines, at the same offsets and line numbers, from the indexed text
    /// as from the whole text, wherever the span is and however much context it asks for.
    #[test]
    fn indexed_text_reads_spans_like_the_whole_text() {
        let text = "{ a = 1;\n  b = 2;\r\n\r\n  c = \"x\";\r  d = [\n    1\n  ];\n}\n";
        let indexed = IndexedText::new(text);
        for start in 0..=text.len() {
            for len in [0, 1, 3, 12] {
                if start + len > text.len() {
                    continue;
                }
                let span = SourceSpan::from((start, len));
                for (before, after) in [(0, 0), (1, 1), (2, 3), (5, 5)] {
                    let whole = text.read_span(&span, before, after);
                    let ours = indexed.read_span(&span, before, after);
                    match (whole, ours) {
                        (Ok(whole), Ok(ours)) => {
                            let read = |c: &dyn SpanContents| {
                                (
                                    c.data().to_vec(),
                                    *c.span(),
                                    c.line(),
                                    c.column(),
                                    c.line_count(),
                                )
                            };
                            assert_eq!(
                                read(whole.as_ref()),
                                read(ours.as_ref()),
                                "span {start}+{len}, context {before}/{after}"
                            );
                        }
                        (Err(_), Err(_)) => {}
                        (whole, ours) => panic!(
                            "span {start}+{len}: whole text {:?}, indexed {:?}",
                            whole.is_ok(),
                            ours.is_ok()
                        ),
                    }
                }
            }
        }
    }
}
