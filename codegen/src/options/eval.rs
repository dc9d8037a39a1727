//! A very small, lazy evaluator for the string lists option declarations refer to, such as
//! `types.enum microvmLib.hypervisors` where `microvmLib = import ../../lib { inherit lib; }`.
//! It knows `let`, `rec`, attribute selection, lists, `++`, `//`, `import` of a file or
//! directory, and applying a function (whose arguments stay unknown). Everything else is
//! [`Value::Unknown`]: nothing is guessed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::nix_syntax::{self, BinOp, Entry, Expr, ExprKind, Param, Text};

/// A lexical scope: the bindings of a `let`, `rec` set or function, and the directory of the
/// file they are written in (for relative paths).
#[derive(Debug, Clone, Default)]
pub struct Env(Option<Rc<Frame>>);

#[derive(Debug)]
struct Frame {
    vars: HashMap<String, Expr>,
    dir: Rc<PathBuf>,
    parent: Env,
}

/// Marks a name bound to something unknowable here (a function argument).
fn unknown_expr() -> Expr {
    Expr {
        span: 0..0,
        kind: ExprKind::Other,
    }
}

impl Env {
    /// The scope at the top of a file in `dir`.
    pub fn file(dir: &Path) -> Env {
        Env(Some(Rc::new(Frame {
            vars: HashMap::new(),
            dir: Rc::new(dir.to_owned()),
            parent: Env(None),
        })))
    }

    fn dir(&self) -> Option<&Path> {
        self.0.as_ref().map(|f| f.dir.as_path())
    }

    fn with_vars(&self, vars: HashMap<String, Expr>) -> Env {
        let dir = self
            .0
            .as_ref()
            .map_or_else(|| Rc::new(PathBuf::new()), |f| f.dir.clone());
        Env(Some(Rc::new(Frame {
            vars,
            dir,
            parent: self.clone(),
        })))
    }

    /// The scope inside `let … in` or `rec { … }`: the bindings see each other.
    pub fn with_bindings(&self, entries: &[Entry]) -> Env {
        let mut vars = HashMap::new();
        for entry in entries {
            match entry {
                Entry::Binding(binding) => {
                    if let [key] = binding.path.as_slice()
                        && let Some(name) = &key.name
                    {
                        vars.insert(name.clone(), binding.value.clone());
                    }
                }
                // `inherit (from) a;` binds `a` to `from.a`; a bare `inherit a;` would refer to
                // itself here, so it is left to the outer scope.
                Entry::Inherit(inherit) if inherit.from.is_some() => {
                    for (name, value) in inherit.bindings() {
                        vars.insert(name.to_owned(), value);
                    }
                }
                Entry::Inherit(_) => {}
            }
        }
        self.with_vars(vars)
    }

    /// The scope inside a function: its arguments are unknown.
    pub fn with_params(&self, param: &Param) -> Env {
        let mut vars = HashMap::new();
        match param {
            Param::Ident(name) => {
                vars.insert(name.clone(), unknown_expr());
            }
            Param::Pattern { names, bind, .. } => {
                for name in names.iter().chain(bind) {
                    vars.insert(name.clone(), unknown_expr());
                }
            }
        }
        self.with_vars(vars)
    }

    /// The expression a name is bound to and the scope it is evaluated in.
    pub fn lookup(&self, name: &str) -> Option<(Expr, Env)> {
        let mut current = self.0.clone();
        while let Some(frame) = current {
            if let Some(expr) = frame.vars.get(name) {
                return Some((expr.clone(), Env(Some(frame.clone()))));
            }
            current = frame.parent.0.clone();
        }
        None
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    Path(PathBuf),
    List(Vec<(Expr, Env)>),
    Set(Vec<(String, Expr, Env)>),
    Lambda(Expr, Env, Param),
    Unknown,
}

/// Parsed files, by path, so a file imported twice is read once.
#[derive(Debug, Default)]
pub struct Loader {
    files: HashMap<PathBuf, Option<Expr>>,
    depth: usize,
}

/// Evaluation steps one constant may take; a huge expression gives up.
const FUEL: usize = 10_000;
/// How deeply evaluation may nest (a cycle of names gives up here).
const MAX_EVAL_DEPTH: usize = 128;

impl Loader {
    fn load(&mut self, path: &Path) -> Option<(Expr, Env)> {
        let path = if path.is_dir() {
            path.join("default.nix")
        } else {
            path.to_owned()
        };
        let expr = self
            .files
            .entry(path.clone())
            .or_insert_with(|| {
                let text = crate::input_file::read_to_string(&path, crate::input_file::NIX).ok()?;
                nix_syntax::parse(&text).root
            })
            .clone()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Some((expr, Env::file(dir)))
    }

