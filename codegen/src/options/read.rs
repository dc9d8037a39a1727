//! Walks module files for option declarations: `options.microvm.x = mkOption { … }`, nested
//! `options = { microvm = { … }; }`, submodules inside `listOf`/`attrsOf`/`nullOr`, through
//! `let`, `with` and `inherit`, and the removed/renamed options of `imports`.

use std::path::Path;

use super::eval::{Env, Loader};
use super::{
    DefaultValue, OptionDecl, OptionTree, OptionType, ReadProblem, RemovedOption, RenameKind,
    RenamedOption, Source,
};
use crate::diagnostic::Lines;
use crate::nix_syntax::{self, BinOp, Entry, Expr, ExprKind, Text};

/// How far a name is followed through `let` bindings before giving up.
const MAX_INDIRECTION: usize = 16;

/// Reads the declarations of module files. Files that are not valid Nix are reported and
/// skipped.
pub fn read_sources(sources: &[Source]) -> (OptionTree, Vec<ReadProblem>) {
    nix_syntax::with_deep_stack(|| read_sources_here(sources))
}

fn read_sources_here(sources: &[Source]) -> (OptionTree, Vec<ReadProblem>) {
    let mut loader = Loader::default();
    let mut tree = OptionTree::default();
    let mut problems = Vec::new();
    for source in sources {
        let parsed = nix_syntax::parse(&source.text);
        if let Some(error) = parsed.errors.first() {
            problems.push(ReadProblem {
                file: source.name.clone(),
                line: Lines::new(&source.text).line_col(error.span.start).0,
                message: error.message.clone(),
            });
            continue;
        }
        let Some(root) = parsed.root else { continue };
        let dir = source.path.parent().unwrap_or(Path::new("."));
        let mut reader = Reader {
            loader: &mut loader,
            file: &source.name,
            text: &source.text,
            lines: Lines::new(&source.text),
            tree: &mut tree,
        };
        reader.module(&root, &Env::file(dir), 0);
    }
    tree.sort();
    (tree, problems)
}

/// The options a user's file declares wherever they are (in modules inside a flake, in
/// `nixosSystem` calls, …), for `lint`: options declared in the linted files are known.
pub fn declarations_in(name: &str, path: &Path, text: &str, root: &Expr) -> OptionTree {
    let mut loader = Loader::default();
    let mut tree = OptionTree::default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut reader = Reader {
        loader: &mut loader,
        file: name,
        text,
        lines: Lines::new(text),
        tree: &mut tree,
    };
    reader.anywhere(root, &Env::file(dir), 0);
    tree.sort();
    tree
}

struct Reader<'a> {
    loader: &'a mut Loader,
    file: &'a str,
    text: &'a str,
    lines: Lines<'a>,
    tree: &'a mut OptionTree,
}

/// A type's name without its `lib.types.` prefix: `lib.types.ints.positive` → `ints.positive`.
fn type_name(name: &str) -> &str {
    name.strip_prefix("lib.types.")
        .or_else(|| name.strip_prefix("types."))
        .or_else(|| name.strip_prefix("lib."))
        .unwrap_or(name)
}

fn names(keys: &[nix_syntax::Key]) -> Option<Vec<String>> {
    keys.iter().map(|k| k.name.clone()).collect()
}

/// Source text on one line: runs of whitespace become one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Source text with the indentation of its continuation lines removed.
fn dedent(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").trim_end().to_owned();
    let rest: Vec<&str> = lines.collect();
    let indent = rest
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = first;
    for line in rest {
        out.push('\n');
        out.push_str(line.get(indent..).unwrap_or(line.trim_start()).trim_end());
    }
    out
}

