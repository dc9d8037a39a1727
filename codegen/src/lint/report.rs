//! Lint findings as miette reports against the user's `.nix` file, or as JSON for editors.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

use super::Finding;
use crate::diagnostic::Lines;
use crate::options::Source;

/// One finding bound to its file, ready for miette.
#[derive(Debug)]
pub struct NixReport<'a> {
    finding: &'a Finding,
    source: NamedSource<String>,
}

impl<'a> NixReport<'a> {
    pub fn new(finding: &'a Finding, file: &Source) -> NixReport<'a> {
        NixReport {
            finding,
            source: NamedSource::new(&file.name, file.text.clone()).with_language("nix"),
        }
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
    for finding in findings {
        let Some(file) = files.get(finding.file) else {
            continue;
        };
        let report = NixReport::new(finding, file);
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