    /// The list an expression evaluates to, each element evaluated; `None` when the list or
    /// any element is unknown.
    pub fn eval_strings(&mut self, expr: &Expr, env: &Env) -> Option<Vec<String>> {
        let mut fuel = FUEL;
        let Value::List(items) = self.eval_with(expr, env, &mut fuel) else {
            return None;
        };
        items
            .iter()
            .map(
                |(item, item_env)| match self.eval_with(item, item_env, &mut fuel) {
                    Value::Str(s) => Some(s),
                    _ => None,
                },
            )
            .collect()
    }

    fn eval_with(&mut self, expr: &Expr, env: &Env, fuel: &mut usize) -> Value {
        if *fuel == 0 || self.depth >= MAX_EVAL_DEPTH {
            return Value::Unknown;
        }
        *fuel -= 1;
        self.depth += 1;
        let value = self.eval_step(expr, env, fuel);
        self.depth -= 1;
        value
    }

    fn eval_step(&mut self, expr: &Expr, env: &Env, fuel: &mut usize) -> Value {
        match &expr.kind {
            ExprKind::Str(Text::Literal(s)) => Value::Str(s.clone()),
            ExprKind::Path(Text::Literal(p)) => match env.dir() {
                Some(dir) if p.starts_with("./") || p.starts_with("../") => {
                    Value::Path(dir.join(p))
                }
                _ if p.starts_with('/') => Value::Path(PathBuf::from(p)),
                _ => Value::Unknown,
            },
            ExprKind::Ident(name) => match env.lookup(name) {
                Some((bound, bound_env)) => self.eval_with(&bound, &bound_env, fuel),
                None => Value::Unknown,
            },
            ExprKind::List(items) => {
                Value::List(items.iter().map(|i| (i.clone(), env.clone())).collect())
            }
            ExprKind::AttrSet { rec, entries } => {
                let inner = if *rec {
                    env.with_bindings(entries)
                } else {
                    env.clone()
                };
                let mut set = Vec::new();
                for entry in entries {
                    match entry {
                        Entry::Binding(binding) => {
                            if let [key] = binding.path.as_slice()
                                && let Some(name) = &key.name
                            {
                                set.push((name.clone(), binding.value.clone(), inner.clone()));
                            }
                        }
                        // Inherited names are evaluated in the enclosing scope (a bare
                        // `inherit x;` takes `x` from there).
                        Entry::Inherit(inherit) => {
                            for (name, value) in inherit.bindings() {
                                set.push((name.to_owned(), value, env.clone()));
                            }
                        }
                    }
                }
                Value::Set(set)
            }
            ExprKind::LetIn { entries, body } => {
                let inner = env.with_bindings(entries);
                self.eval_with(body, &inner, fuel)
            }
            ExprKind::With { body, .. } | ExprKind::Assert { body, .. } => {
                self.eval_with(body, env, fuel)
            }
            ExprKind::Select {
                expr: target,
                path,
                default,
            } => {
                let mut value = self.eval_with(target, env, fuel);
                for key in path {
                    let Some(name) = &key.name else {
                        return Value::Unknown;
                    };
                    value = match value {
                        Value::Set(set) => match set.iter().rev().find(|(n, _, _)| n == name) {
                            Some((_, found, found_env)) => {
                                let (found, found_env) = (found.clone(), found_env.clone());
                                self.eval_with(&found, &found_env, fuel)
                            }
                            None => match default {
                                Some(d) => return self.eval_with(d, env, fuel),
                                None => Value::Unknown,
                            },
                        },
                        _ => Value::Unknown,
                    };
                }
                value
            }
            ExprKind::Lambda { param, body } => {
                Value::Lambda((**body).clone(), env.clone(), param.clone())
            }
            ExprKind::Apply { .. } => {
                let Some((function, args)) = expr.call() else {
                    return Value::Unknown;
                };
                let mut value = match function.dotted_name().as_deref() {
                    Some("import" | "builtins.import") if env.lookup("import").is_none() => {
                        let Some((first, rest)) = args.split_first() else {
                            return Value::Unknown;
                        };
                        let Value::Path(path) = self.eval_with(first, env, fuel) else {
                            return Value::Unknown;
                        };
                        let Some((root, root_env)) = self.load(&path) else {
                            return Value::Unknown;
                        };
                        let mut value = self.eval_with(&root, &root_env, fuel);
                        for _ in rest {
                            value = self.apply(value, fuel);
                        }
                        return value;
                    }
                    _ => self.eval_with(function, env, fuel),
                };
                for _ in &args {
                    value = self.apply(value, fuel);
                }
                value
            }
            ExprKind::BinOp { op, lhs, rhs } => {
                let left = self.eval_with(lhs, env, fuel);
                let right = self.eval_with(rhs, env, fuel);
                match (op, left, right) {
                    (BinOp::Concat, Value::List(mut a), Value::List(b)) => {
                        a.extend(b);
                        Value::List(a)
                    }
                    (BinOp::Update, Value::Set(mut a), Value::Set(b)) => {
                        a.extend(b);
                        Value::Set(a)
                    }
                    _ => Value::Unknown,
                }
            }
            _ => Value::Unknown,
        }
    }