/// A Nix string literal for `s`.
pub(crate) fn nix_string(s: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Reader<'_> {
    fn source(&self, expr: &Expr) -> &str {
        self.text.get(expr.span.clone()).unwrap_or("")
    }

    fn line(&self, offset: usize) -> usize {
        self.lines.line_col(offset).0
    }

    /// A module: a function or set whose `options` declares and whose `imports` may remove.
    fn module(&mut self, expr: &Expr, env: &Env, depth: usize) {
        if depth > MAX_INDIRECTION {
            return;
        }
        match &expr.kind {
            ExprKind::Lambda { param, body } => {
                self.module(body, &env.with_params(param), depth + 1);
            }
            ExprKind::LetIn { entries, body } => {
                self.module(body, &env.with_bindings(entries), depth + 1);
            }
            ExprKind::With { body, .. } => self.module(body, env, depth + 1),
            ExprKind::AttrSet { entries, .. } => {
                for entry in entries {
                    let Entry::Binding(binding) = entry else {
                        continue;
                    };
                    let Some(path) = names(&binding.path) else {
                        continue;
                    };
                    match path.first().map(String::as_str) {
                        Some("options") => self.options_at(
                            &binding.value,
                            path[1..].to_vec(),
                            binding.span.start,
                            env,
                            0,
                        ),
                        Some("imports") if path.len() == 1 => {
                            self.imports(&binding.value, env, depth);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Every `options = …` and `imports = […]` anywhere in a file.
    fn anywhere(&mut self, expr: &Expr, env: &Env, depth: usize) {
        if depth > nix_syntax::MAX_DEPTH {
            return;
        }
        let d = depth + 1;
        match &expr.kind {
            ExprKind::AttrSet { entries, rec } => {
                let inner = if *rec {
                    env.with_bindings(entries)
                } else {
                    env.clone()
                };
                for entry in entries {
                    match entry {
                        Entry::Binding(binding) => {
                            let path = names(&binding.path).unwrap_or_default();
                            match path.first().map(String::as_str) {
                                Some("options") => self.options_at(
                                    &binding.value,
                                    path[1..].to_vec(),
                                    binding.span.start,
                                    &inner,
                                    0,
                                ),
                                Some("imports") if path.len() == 1 => {
                                    self.removals(&binding.value, &inner);
                                    self.anywhere(&binding.value, &inner, d);
                                }
                                _ => self.anywhere(&binding.value, &inner, d),
                            }
                        }
                        Entry::Inherit(inherit) => {
                            if let Some(from) = &inherit.from {
                                self.anywhere(from, &inner, d);
                            }
                        }
                    }
                }
            }
            ExprKind::LetIn { entries, body } => {
                let inner = env.with_bindings(entries);
                for entry in entries {
                    if let Entry::Binding(binding) = entry {
                        self.anywhere(&binding.value, &inner, d);
                    }
                }
                self.anywhere(body, &inner, d);
            }
            ExprKind::Lambda { param, body } => self.anywhere(body, &env.with_params(param), d),
            _ => {
                for child in expr.children() {
                    self.anywhere(child, env, d);
                }
            }
        }
    }

    fn imports(&mut self, value: &Expr, env: &Env, depth: usize) {
        self.removals(value, env);
        if let ExprKind::List(items) = &value.kind {
            for item in items {
                if matches!(
                    item.kind,
                    ExprKind::Lambda { .. } | ExprKind::AttrSet { .. } | ExprKind::LetIn { .. }
                ) {
                    self.module(item, env, depth + 1);
                }
            }
        }
    }

    /// `mkRemovedOptionModule`, `mkRenamedOptionModule` & co. in an `imports` list.
    fn removals(&mut self, value: &Expr, env: &Env) {
        let ExprKind::List(items) = &value.kind else {
            return;
        };
        for item in items {
            let Some((name, args)) = item.named_call() else {
                continue;
            };
            let line = self.line(item.span.start);
            let loc = |reader: &mut Self, e: &Expr| reader.loader.eval_strings(e, env);
            match (name.as_str(), args.as_slice()) {
                ("mkRemovedOptionModule", [from, message]) => {
                    if let Some(from) = loc(self, from) {
                        let message = self.text_of(message);
                        self.tree.removed.push(RemovedOption {
                            name: from.join("."),
                            loc: from,
                            message,
                            file: self.file.to_owned(),
                            line,
                        });
                    }
                }
                ("mkRenamedOptionModule", [from, to]) => {
                    let (from, to) = (loc(self, from), loc(self, to));
                    self.renamed(from, to, RenameKind::Renamed, line);
                }
                ("mkAliasOptionModule", [from, to]) => {
                    let (from, to) = (loc(self, from), loc(self, to));
                    self.renamed(from, to, RenameKind::Alias, line);
                }
                ("mkChangedOptionModule", [from, to, _]) => {
                    let (from, to) = (loc(self, from), loc(self, to));
                    self.renamed(from, to, RenameKind::Changed, line);
                }
                ("mkMergedOptionModule", [froms, to, _]) => {
                    let to = loc(self, to);
                    if let ExprKind::List(froms) = &froms.kind {
                        for from in froms {
                            let from = loc(self, from);
                            self.renamed(from, to.clone(), RenameKind::Changed, line);
                        }
                    }
                }
                ("mkRenamedOptionModuleWith", [set]) => {
                    let from = self.field(set, "from");
                    let to = self.field(set, "to");
                    if let (Some(from), Some(to)) = (from, to) {
                        let (from, to) = (loc(self, &from), loc(self, &to));
                        self.renamed(from, to, RenameKind::Renamed, line);
                    }
                }
                _ => {}
            }
        }
    }

    fn renamed(
        &mut self,
        from: Option<Vec<String>>,
        to: Option<Vec<String>>,
        kind: RenameKind,
        line: usize,
    ) {
        if let (Some(from), Some(to)) = (from, to) {
            self.tree.renamed.push(RenamedOption {
                name: from.join("."),
                loc: from,
                to: to.join("."),
                kind,
                file: self.file.to_owned(),
                line,
            });
        }
    }

    /// The value of `name` in a set literal.
    fn field(&self, set: &Expr, name: &str) -> Option<Expr> {
        let ExprKind::AttrSet { entries, .. } = &set.kind else {
            return None;
        };
        entries.iter().find_map(|entry| match entry {
            Entry::Binding(b) if b.path.len() == 1 && b.path[0].is(name) => Some(b.value.clone()),
            Entry::Inherit(inherit) => inherit
                .bindings()
                .find_map(|(inherited, value)| (inherited == name).then_some(value)),
            _ => None,
        })
    }

    /// Declarations under an option path prefix: a set of further names, or a declaration.
    fn options_at(&mut self, expr: &Expr, path: Vec<String>, at: usize, env: &Env, hops: usize) {
        match &expr.kind {
            ExprKind::LetIn { entries, body } => {
                self.options_at(body, path, at, &env.with_bindings(entries), hops);
            }
            ExprKind::With { body, .. } => self.options_at(body, path, at, env, hops),
            ExprKind::AttrSet { entries, .. } => {
                for entry in entries {
                    let Entry::Binding(binding) = entry else {
                        continue;
                    };
                    let Some(keys) = names(&binding.path) else {
                        continue;
                    };
                    let mut sub = path.clone();
                    sub.extend(keys);
                    self.options_at(&binding.value, sub, binding.span.start, env, hops);
                }
            }
            ExprKind::BinOp {
                op: BinOp::Update,
                lhs,
                rhs,
            } => {
                self.options_at(lhs, path.clone(), at, env, hops);
                self.options_at(rhs, path, at, env, hops);
            }
            ExprKind::Apply { .. } => self.declaration(expr, path, at, env),
            ExprKind::Ident(name) if hops < MAX_INDIRECTION => {
                if let Some((bound, bound_env)) = env.lookup(name) {
                    self.options_at(&bound, path, at, &bound_env, hops + 1);
                }
            }
            _ => {}
        }
    }

    fn declaration(&mut self, expr: &Expr, path: Vec<String>, at: usize, env: &Env) {
        let Some((name, args)) = expr.named_call() else {
            return;
        };
        let line = self.line(at);
        let decl = match (name.as_str(), args.as_slice()) {
            ("mkOption", [attrs]) => {
                let get = |reader: &Self, field: &str| reader.field(attrs, field);
                let ty = match get(self, "type") {
                    Some(ty) => self.parse_type(&ty, &path, env, 0),
                    None => OptionType::Other {
                        text: "unspecified".into(),
                    },
                };
                let default = match (get(self, "default"), get(self, "defaultText")) {
                    (Some(default), _) if self.is_constant(&default, env) => {
                        Some(DefaultValue::Literal(render_constant(&default)))
                    }
                    (_, Some(text)) => Some(DefaultValue::Documented(self.text_of(&text))),
                    (Some(default), None) => {
                        Some(DefaultValue::Computed(dedent(self.source(&default))))
                    }
                    (None, None) => None,
                };
                let example = get(self, "example").map(|e| {
                    if self.is_constant(&e, env) {
                        render_constant(&e)
                    } else {
                        self.text_of(&e)
                    }
                });
                let flag = |reader: &Self, field: &str| {
                    get(reader, field).is_some_and(|v| v.ident() == Some("true"))
                };
                OptionDecl {
                    name: path.join("."),
                    loc: path.clone(),
                    default,
                    description: get(self, "description").map(|d| self.text_of(&d)),
                    example,
                    read_only: flag(self, "readOnly"),
                    internal: flag(self, "internal"),
                    file: self.file.to_owned(),
                    line,
                    ty,
                }
            }
            ("mkEnableOption", [what]) => OptionDecl {
                name: path.join("."),
                loc: path.clone(),
                ty: OptionType::Bool,
                default: Some(DefaultValue::Literal("false".into())),
                description: Some(format!("Whether to enable {}.", self.text_of(what))),
                example: Some("true".into()),
                read_only: false,
                internal: false,
                file: self.file.to_owned(),
                line,
            },
            ("mkPackageOption", [_pkgs, package, ..]) => {
                let package = match &package.kind {
                    ExprKind::Str(Text::Literal(name)) => name.clone(),
                    _ => self
                        .loader
                        .eval_strings(package, env)
                        .map_or_else(|| one_line(self.source(package)), |parts| parts.join(".")),
                };
                OptionDecl {
                    name: path.join("."),
                    loc: path.clone(),
                    ty: OptionType::Package,
                    default: Some(DefaultValue::Documented(format!("pkgs.{package}"))),
                    description: Some(format!("The {package} package to use.")),
                    example: None,
                    read_only: false,
                    internal: false,
                    file: self.file.to_owned(),
                    line,
                }
            }
            _ => return,
        };
        self.tree.options.push(decl);
    }

    /// The text a documentation field stands for: a string's contents, or the argument of
    /// `literalExpression`/`literalMD`/`mdDoc`, or else the expression as written.
    fn text_of(&self, expr: &Expr) -> String {
        match &expr.kind {
            ExprKind::Str(Text::Literal(text) | Text::Interpolated(text)) => text.trim().to_owned(),
            ExprKind::Apply { .. } => match expr.named_call() {
                Some((name, args))
                    if args.len() == 1
                        && matches!(
                            name.as_str(),
                            "literalExpression" | "literalExample" | "literalMD" | "mdDoc"
                        ) =>
                {
                    self.text_of(args[0])
                }
                _ => dedent(self.source(expr)),
            },
            _ => dedent(self.source(expr)),
        }
    }

    /// Whether an expression is a constant (no variables, no calls).
    fn is_constant(&self, expr: &Expr, env: &Env) -> bool {
        match &expr.kind {
            ExprKind::Str(Text::Literal(_))
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Path(Text::Literal(_)) => true,
            ExprKind::Negate(inner) => matches!(inner.kind, ExprKind::Int(_) | ExprKind::Float(_)),
            ExprKind::Ident(name) => {
                matches!(name.as_str(), "true" | "false" | "null") && env.lookup(name).is_none()
            }
            ExprKind::List(items) => items.iter().all(|i| self.is_constant(i, env)),
            ExprKind::AttrSet {
                rec: false,
                entries,
            } => entries.iter().all(|e| match e {
                Entry::Binding(b) => {
                    b.path.iter().all(|k| k.name.is_some()) && self.is_constant(&b.value, env)
                }
                Entry::Inherit(_) => false,
            }),
            _ => false,
        }
    }

    fn parse_type(&mut self, expr: &Expr, path: &[String], env: &Env, hops: usize) -> OptionType {
        let other = |reader: &Self| OptionType::Other {
            text: type_name(&one_line(reader.source(expr))).to_owned(),
        };
        if hops > MAX_INDIRECTION {
            return other(self);
        }
        match &expr.kind {
            ExprKind::With { body, .. } => self.parse_type(body, path, env, hops + 1),
            ExprKind::LetIn { entries, body } => {
                self.parse_type(body, path, &env.with_bindings(entries), hops + 1)
            }
            ExprKind::BinOp {
                op: BinOp::Update,
                lhs,
                ..
            } => self.parse_type(lhs, path, env, hops + 1),
            ExprKind::Ident(_) | ExprKind::Select { default: None, .. } => {
                let Some(name) = expr.dotted_name() else {
                    return other(self);
                };
                if let Some(simple) = simple_type(type_name(&name)) {
                    return simple;
                }
                if let Some(ident) = expr.ident()
                    && let Some((bound, bound_env)) = env.lookup(ident)
                    && bound.kind != ExprKind::Other
                {
                    return self.parse_type(&bound, path, &bound_env, hops + 1);
                }
                other(self)
            }
            ExprKind::Apply { .. } => {
                let Some((function, args)) = expr.call() else {
                    return other(self);
                };
                let Some(name) = function.dotted_name() else {
                    return other(self);
                };
                let sub = |segment: &str| {
                    let mut p = path.to_vec();
                    p.push(segment.to_owned());
                    p
                };
                match (type_name(&name), args.as_slice()) {
                    ("nullOr", [of]) => OptionType::NullOr {
                        of: Box::new(self.parse_type(of, path, env, hops + 1)),
                    },
                    ("listOf" | "nonEmptyListOf", [of]) => OptionType::ListOf {
                        of: Box::new(self.parse_type(of, &sub("*"), env, hops + 1)),
                    },
                    ("attrsOf" | "lazyAttrsOf", [of]) => OptionType::AttrsOf {
                        of: Box::new(self.parse_type(of, &sub("<name>"), env, hops + 1)),
                    },
                    ("uniq", [of]) | ("unique", [_, of]) | ("addCheck", [of, _]) => {
                        self.parse_type(of, path, env, hops + 1)
                    }
                    ("coercedTo", [_, _, to]) => self.parse_type(to, path, env, hops + 1),
                    ("either", [a, b]) => OptionType::OneOf {
                        of: vec![
                            self.parse_type(a, path, env, hops + 1),
                            self.parse_type(b, path, env, hops + 1),
                        ],
                    },
                    ("oneOf", [list]) => match &list.kind {
                        ExprKind::List(items) => OptionType::OneOf {
                            of: items
                                .iter()
                                .map(|t| self.parse_type(t, path, env, hops + 1))
                                .collect(),
                        },
                        _ => other(self),
                    },
                    ("enum", [values]) => OptionType::Enum {
                        values: self.loader.eval_strings(values, env),
                        text: one_line(self.source(values)),
                    },
                    ("functionTo", [of]) => OptionType::FunctionTo {
                        of: Box::new(self.parse_type(of, path, env, hops + 1)),
                    },
                    ("submodule", [module]) => match self.submodule(module, path, env, hops) {
                        Some(freeform) => OptionType::Submodule { freeform },
                        None => other(self),
                    },
                    ("submoduleWith", [attrs]) => {
                        let mut found = None;
                        if let Some(modules) = self.field(attrs, "modules")
                            && let ExprKind::List(items) = &modules.kind
                        {
                            for module in items {
                                if let Some(freeform) = self.submodule(module, path, env, hops) {
                                    found = Some(found.unwrap_or(false) || freeform);
                                }
                            }
                        }
                        match found {
                            Some(freeform) => OptionType::Submodule { freeform },
                            None => other(self),
                        }
                    }
                    ("deferredModuleWith", _) => OptionType::Module,
                    ("ints.between", [lo, hi]) => OptionType::Int {
                        name: type_name(&one_line(self.source(expr))).to_owned(),
                        min: lo.int_literal(),
                        max: hi.int_literal(),
                    },
                    (function @ ("strMatching" | "separatedString"), [_]) => OptionType::Str {
                        name: type_name(&one_line(self.source(expr))).to_owned(),
                        non_empty: false,
                        single_line: false,
                        joined: function == "separatedString",
                    },
                    _ => other(self),
                }
            }
            _ => other(self),
        }
    }

    /// Reads a submodule's options under `path`; `Some(freeform)` when the module is written
    /// out here (a set or a function returning one), `None` when it cannot be seen.
    fn submodule(
        &mut self,
        module: &Expr,
        path: &[String],
        env: &Env,
        hops: usize,
    ) -> Option<bool> {
        if hops > MAX_INDIRECTION {
            return None;
        }
        match &module.kind {
            ExprKind::Lambda { param, body } => {
                self.submodule(body, path, &env.with_params(param), hops + 1)
            }
            ExprKind::LetIn { entries, body } => {
                self.submodule(body, path, &env.with_bindings(entries), hops + 1)
            }
            ExprKind::With { body, .. } => self.submodule(body, path, env, hops + 1),
            ExprKind::Ident(name) => {
                let (bound, bound_env) = env.lookup(name)?;
                self.submodule(&bound, path, &bound_env, hops + 1)
            }
            ExprKind::AttrSet { entries, .. } => {
                let mut freeform = false;
                for entry in entries {
                    let Entry::Binding(binding) = entry else {
                        continue;
                    };
                    let Some(keys) = names(&binding.path) else {
                        continue;
                    };
                    match keys.first().map(String::as_str) {
                        Some("options") => {
                            let mut sub = path.to_vec();
                            sub.extend(keys[1..].iter().cloned());
                            self.options_at(&binding.value, sub, binding.span.start, env, 0);
                        }
                        Some("freeformType") => freeform = true,
                        Some("imports") => self.removals(&binding.value, env),
                        _ => {}
                    }
                }
                Some(freeform)
            }
            _ => None,
        }
    }
}

fn simple_type(name: &str) -> Option<OptionType> {
    let int = |name: &str, min: Option<i64>, max: Option<i64>| OptionType::Int {
        name: name.to_owned(),
        min,
        max,
    };
    let string = |non_empty: bool, single_line: bool, joined: bool| OptionType::Str {
        name: name.to_owned(),
        non_empty,
        single_line,
        joined,
    };
    Some(match name {
        "bool" => OptionType::Bool,
        "int" => int(name, None, None),
        "ints.positive" => int(name, Some(1), None),
        "ints.unsigned" => int(name, Some(0), None),
        "ints.u8" => int(name, Some(0), Some(255)),
        "ints.u16" => int(name, Some(0), Some(65535)),
        "ints.u32" => int(name, Some(0), Some(4_294_967_295)),
        "ints.s8" => int(name, Some(-128), Some(127)),
        "ints.s16" => int(name, Some(-32768), Some(32767)),
        "ints.s32" => int(name, Some(-2_147_483_648), Some(2_147_483_647)),
        "port" => int(name, Some(0), Some(65535)),
        "float" => OptionType::Float,
        "number" => OptionType::Number,
        "str" => string(false, false, false),
        // nixpkgs: `separatedString "\n"`, `separatedString ","`, `separatedString ":"`.
        "lines" | "commas" | "envVar" => string(false, false, true),
        "nonEmptyStr" => string(true, false, false),
        "singleLineStr" => string(false, true, false),
        "path" | "pathInStore" | "externalPath" => OptionType::Path,
        "package" => OptionType::Package,
        "attrs" => OptionType::Attrs,
        "deferredModule" => OptionType::Module,
        _ => return None,
    })
}

/// A constant as Nix text on one line.
fn render_constant(expr: &Expr) -> String {
    match &expr.kind {
        ExprKind::Str(Text::Literal(s)) => nix_string(s),
        ExprKind::Int(i) => i.to_string(),
        ExprKind::Float(f) => f.to_string(),
        ExprKind::Path(Text::Literal(p)) => p.clone(),
        ExprKind::Negate(inner) => format!("-{}", render_constant(inner)),
        ExprKind::Ident(name) => name.clone(),
        ExprKind::List(items) if items.is_empty() => "[ ]".into(),
        ExprKind::List(items) => format!(
            "[ {} ]",
            items
                .iter()
                .map(render_constant)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        ExprKind::AttrSet { entries, .. } if entries.is_empty() => "{ }".into(),
        ExprKind::AttrSet { entries, .. } => {
            let mut out = String::from("{");
            for entry in entries {
                if let Entry::Binding(b) = entry {
                    let key: Vec<String> = b
                        .path
                        .iter()
                        .map(|k| k.name.clone().unwrap_or_default())
                        .collect();
                    out.push_str(&format!(
                        " {} = {};",
                        key.join("."),
                        render_constant(&b.value)
                    ));
                }
            }
            out.push_str(" }");
            out
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> OptionTree {
        let (tree, problems) = read_sources(&[Source {
            name: "m.nix".into(),
            path: "/nonexistent/m.nix".into(),
            text: text.into(),
        }]);
        assert!(problems.is_empty(), "{problems:?}");
        tree
    }

    fn names(tree: &OptionTree) -> Vec<&str> {
        tree.options.iter().map(|o| o.name.as_str()).collect()
    }

    #[test]
    fn every_declaration_form() {
        let text = r#"{ lib, ... }:
            with lib;
            let
              inherit (lib) mkOption types;
              portType = types.submodule { options.port = mkOption { type = types.port; }; };
            in
            {
              imports = [
                (mkRemovedOptionModule [ "microvm" "old" ] "Use new.")
                (lib.mkRenamedOptionModule [ "microvm" "a" ] [ "microvm" "b" ])
                { options.microvm.imported = mkEnableOption "imported things"; }
              ];
              options = {
                microvm = {
                  plain = mkOption { type = types.int; default = 1; };
                  "quoted-name" = lib.mkOption { type = with types; nullOr str; };
                  nested.deeper = lib.options.mkOption { type = lib.types.bool; };
                  list = mkOption { type = types.listOf portType; };
                  attrs = mkOption {
                    type = types.attrsOf (types.submodule ({ name, ... }: {
                      options.inner = mkOption { type = types.enum [ "x" "y" ]; };
                    }));
                  };
                  maybe = mkOption { type = types.nullOr (types.submodule { options.z = mkOption { }; }); };
                  pkg = mkPackageOption pkgs "qemu" { };
                };
              };
              options.microvm.dotted.form = mkOption { type = types.str; description = "D"; };
              config.microvm.notAnOption = mkOption { };
            }"#;
        let tree = read(text);
        assert_eq!(
            names(&tree),
            [
                "microvm.attrs",
                "microvm.attrs.<name>.inner",
                "microvm.dotted.form",
                "microvm.imported",
                "microvm.list",
                "microvm.list.*.port",
                "microvm.maybe",
                "microvm.maybe.z",
                "microvm.nested.deeper",
                "microvm.pkg",
                "microvm.plain",
                "microvm.quoted-name",
            ]
        );
        let get = |n: &str| tree.options.iter().find(|o| o.name == n).unwrap();
        assert_eq!(get("microvm.quoted-name").ty.to_string(), "nullOr str");
        assert_eq!(get("microvm.list").ty.to_string(), "listOf submodule");
        assert_eq!(
            get("microvm.attrs.<name>.inner").ty.to_string(),
            r#"enum [ "x" "y" ]"#
        );
        assert_eq!(get("microvm.list.*.port").ty.to_string(), "port");
        assert_eq!(get("microvm.imported").ty, OptionType::Bool);
        assert_eq!(
            get("microvm.imported").description.as_deref(),
            Some("Whether to enable imported things.")
        );
        let dotted_line = text
            .lines()
            .position(|l| l.contains("dotted.form"))
            .unwrap()
            + 1;
        assert_eq!(get("microvm.dotted.form").line, dotted_line);
        assert_eq!(
            get("microvm.plain").default,
            Some(DefaultValue::Literal("1".into()))
        );
        assert_eq!(tree.removed[0].name, "microvm.old");
        assert_eq!(tree.removed[0].message, "Use new.");
        assert_eq!(tree.renamed[0].name, "microvm.a");
        assert_eq!(tree.renamed[0].to, "microvm.b");
    }

    #[test]
    fn defaults_literal_documented_or_computed() {
        let tree = read(
            r#"{ config, lib, ... }: {
              options.microvm = {
                a = lib.mkOption { default = [ "x" { y = -1; } ]; };
                b = lib.mkOption { default = config.foo; defaultText = lib.literalExpression "config.foo"; };
                c = lib.mkOption { default = config.bar or null; };
                d = lib.mkOption { default = "a\"b${"$"}{c}"; example = lib.literalExpression ''[ 1 ]''; };
              };
            }"#,
        );
        let defaults: Vec<_> = tree.options.iter().map(|o| o.default.clone()).collect();
        assert_eq!(
            defaults,
            [
                Some(DefaultValue::Literal(r#"[ "x" { y = -1; } ]"#.into())),
                Some(DefaultValue::Documented("config.foo".into())),
                Some(DefaultValue::Computed("config.bar or null".into())),
                Some(DefaultValue::Computed(r#""a\"b${"$"}{c}""#.into())),
            ]
        );
        assert_eq!(tree.options[3].example.as_deref(), Some("[ 1 ]"));
    }

    #[test]
    fn separated_strings_join_their_definitions() {
        let tree = read(
            r#"{ lib, ... }: with lib; {
              options.microvm = {
                a = mkOption { type = types.lines; };
                b = mkOption { type = types.commas; };
                c = mkOption { type = types.envVar; };
                d = mkOption { type = types.nullOr (types.separatedString " "); };
                e = mkOption { type = types.str; };
                f = mkOption { type = types.strMatching "[a-z]+"; };
                g = mkOption { type = types.nonEmptyStr; };
              };
            }"#,
        );
        let merges: Vec<(&str, bool)> = tree
            .options
            .iter()
            .map(|o| (o.name.as_str(), o.ty.merges()))
            .collect();
        assert_eq!(
            merges,
            [
                ("microvm.a", true),
                ("microvm.b", true),
                ("microvm.c", true),
                ("microvm.d", true),
                ("microvm.e", false),
                ("microvm.f", false),
                ("microvm.g", false),
            ]
        );
    }

    #[test]
    fn strings_render_as_nix() {
        assert_eq!(nix_string("a\"b\\c${d}\n$e"), r#""a\"b\\c\${d}\n$e""#);
    }
}
