//! The template engine. Templates live in `templates/` and are embedded at compile time.
//!
//! In shell templates (`.sh`) every `{{ value }}` is shell-quoted by default: a template has to
//! write `| safe` to opt out, and only does so for text that is shell code by definition
//! (`microvm.preStart`, `microvm.binScripts`). Command lines go through the `argv` filter,
//! which quotes each word.

use std::io::Write;

use serde::Serialize;
use tera::{Context, Kwargs, State, Tera, Value};

use crate::hypervisor::{Part, Word};
use crate::templates::{TEMPLATES, UNIT_TEMPLATES};

/// A character that does not mean itself in a unit file setting (or a shell word): whitespace,
/// control characters, quotes, `$`, `%`, backslashes and `;`. Validation refuses values with
/// one, and rendering a unit refuses them too, rather than escape them.
pub fn is_special_in_units(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '$' | '%' | '\\' | ';')
}

/// Unit values are paths and names validated to mean themselves (units have no quoting for
/// most settings); anything else fails the render rather than change a unit's meaning.
fn unit_escape(input: &str, out: &mut dyn Write) -> std::io::Result<()> {
    if input.chars().any(is_special_in_units) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{input:?} cannot appear in a unit file"),
        ));
    }
    out.write_all(input.as_bytes())
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {template} failed to render: {message}")]
    Template { template: String, message: String },
}

/// Quotes `input` as one shell word. A NUL byte cannot be quoted; validation refuses it first.
pub fn shell_quote(input: &str) -> Result<String, shlex::QuoteError> {
    shlex::try_quote(input).map(|q| q.into_owned())
}

fn shell_escape(input: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let quoted = shell_quote(input)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    out.write_all(quoted.as_bytes())
}

/// One shell word: literal parts quoted, run-time parts as `"${var}"`.
pub fn render_word(word: &Word) -> Result<String, shlex::QuoteError> {
    let mut out = String::new();
    for part in &word.0 {
        match part {
            Part::Lit(text) if text.is_empty() => {}
            Part::Lit(text) => out.push_str(&shell_quote(text)?),
            Part::Var(name) => {
                out.push_str("\"${");
                out.push_str(name);
                out.push_str("}\"");
            }
        }
    }
    if out.is_empty() {
        out.push_str("''");
    }
    Ok(out)
}

/// `{{ words | argv }}`: each word quoted, joined by spaces. With `multiline=true`, each option
/// (a word starting with `-`) begins a continued line, so long command lines stay readable.
fn argv_filter(value: &Value, kwargs: Kwargs, _: &State) -> tera::TeraResult<Value> {
    let multiline = kwargs.get::<bool>("multiline")?.unwrap_or(false);
    let json = serde_json::to_value(value).map_err(|e| tera::Error::message(e.to_string()))?;
    let words: Vec<Word> = match json {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(Word::from(s)),
                other => serde_json::from_value(other),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| tera::Error::message(format!("argv: not a list of words: {e}")))?,
        _ => return Err(tera::Error::message("argv: expected a list")),
    };
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            let option = word.literal().is_some_and(|w| w.starts_with('-'));
            out.push_str(if multiline && option { " \\\n  " } else { " " });
        }
        out.push_str(&render_word(word).map_err(|e| tera::Error::message(e.to_string()))?);
    }
    Ok(Value::safe_string(&out))
}

pub struct Renderer {
    shell: Tera,
    units: Tera,
}

impl Renderer {
    pub fn new() -> Renderer {
        let mut shell = Tera::new();
        // `{#` opens a tera comment and shell uses `${#var}`: comments get other delimiters.
        shell
            .set_delimiters(tera::Delimiters {
                comment_start: "<#".into(),
                comment_end: "#>".into(),
                ..Default::default()
            })
            .expect("two-byte delimiters are valid");
        shell.set_escape_fn(shell_escape);
        shell.autoescape_on([".sh"]);
        shell.register_filter("argv", argv_filter);
        shell
            .add_raw_templates(TEMPLATES.iter().copied())
            .expect("embedded templates parse; the render tests load every one");
        let mut units = Tera::new();
        units.set_escape_fn(unit_escape);
        units.autoescape_on([".service", ".target", ".conf"]);
        units
            .add_raw_templates(UNIT_TEMPLATES.iter().copied())
            .expect("embedded unit templates parse; the render tests load every one");
        Renderer { shell, units }
    }

    /// Renders a systemd unit template.
    pub fn render_unit(
        &self,
        template: &str,
        context: &impl Serialize,
    ) -> Result<String, RenderError> {
        let to_error = |e: tera::Error| RenderError::Template {
            template: template.to_owned(),
            message: format!("{e:?}"),
        };
        let context = Context::from_serialize(context).map_err(to_error)?;
        let mut text = self.units.render(template, &context).map_err(to_error)?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(text)
    }

    pub fn render(&self, template: &str, context: &impl Serialize) -> Result<String, RenderError> {
        let to_error = |e: tera::Error| RenderError::Template {
            template: template.to_owned(),
            message: format!("{e:?}"),
        };
        let context = Context::from_serialize(context).map_err(to_error)?;
        let mut text = self.shell.render(template, &context).map_err(to_error)?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(text)
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_unless_the_template_opts_out() {
        let mut tera = Tera::new();
        tera.set_escape_fn(shell_escape);
        tera.autoescape_on([".sh"]);
        tera.register_filter("argv", argv_filter);
        tera.add_raw_template(
            "t.sh",
            "echo {{ v }}; {{ v | safe }}; run {{ words | argv }}",
        )
        .unwrap();
        let mut context = Context::new();
        context.insert("v", "a b$(x)");
        context.insert("words", &vec!["x y", "", "'q'"]);
        let out = tera.render("t.sh", &context).unwrap();
        assert_eq!(out, "echo 'a b$(x)'; a b$(x); run 'x y' '' \"'q'\"");
    }

    #[test]
    fn run_time_parts_expand_inside_double_quotes() {
        let word = Word(vec![
            Part::Lit("mode=tap,tapif=".into()),
            Part::Var("macvtap0".into()),
            Part::Lit(",mac=x y".into()),
        ]);
        assert_eq!(
            render_word(&word).unwrap(),
            "'mode=tap,tapif='\"${macvtap0}\"',mac=x y'"
        );
    }

    #[test]
    fn every_template_loads() {
        let renderer = Renderer::new();
        for (name, _) in TEMPLATES {
            assert!(renderer.shell.get_template_names().any(|n| n == *name));
        }
    }
}