    /// Applies a function to an argument it does not look at (here: one it cannot know).
    fn apply(&mut self, function: Value, fuel: &mut usize) -> Value {
        match function {
            Value::Lambda(body, env, param) => {
                let inner = env.with_params(&param);
                self.eval_with(&body, &inner, fuel)
            }
            _ => Value::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_list(text: &str) -> Option<Vec<String>> {
        let expr = nix_syntax::parse(text).root.unwrap();
        Loader::default().eval_strings(&expr, &Env::file(Path::new("/nonexistent")))
    }

    #[test]
    fn follows_let_rec_select_and_concat() {
        assert_eq!(
            eval_list(r#"let a = [ "x" ]; s = rec { b = a ++ c; c = [ "y" ]; }; in s.b"#),
            Some(vec!["x".into(), "y".into()])
        );
        assert_eq!(
            eval_list(r#"let f = { lib }: { l = [ "z" ]; }; in (f { }).l"#),
            Some(vec!["z".into()])
        );
    }

    #[test]
    fn unknowns_stay_unknown() {
        assert_eq!(eval_list("x: [ x ]"), None);
        assert_eq!(eval_list(r#"let f = x: [ x ]; in f "a""#), None);
        assert_eq!(eval_list("builtins.attrNames { a = 1; }"), None);
        assert_eq!(
            eval_list("let a = a; in a"),
            None,
            "a cycle stops at MAX_EVAL_DEPTH"
        );
    }

    #[test]
    fn imports_files_relative_to_the_importer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(
            dir.path().join("lib/default.nix"),
            "{ lib }: rec { hypervisors = import ./list.nix; }",
        )
        .unwrap();
        std::fs::write(dir.path().join("lib/list.nix"), r#"[ "qemu" "crosvm" ]"#).unwrap();
        let expr = nix_syntax::parse("let l = import ./lib { inherit lib; }; in l.hypervisors")
            .root
            .unwrap();
        assert_eq!(
            Loader::default().eval_strings(&expr, &Env::file(dir.path())),
            Some(vec!["qemu".into(), "crosvm".into()])
        );
    }
}
