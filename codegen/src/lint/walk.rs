//! Finds module positions and the `microvm.*` settings in them, checks each setting against
//! the option it sets, and records the literal values for the checks that combine settings.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::known::{Known, Node};
use super::{Finding, codes};
use crate::json_path::{JsonPath, Segment};
use crate::nix_syntax::{BinOp, Entry, Expr, ExprKind, Key, Param, Span, Text};
use crate::options::OptionType;
use crate::suggest;

/// How a definition applies: under `mkIf` (or an `if`), and at which priority (`mkForce` is
/// 50, a plain definition 100, `mkDefault` 1000; `None`: plain).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub conditional: bool,
    pub priority: Option<u32>,
}

/// The priority of a plain definition.
const PLAIN_PRIORITY: u32 = 100;
/// The priority of `mkOverride` with a priority that is not a literal: as weak as any.
const UNKNOWN_PRIORITY: u32 = u32::MAX;

impl Flags {
    fn priority(self) -> u32 {
        self.priority.unwrap_or(PLAIN_PRIORITY)
    }

    /// Whether the definition certainly applies unless something stronger overrides it.
    fn plain(self) -> bool {
        !self.conditional && self.priority() <= PLAIN_PRIORITY
    }

    /// The outermost priority wrapper wins.
    fn at_priority(self, priority: u32) -> Flags {
        Flags {
            priority: Some(self.priority.unwrap_or(priority)),
            ..self
        }
    }
}

/// Where a value is checked, as it travels down the walk: the node of the option tree it is
/// checked against, the option path written so far (`microvm`, `shares`, `*`), the JSON path
/// its facts are recorded at, how it is defined, and the VM it belongs to.
#[derive(Debug, Clone, Copy)]
struct At<'a, 'p> {
    node: &'a Node,
    loc: &'p [String],
    path: &'p JsonPath,
    flags: Flags,
    scope: usize,
}

/// The literal values one VM's configuration sets, by path (`$.microvm.shares[0].proto`).
#[derive(Debug, Default)]
pub struct Facts {
    /// Plain (or stronger) literal values, with the priority they were defined at.
    pub values: BTreeMap<JsonPath, (Value, Span, u32)>,
    /// Paths with a weak definition (`mkDefault`), which some module may override.
    pub weak: BTreeMap<JsonPath, OptionType>,
    /// Paths set to different values by two definitions.
    pub conflicted: BTreeSet<JsonPath>,
    /// Paths whose value is not a literal, or only conditionally or weakly defined, with the
    /// option's type.
    pub unknown: BTreeMap<JsonPath, OptionType>,
    /// Where list elements and lists are written, for pointing at them.
    pub spans: BTreeMap<JsonPath, Span>,
    /// Literal elements of each list of submodules.
    pub list_len: BTreeMap<JsonPath, usize>,
}

/// The settings of one VM: a file that is a module, one `modules` list, or one
/// `microvm.vms.<name>`.
#[derive(Debug, Default)]
pub struct Scope {
    /// The scope whose `microvm.vms` declares this one, when its name is known.
    pub parent: Option<usize>,
    pub facts: Facts,
}

pub struct Walker<'a> {
    known: &'a Known,
    file: usize,
    findings: Vec<Finding>,
    scopes: Vec<Scope>,
    vm_scopes: HashMap<(usize, JsonPath), usize>,
    /// Checking against one alternative of `oneOf`: findings are collected, nothing recorded.
    trial: bool,
    /// Checking a value that has no place among the facts (a list element under `mkIf` or
    /// `mkDefault`, or not a literal): findings are reported, nothing is recorded.
    unplaced: bool,
    /// How deeply the walk is nested now, across all its recursive steps.
    nesting: usize,
    /// Findings about a value that is read only where a sibling setting has some value, with
    /// the scope and path of the value: decided in `finish`, when every sibling is known.
    lazy: Vec<(usize, JsonPath, Finding)>,
}

/// `shares.*.securityModel` is read only on 9p shares (microvm.nix never reads it on
/// virtiofs ones, and neither does the runner spec), so a wrong value there is certain to fail
/// only when the share is certainly 9p.
const SECURITY_MODEL: &str = "microvm.shares.*.securityModel";

/// Beyond this nesting (of sets, lists, modules, wrappers together) the walk stops: no real
/// configuration comes close, and the stack stays bounded. It is the walk's only bound: the
/// steps that do not count towards it each go down the syntax tree (which `nix_syntax` cuts
/// off at its `MAX_DEPTH`) or an option's type.
const MAX_NESTING: usize = 400;

/// What a value is, as far as the syntax tells.
enum Lit<'e> {
    Null,
    Bool(bool),
    Int(i64),
    Float,
    /// `None`: made with `${…}`.
    Str(Option<&'e str>),
    Path,
    List,
    Set,
    Lambda,
    Unknown,
}

impl Lit<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Lit::Null => "null",
            Lit::Bool(_) => "a boolean",
            Lit::Int(_) => "an integer",
            Lit::Float => "a float",
            Lit::Str(_) => "a string",
            Lit::Path => "a path",
            Lit::List => "a list",
            Lit::Set => "an attribute set",
            Lit::Lambda => "a function",
            Lit::Unknown => "a value",
        }
    }
}

fn classify(expr: &Expr) -> Lit<'_> {
    if let Some(i) = expr.int_literal() {
        return Lit::Int(i);
    }
    match &expr.kind {
        ExprKind::Ident(name) => match name.as_str() {
            "null" => Lit::Null,
            "true" => Lit::Bool(true),
            "false" => Lit::Bool(false),
            _ => Lit::Unknown,
        },
        ExprKind::Float(_) => Lit::Float,
        ExprKind::Negate(inner) if matches!(inner.kind, ExprKind::Float(_)) => Lit::Float,
        ExprKind::Str(Text::Literal(s)) => Lit::Str(Some(s)),
        ExprKind::Str(Text::Interpolated(_)) => Lit::Str(None),
        ExprKind::Path(_) => Lit::Path,
        ExprKind::List(_) => Lit::List,
        ExprKind::AttrSet { .. } => Lit::Set,
        ExprKind::Lambda { .. } => Lit::Lambda,
        ExprKind::BinOp {
            op: BinOp::Concat,
            lhs,
            rhs,
        } if matches!(lhs.kind, ExprKind::List(_)) || matches!(rhs.kind, ExprKind::List(_)) => {
            Lit::List
        }
        ExprKind::BinOp {
            op: BinOp::Update,
            lhs,
            rhs,
        } if matches!(lhs.kind, ExprKind::AttrSet { .. })
            || matches!(rhs.kind, ExprKind::AttrSet { .. }) =>
        {
            Lit::Set
        }
        _ => Lit::Unknown,
    }
}

/// The definitions a value stands for, through `mkIf`, `mkMerge`, `mkDefault`, `mkForce`,
/// `mkOverride`, `mkBefore`/`mkAfter`/`mkOrder`, `if … then … else`, `let` and `with`.
fn definitions<'e>(expr: &'e Expr, flags: Flags, out: &mut Vec<(&'e Expr, Flags)>) {
    match &expr.kind {
        ExprKind::LetIn { body, .. } | ExprKind::With { body, .. } => {
            definitions(body, flags, out);
        }
        ExprKind::If {
            then, otherwise, ..
        } => {
            let conditional = Flags {
                conditional: true,
                ..flags
            };
            definitions(then, conditional, out);
            definitions(otherwise, conditional, out);
        }
        ExprKind::Apply { .. } => match expr.named_call() {
            Some((name, args)) => match (name.as_str(), args.as_slice()) {
                ("mkIf", [_, value]) => definitions(
                    value,
                    Flags {
                        conditional: true,
                        ..flags
                    },
                    out,
                ),
                ("mkDefault", [value]) => definitions(value, flags.at_priority(1000), out),
                ("mkOptionDefault", [value]) => {
                    definitions(value, flags.at_priority(1500), out);
                }
                ("mkForce", [value]) => definitions(value, flags.at_priority(50), out),
                ("mkVMOverride", [value]) => definitions(value, flags.at_priority(10), out),
                ("mkOverride", [priority, value]) => {
                    let priority = match priority.kind {
                        ExprKind::Int(p) => u32::try_from(p).unwrap_or(UNKNOWN_PRIORITY),
                        _ => UNKNOWN_PRIORITY,
                    };
                    definitions(value, flags.at_priority(priority), out);
                }
                ("mkBefore" | "mkAfter", [value]) | ("mkOrder", [_, value]) => {
                    definitions(value, flags, out);
                }
                ("mkMerge", [list]) => match &list.kind {
                    ExprKind::List(items) => {
                        for item in items {
                            definitions(item, flags, out);
                        }
                    }
                    _ => out.push((list, flags)),
                },
                _ => out.push((expr, flags)),
            },
            None => out.push((expr, flags)),
        },
        _ => out.push((expr, flags)),
    }
}

/// Whether a function is a module: `{ config, lib, pkgs, ... }:` (also with `self`, passed by
/// `specialArgs`) and `{ foo, ... }:` are; `{ self, nixpkgs, ... }:` and `inputs@{ self, ... }:`
/// (flake outputs) are not, unless what they return sets `microvm.*`; and any function that
/// returns settings is one — a generator such as `mkVm = { name, id }: { microvm = …; }`, whose
/// result is used as a module or as a VM of `microvm.vms`.
fn is_module_function(param: &Param, body: &Expr) -> bool {
    let shaped_like_one = match param {
        Param::Ident(_) => false,
        Param::Pattern {
            names, ellipsis, ..
        } => {
            let module_args = ["config", "lib", "pkgs", "options", "modulesPath"];
            names.iter().any(|n| module_args.contains(&n.as_str()))
                || (*ellipsis && !names.iter().any(|n| n == "self"))
        }
    };
    shaped_like_one || returns_settings(body)
}

/// Whether a value (through functions, `let` and `with`) is a set that sets `microvm.*` as a
/// module or a VM of `microvm.vms` does: `microvm…`, `config.microvm…` or
/// `config = { microvm… }`.
fn returns_settings(expr: &Expr) -> bool {
    let sets_microvm = |entries: &[Entry]| {
        entries
            .iter()
            .any(|e| matches!(e, Entry::Binding(b) if first_key(&b.path) == Some("microvm")))
    };
    match &expr.kind {
        ExprKind::Lambda { body, .. }
        | ExprKind::LetIn { body, .. }
        | ExprKind::With { body, .. } => returns_settings(body),
        ExprKind::AttrSet { entries, .. } => entries.iter().any(|entry| {
            let Entry::Binding(b) = entry else {
                return false;
            };
            match first_key(&b.path) {
                Some("microvm") => true,
                Some("config") if b.path.len() > 1 => first_key(&b.path[1..]) == Some("microvm"),
                Some("config") => {
                    let mut defs = Vec::new();
                    definitions(&b.value, Flags::default(), &mut defs);
                    defs.iter().any(|(def, _)| {
                        matches!(&def.kind, ExprKind::AttrSet { entries, .. } if sets_microvm(entries))
                    })
                }
                _ => false,
            }
        }),
        _ => false,
    }
}

/// `pkgs.qemu`: one attribute of the package set, which is a package (or a set of them), never
/// a string. `pkgs.system` is the one string there; `pkgs.x or y` may be anything.
fn pkgs_attribute(expr: &Expr) -> Option<&str> {
    let ExprKind::Select {
        expr: base,
        path,
        default: None,
    } = &expr.kind
    else {
        return None;
    };
    match (&base.kind, path.as_slice()) {
        (ExprKind::Ident(pkgs), [key]) if pkgs == "pkgs" => {
            key.name.as_deref().filter(|name| *name != "system")
        }
        _ => None,
    }
}

fn first_key(keys: &[Key]) -> Option<&str> {
    keys.first().and_then(|k| k.name.as_deref())
}

/// How an attribute whose name is not known is shown: one made with `${…}`, or one of a set
/// that a function builds.
const UNNAMED: &str = "<name>";

/// The facts' path key of an attribute whose name is not known: one of its own for each place
/// it is written, so that two such VMs are never taken for one.
fn unnamed_key(span: &Span) -> String {
    format!("{UNNAMED}@{}", span.start)
}

fn is_unnamed(path: &JsonPath) -> bool {
    path.0.iter().any(|segment| {
        matches!(segment, Segment::Key(key) if key.starts_with(UNNAMED) && key.len() > UNNAMED.len())
    })
}

/// An attribute's path key and how it is shown.
fn attr_key(key: &Key) -> (String, &str) {
    match key.name.as_deref() {
        Some(name) => (name.to_owned(), name),
        None => (unnamed_key(&key.span), UNNAMED),
    }
}

/// What a function that builds an attribute set puts in it, as far as the syntax tells.
enum Built<'e> {
    /// One value of the set, under a name not known: `mapAttrs (name: v: VALUE) …`.
    Value(&'e Expr),
    /// A set whose `value…` attributes are one value of the set: `{ name = …; value = …; }`.
    Pair(&'e Expr),
    /// A set literal merged into the result: `acc // { ${name} = VALUE; }`.
    Set(&'e Expr),
}

/// The body of a function of `arity` arguments, when it is written out as a lambda.
fn lambda_body(function: &Expr, arity: usize) -> Option<&Expr> {
    let mut expr = function;
    for _ in 0..arity {
        match &expr.kind {
            ExprKind::Lambda { body, .. } => expr = body,
            _ => return None,
        }
    }
    Some(expr)
}

/// What an attribute set built by `mapAttrs`, `mapAttrs'`, `genAttrs`, `listToAttrs` or a fold
/// (`foldl'`, `foldl`, `foldr` merging sets into the accumulator) holds, also merged with `//`.
fn built_values<'e>(expr: &'e Expr, out: &mut Vec<Built<'e>>) {
    match &expr.kind {
        ExprKind::BinOp {
            op: BinOp::Update,
            lhs,
            rhs,
        } => {
            for side in [lhs, rhs] {
                match side.kind {
                    ExprKind::AttrSet { .. } => out.push(Built::Set(side)),
                    _ => built_values(side, out),
                }
            }
        }
        ExprKind::LetIn { body, .. } | ExprKind::With { body, .. } => built_values(body, out),
        ExprKind::Apply { .. } => {
            let Some((name, args)) = expr.named_call() else {
                return;
            };
            match (name.as_str(), args.as_slice()) {
                ("mapAttrs", [function, _]) => {
                    out.extend(lambda_body(function, 2).map(Built::Value));
                }
                ("genAttrs", [_, function]) => {
                    out.extend(lambda_body(function, 1).map(Built::Value));
                }
                ("mapAttrs'", [function, _]) => {
                    out.extend(lambda_body(function, 2).and_then(name_value_pair));
                }
                ("listToAttrs", [list]) => built_pairs(list, out),
                ("foldl'" | "foldl" | "foldr", [function, initial, _]) => {
                    if let Some(body) = lambda_body(function, 2) {
                        built_values(body, out);
                    }
                    match initial.kind {
                        ExprKind::AttrSet { .. } => out.push(Built::Set(initial)),
                        _ => built_values(initial, out),
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// The name-value pairs of a list given to `listToAttrs`: written out, or made by `map`,
/// `imap0`, `imap1`, `mapAttrsToList` or `concatMap`, also joined with `++`.
fn built_pairs<'e>(list: &'e Expr, out: &mut Vec<Built<'e>>) {
    match &list.kind {
        ExprKind::List(items) => out.extend(items.iter().filter_map(name_value_pair)),
        ExprKind::BinOp {
            op: BinOp::Concat,
            lhs,
            rhs,
        } => {
            built_pairs(lhs, out);
            built_pairs(rhs, out);
        }
        ExprKind::LetIn { body, .. } | ExprKind::With { body, .. } => built_pairs(body, out),
        ExprKind::Apply { .. } => {
            let Some((name, args)) = list.named_call() else {
                return;
            };
            match (name.as_str(), args.as_slice()) {
                ("map", [function, _]) => {
                    out.extend(lambda_body(function, 1).and_then(name_value_pair));
                }
                ("imap0" | "imap1" | "mapAttrsToList", [function, _]) => {
                    out.extend(lambda_body(function, 2).and_then(name_value_pair));
                }
                ("concatMap", [function, _]) => {
                    if let Some(body) = lambda_body(function, 1) {
                        built_pairs(body, out);
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// `nameValuePair NAME VALUE` or `{ name = …; value = …; }`.
fn name_value_pair(expr: &Expr) -> Option<Built<'_>> {
    match &expr.kind {
        ExprKind::LetIn { body, .. } | ExprKind::With { body, .. } => name_value_pair(body),
        ExprKind::AttrSet { entries, .. } => entries
            .iter()
            .any(|e| matches!(e, Entry::Binding(b) if first_key(&b.path) == Some("value")))
            .then_some(Built::Pair(expr)),
        ExprKind::Apply { .. } => match expr.named_call() {
            Some((name, args)) if name == "nameValuePair" => match args.as_slice() {
                [_, value] => Some(Built::Value(value)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

impl<'a> Walker<'a> {
    pub fn new(known: &'a Known, file: usize) -> Walker<'a> {
        Walker {
            known,
            file,
            findings: Vec::new(),
            scopes: Vec::new(),
            vm_scopes: HashMap::new(),
            trial: false,
            unplaced: false,
            nesting: 0,
            lazy: Vec::new(),
        }
    }

    pub fn finish(mut self) -> (Vec<Finding>, Vec<Scope>) {
        // A path only defined weakly may be overridden by a module not seen here.
        for scope in &mut self.scopes {
            let facts = &mut scope.facts;
            for (path, ty) in std::mem::take(&mut facts.weak) {
                if !facts.values.contains_key(&path) {
                    facts.unknown.entry(path).or_insert(ty);
                }
            }
        }
        for (scope, path, finding) in std::mem::take(&mut self.lazy) {
            let finding = match self.share_proto(scope, &path) {
                Some("9p") => finding,
                proto => {
                    let unused = match proto {
                        Some(proto) => format!("it is not used on {proto} shares"),
                        None => "it is used only on 9p shares".to_owned(),
                    };
                    Finding {
                        severity: super::Severity::Warning,
                        message: format!("{}; {unused}", finding.message),
                        ..finding
                    }
                }
            };
            self.findings.push(finding);
        }
        (self.findings, self.scopes)
    }

    /// The protocol of the share whose setting is at `path` (`$.microvm.shares[0].x`): its
    /// plain literal `proto`, the default `9p` where none is written, `None` where it is not
    /// known (not a literal, conditional, or the share's place in the list is not known).
    fn share_proto(&self, scope: usize, path: &JsonPath) -> Option<&str> {
        let mut share = path.0.clone();
        share.pop();
        if !matches!(share.last(), Some(Segment::Index(_))) {
            return None;
        }
        let proto = JsonPath(share).key("proto");
        let facts = &self.scopes[scope].facts;
        if facts.unknown.contains_key(&proto) || facts.conflicted.contains(&proto) {
            return None;
        }
        match facts.values.get(&proto) {
            Some((value, _, _)) => value.as_str(),
            None => Some("9p"),
        }
    }

    /// Runs one recursive step, unless the walk is nested too deeply already.
    fn nested(&mut self, step: impl FnOnce(&mut Self)) {
        if self.nesting < MAX_NESTING {
            self.nesting += 1;
            step(self);
            self.nesting -= 1;
        }
    }

    /// Whether what is walked now is recorded as facts.
    fn recording(&self) -> bool {
        !self.trial && !self.unplaced
    }

    fn new_scope(&mut self, parent: Option<usize>) -> usize {
        self.scopes.push(Scope {
            parent,
            facts: Facts::default(),
        });
        self.scopes.len() - 1
    }

    fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// An error in this file.
    fn error(&self, code: &str, message: impl Into<String>, span: Span) -> Finding {
        Finding::error(code, message, self.file, span)
    }

    /// A warning in this file.
    fn warning(&self, code: &str, message: impl Into<String>, span: Span) -> Finding {
        Finding::warning(code, message, self.file, span)
    }

    // ---- finding module positions ----------------------------------------------------

    /// The whole file: a module itself (a module function, or a set that is not a flake), or
    /// something with modules inside.
    pub fn file_root(&mut self, root: &Expr) {
        let mut expr = root;
        loop {
            match &expr.kind {
                ExprKind::LetIn { entries, body } => {
                    for entry in entries {
                        if let Entry::Binding(b) = entry {
                            self.walk(&b.value);
                        }
                    }
                    expr = body;
                }
                ExprKind::With { body, .. } => expr = body,
                _ => break,
            }
        }
        let is_module = match &expr.kind {
            ExprKind::Lambda { param, body } => is_module_function(param, body),
            ExprKind::AttrSet { entries, .. } => !entries.iter().any(|e| {
                matches!(e, Entry::Binding(b) if matches!(first_key(&b.path), Some("outputs" | "inputs")))
            }),
            _ => false,
        };
        if is_module {
            let scope = self.new_scope(None);
            self.module(expr, scope);
        } else {
            self.walk(expr);
        }
    }

    /// Outside any module: looks for module positions.
    fn walk(&mut self, expr: &Expr) {
        self.nested(|w| w.walk_inner(expr));
    }

    fn walk_inner(&mut self, expr: &Expr) {
        match &expr.kind {
            ExprKind::Lambda { param, body } if is_module_function(param, body) => {
                let scope = self.new_scope(None);
                self.module(expr, scope);
            }
            ExprKind::AttrSet { entries, .. } => {
                for entry in entries {
                    match entry {
                        Entry::Binding(b) => {
                            let names: Vec<Option<&str>> =
                                b.path.iter().map(|k| k.name.as_deref()).collect();
                            match names.as_slice() {
                                [Some("modules")] => {
                                    let scope = self.new_scope(None);
                                    self.modules_list(&b.value, scope);
                                }
                                [Some("nixosModules")] => match &b.value.kind {
                                    ExprKind::AttrSet { entries, .. } => {
                                        for entry in entries {
                                            if let Entry::Binding(m) = entry {
                                                self.module_value(&m.value);
                                            }
                                        }
                                    }
                                    _ => self.module_value(&b.value),
                                },
                                [Some("nixosModule")] | [Some("nixosModules"), _] => {
                                    self.module_value(&b.value);
                                }
                                _ => self.walk(&b.value),
                            }
                        }
                        Entry::Inherit(inherit) => {
                            if let Some(from) = &inherit.from {
                                self.walk(from);
                            }
                        }
                    }
                }
            }
            _ => {
                for child in expr.children() {
                    self.walk(child);
                }
            }
        }
    }

    /// A value that is a module when it is written out here (a set or a function).
    fn module_value(&mut self, expr: &Expr) {
        if matches!(
            expr.kind,
            ExprKind::AttrSet { .. } | ExprKind::Lambda { .. } | ExprKind::LetIn { .. }
        ) {
            let scope = self.new_scope(None);
            self.module(expr, scope);
        } else {
            self.walk(expr);
        }
    }

    fn modules_list(&mut self, expr: &Expr, scope: usize) {
        match &expr.kind {
            // `with self.nixosModules; [ a b { … } ]`, `let m = …; in [ m { … } ]`
            ExprKind::With { body, .. } => self.modules_list(body, scope),
            ExprKind::LetIn { entries, body } => {
                for entry in entries {
                    if let Entry::Binding(b) = entry {
                        self.walk(&b.value);
                    }
                }
                self.modules_list(body, scope);
            }
            ExprKind::List(items) => {
                for item in items {
                    match item.kind {
                        ExprKind::AttrSet { .. }
                        | ExprKind::Lambda { .. }
                        | ExprKind::LetIn { .. }
                        | ExprKind::With { .. } => self.module(item, scope),
                        _ => self.walk(item),
                    }
                }
            }
            ExprKind::BinOp {
                op: BinOp::Concat,
                lhs,
                rhs,
            } => {
                self.modules_list(lhs, scope);
                self.modules_list(rhs, scope);
            }
            _ => self.walk(expr),
        }
    }

    /// A module: its `microvm.*` settings belong to `scope`.
    fn module(&mut self, expr: &Expr, scope: usize) {
        self.nested(|w| w.module_inner(expr, scope));
    }

    fn module_inner(&mut self, expr: &Expr, scope: usize) {
        match &expr.kind {
            ExprKind::Lambda { body, .. } => self.module(body, scope),
            ExprKind::LetIn { entries, body } => {
                for entry in entries {
                    if let Entry::Binding(b) = entry {
                        self.walk(&b.value);
                    }
                }
                self.module(body, scope);
            }
            ExprKind::With { body, .. } => self.module(body, scope),
            ExprKind::AttrSet { entries, .. } => {
                for entry in entries {
                    let Entry::Binding(b) = entry else { continue };
                    match first_key(&b.path) {
                        Some("imports") if b.path.len() == 1 => {
                            self.modules_list(&b.value, scope);
                        }
                        Some("config") if b.path.len() == 1 => {
                            self.config(&b.value, scope, Flags::default());
                        }
                        Some("config") => {
                            if first_key(&b.path[1..]) == Some("microvm") {
                                self.setting(&b.path[1..], &b.value, scope, Flags::default());
                            } else {
                                self.walk(&b.value);
                            }
                        }
                        Some("microvm") => {
                            self.setting(&b.path, &b.value, scope, Flags::default());
                        }
                        Some(
                            "options" | "_module" | "meta" | "disabledModules" | "key" | "_file"
                            | "freeformType",
                        ) => {}
                        _ => self.walk(&b.value),
                    }
                }
            }
            _ => self.walk(expr),
        }
    }

    /// The value of a module's `config`.
    fn config(&mut self, expr: &Expr, scope: usize, flags: Flags) {
        let mut defs = Vec::new();
        definitions(expr, flags, &mut defs);
        for (def, flags) in defs {
            match &def.kind {
                ExprKind::AttrSet { entries, .. } => {
                    for entry in entries {
                        let Entry::Binding(b) = entry else { continue };
                        if first_key(&b.path) == Some("microvm") {
                            self.setting(&b.path, &b.value, scope, flags);
                        } else {
                            self.walk(&b.value);
                        }
                    }
                }
                _ => self.walk(def),
            }
        }
    }

    // ---- checking settings -------------------------------------------------------------

    /// `microvm.a.b = value;` in a module of `scope`.
    fn setting(&mut self, keys: &[Key], value: &Expr, scope: usize, flags: Flags) {
        let at = At {
            node: &self.known.root,
            loc: &[],
            path: &JsonPath::root(),
            flags,
            scope,
        };
        self.keys(keys, value, at, false);
    }

    /// Follows an attribute path from `at.node`; `at.loc` is the option path so far.
    fn keys(&mut self, keys: &[Key], value: &Expr, at: At<'a, '_>, freeform: bool) {
        self.nested(|w| w.keys_inner(keys, value, at, freeform));
    }

    fn keys_inner(&mut self, keys: &[Key], value: &Expr, at: At<'a, '_>, freeform: bool) {
        let known = self.known;
        let mut node = at.node;
        let mut loc = at.loc.to_vec();
        let mut path = at.path.clone();
        for (i, key) in keys.iter().enumerate() {
            let Some(name) = key.name.as_deref() else {
                return;
            };
            loc.push(name.to_owned());
            path = path.key(name);
            let removed = known.removed(&loc).or_else(|| {
                // Only where no option of that name exists: a removed option's prefix.
                node.get(name)
                    .is_none()
                    .then(|| known.removed_below(&loc))
                    .flatten()
            });
            if let Some(removed) = removed {
                // Name what was written (`microvm.qemu.bios.path`), which may be below or
                // beside the removed option found by its prefix (`microvm.qemu.bios.enable`).
                let written: Vec<&str> = loc
                    .iter()
                    .map(String::as_str)
                    .chain(keys[i + 1..].iter().map_while(|k| k.name.as_deref()))
                    .collect();
                let written = written.join(".");
                let message = if written == removed.name {
                    format!("`{written}` was removed")
                } else {
                    format!("`{written}` was removed along with `{}`", removed.name)
                };
                self.push(
                    self.error(codes::REMOVED_OPTION, message, key.span.clone())
                        .label("removed")
                        .help(removed.message.trim()),
                );
                return;
            }
            if let Some(renamed) = known.renamed(&loc) {
                use crate::options::RenameKind;
                let (message, help) = match renamed.kind {
                    RenameKind::Alias => return,
                    RenameKind::Renamed => (
                        format!("`{}` was renamed to `{}`", renamed.name, renamed.to),
                        format!("write `{}`; the old name still works for now", renamed.to),
                    ),
                    RenameKind::Changed => (
                        format!("`{}` was replaced by `{}`", renamed.name, renamed.to),
                        format!("set `{}` instead", renamed.to),
                    ),
                };
                self.push(
                    self.warning(codes::RENAMED_OPTION, message, key.span.clone())
                        .label("renamed")
                        .help(help),
                );
                return;
            }
            let Some(child) = node.get(name) else {
                if !freeform {
                    self.unknown_option(key, &loc, node);
                }
                return;
            };
            node = child;
            if let Some(decl) = known.decl(child) {
                if decl.read_only {
                    self.push(
                        self.error(
                            codes::READ_ONLY,
                            format!("`{}` is read-only", decl.name),
                            key.span.clone(),
                        )
                        .label("set here")
                        .help(
                            "the module sets it; read it (`config.".to_owned()
                                + &decl.name
                                + "`) instead of setting it",
                        ),
                    );
                    return;
                }
                let at = At {
                    node: child,
                    loc: &loc,
                    path: &path,
                    ..at
                };
                self.option_keys(&keys[i + 1..], value, &decl.ty, &decl.name, at);
                return;
            }
        }
        // A set of options (`microvm`, `microvm.graphics`): its value is a set of settings.
        let mut defs = Vec::new();
        definitions(value, at.flags, &mut defs);
        for (def, flags) in defs {
            let at = At {
                node,
                loc: &loc,
                path: &path,
                flags,
                scope: at.scope,
            };
            match classify(def) {
                Lit::Set => self.set_entries(def, at, false),
                Lit::Unknown => {}
                other => {
                    let message = format!(
                        "`{}` is a set of options, not {}",
                        loc.join("."),
                        other.describe()
                    );
                    self.push(
                        self.error(codes::WRONG_TYPE, message, def.span.clone())
                            .label(other.describe()),
                    );
                }
            }
        }
    }

    /// The bindings of a set literal (also through `//`), each followed from `at.node`.
    fn set_entries(&mut self, expr: &Expr, at: At<'a, '_>, freeform: bool) {
        match &expr.kind {
            ExprKind::AttrSet { entries, .. } => {
                for entry in entries {
                    match entry {
                        Entry::Binding(b) => self.keys(&b.path, &b.value, at, freeform),
                        // `inherit x;` sets `x` to a variable: the name is checked, the value
                        // is not known.
                        Entry::Inherit(inherit) => {
                            for key in &inherit.names {
                                let unknown = Expr {
                                    span: key.span.clone(),
                                    kind: ExprKind::Other,
                                };
                                self.keys(std::slice::from_ref(key), &unknown, at, freeform);
                            }
                        }
                    }
                }
            }
            ExprKind::BinOp {
                op: BinOp::Update,
                lhs,
                rhs,
            } => {
                self.set_entries(lhs, at, freeform);
                self.set_entries(rhs, at, freeform);
            }
            _ => {}
        }
    }

    fn unknown_option(&mut self, key: &Key, loc: &[String], parent: &Node) {
        let name = loc.join(".");
        let prefix = loc[..loc.len() - 1].join(".");
        let wrong = loc.last().map(String::as_str).unwrap_or("");
        let candidates = parent.names();
        let finding = match suggest::closest(wrong, candidates.iter().copied()) {
            Some(close) => self
                .error(
                    codes::UNKNOWN_OPTION,
                    format!("unknown option `{name}`"),
                    key.span.clone(),
                )
                .label("no such option")
                .help(format!("did you mean `{prefix}.{close}`?")),
            None if loc.len() == 1 => return,
            // `microvm.vms.web.networking…`: a NixOS option of the guest, written beside its
            // `config` instead of inside it. The module system refuses it there.
            None if self.is_vm(parent) => self
                .error(
                    codes::UNKNOWN_OPTION,
                    format!("`{name}` is not an option of a VM"),
                    key.span.clone(),
                )
                .label("outside the VM's `config`")
                .help(format!(
                    "NixOS options of a VM belong in `{prefix}.config`: write \
                     `{prefix}.config.{wrong}`"
                )),
            None => self
                .warning(
                    codes::UNKNOWN_OPTION,
                    format!("`{name}` is not a microvm-codegen option"),
                    key.span.clone(),
                )
                .label("not declared by microvm-codegen's modules")
                .help(
                    "if one of your own modules declares it, ignore this (options declared in \
                     the linted files are known); the options are listed in doc/options.md",
                ),
        };
        self.push(finding);
    }

    /// Whether `node` is one VM of `microvm.vms`: its `config` is the guest's module.
    fn is_vm(&self, node: &Node) -> bool {
        node.get("config")
            .and_then(|config| self.known.decl(config))
            .is_some_and(|decl| matches!(decl.ty.non_null(), OptionType::Module))
    }

    /// The rest of an attribute path below an option: into its submodule or attribute set.
    fn option_keys(
        &mut self,
        rest: &[Key],
        value: &Expr,
        ty: &OptionType,
        name: &str,
        at: At<'a, '_>,
    ) {
        let Some((first, more)) = rest.split_first() else {
            self.value(value, ty, name, at);
            return;
        };
        let (key, shown) = attr_key(first);
        match ty.non_null() {
            OptionType::Submodule { freeform } => self.keys(rest, value, at, *freeform),
            // `vms.${name}.config…`: the settings of some VM.
            OptionType::AttrsOf { of } => {
                let mut loc = at.loc.to_vec();
                loc.push(shown.to_owned());
                let at = At {
                    node: at.node.any_name().unwrap_or(at.node),
                    loc: &loc,
                    path: &at.path.key(&key),
                    ..at
                };
                self.option_keys(more, value, of, &format!("{name}.<name>"), at);
            }
            // `vms.<name>.config.microvm.mem = …`: a setting in that guest's module.
            OptionType::Module => {
                if key == "microvm" && !self.trial {
                    let vm = self.vm_scope(at.scope, at.path);
                    self.setting(rest, value, vm, Flags::default());
                }
            }
            OptionType::Attrs | OptionType::Other { .. } => {}
            _ if first.name.is_none() => {}
            other => {
                let message = format!(
                    "`{name}` is {}; it has no attribute `{key}`",
                    other.describe()
                );
                self.push(
                    self.error(codes::WRONG_TYPE, message, first.span.clone())
                        .label("no such attribute"),
                );
            }
        }
    }

    /// Records a literal value. A conditional one makes the path unknown; a weak one makes it
    /// unknown unless a plain one is recorded too; two plain ones that differ conflict.
    fn record(&mut self, at: At, value: Value, span: &Span, ty: &OptionType, name: &str) {
        if !self.recording() {
            return;
        }
        let (path, flags) = (at.path, at.flags);
        let facts = &mut self.scopes[at.scope].facts;
        if flags.conditional {
            facts.unknown.insert(path.clone(), ty.clone());
            return;
        }
        if !flags.plain() {
            facts.weak.insert(path.clone(), ty.clone());
            return;
        }
        let priority = flags.priority();
        let first = match facts.values.get(path) {
            Some((_, _, existing)) if *existing < priority => return,
            Some((existing, first, existing_priority))
                if *existing_priority == priority && *existing != value =>
            {
                first.clone()
            }
            Some((_, _, existing)) if *existing == priority => return,
            _ => {
                facts.conflicted.remove(path);
                facts
                    .values
                    .insert(path.clone(), (value, span.clone(), priority));
                return;
            }
        };
        facts.conflicted.insert(path.clone());
        if ty.merges() {
            return;
        }
        let finding = self
            .error(
                codes::CONFLICT,
                format!("`{name}` is defined twice, with different values"),
                span.clone(),
            )
            .label("defined here")
            .related(first, "and here")
            .help(
                "the module system refuses conflicting definitions: keep one, or give the one \
                 that should win a higher priority (lib.mkForce)",
            );
        self.push(finding);
    }

    fn unknown(&mut self, scope: usize, path: &JsonPath, ty: &OptionType) {
        if self.recording() {
            self.scopes[scope]
                .facts
                .unknown
                .insert(path.clone(), ty.clone());
        }
    }

    fn wrong_type(&mut self, expr: &Expr, lit: &Lit, ty: &OptionType, name: &str) {
        let help = match (lit, ty.non_null()) {
            (Lit::Str(Some(s)), OptionType::Int { .. }) if s.trim().parse::<i64>().is_ok() => {
                Some(format!("write the number without quotes: {}", s.trim()))
            }
            (Lit::Str(Some(s)), OptionType::Bool) if matches!(*s, "true" | "false") => {
                Some(format!("write {s} without quotes"))
            }
            (Lit::Int(i), OptionType::Str { .. } | OptionType::Enum { .. }) => {
                Some(format!("quote it: \"{i}\""))
            }
            (Lit::Path, OptionType::Str { .. }) => {
                Some("a path literal is not a string; use toString or a string".to_owned())
            }
            (Lit::Set, OptionType::ListOf { .. }) => Some("put it in a list: [ { … } ]".to_owned()),
            _ => None,
        };
        let message = format!("`{name}` is {}, not {}", ty.describe(), lit.describe());
        let mut finding = self
            .error(codes::WRONG_TYPE, message, expr.span.clone())
            .label(lit.describe());
        if let Some(help) = help {
            finding = finding.help(help);
        }
        self.push(finding);
    }

    /// Checks a value (every definition it stands for) against an option's type.
    fn value(&mut self, expr: &Expr, ty: &OptionType, name: &str, at: At<'a, '_>) {
        self.nested(|w| w.value_inner(expr, ty, name, at));
    }

    fn value_inner(&mut self, expr: &Expr, ty: &OptionType, name: &str, at: At<'a, '_>) {
        let mut defs = Vec::new();
        definitions(expr, at.flags, &mut defs);
        for (def, flags) in defs {
            self.definition(def, ty, name, At { flags, ..at });
        }
    }

    fn definition(&mut self, expr: &Expr, ty: &OptionType, name: &str, at: At<'a, '_>) {
        if let OptionType::AttrsOf { of } = ty
            && matches!(
                expr.kind,
                ExprKind::Apply { .. }
                    | ExprKind::BinOp {
                        op: BinOp::Update,
                        ..
                    }
            )
            && self.built_attrs(expr, of, name, at)
        {
            return;
        }
        if let (
            Some(package),
            OptionType::Enum {
                values: Some(values),
                ..
            },
        ) = (pkgs_attribute(expr), ty)
        {
            self.package_for_enum(expr, package, values, ty, name);
            return;
        }
        let lit = classify(expr);
        if matches!(lit, Lit::Unknown) {
            self.unknown(at.scope, at.path, ty);
            return;
        }
        let span = &expr.span;
        match ty {
            OptionType::NullOr { of } => {
                if matches!(lit, Lit::Null) {
                    self.record(at, Value::Null, span, ty, name);
                } else {
                    self.definition(expr, of, name, at);
                }
            }
            OptionType::Bool => match lit {
                Lit::Bool(b) => self.record(at, Value::Bool(b), span, ty, name),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Int { min, max, .. } => match lit {
                Lit::Int(i) => {
                    if min.is_some_and(|m| i < m) || max.is_some_and(|m| i > m) {
                        self.push(
                            self.error(
                                codes::OUT_OF_RANGE,
                                format!("`{name}` must be {}; {i} is not", ty.describe()),
                                span.clone(),
                            )
                            .label("out of range"),
                        );
                    } else {
                        self.record(at, Value::from(i), span, ty, name);
                    }
                }
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Float => match lit {
                Lit::Float => self.unknown(at.scope, at.path, ty),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Number => match lit {
                Lit::Float => self.unknown(at.scope, at.path, ty),
                Lit::Int(i) => self.record(at, Value::from(i), span, ty, name),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Str {
                non_empty,
                single_line,
                ..
            } => match lit {
                Lit::Str(Some(s)) => {
                    let problem = if *non_empty && s.trim().is_empty() {
                        Some("must not be empty")
                    } else if *single_line && s.contains('\n') {
                        Some("must be one line")
                    } else {
                        None
                    };
                    match problem {
                        Some(problem) => {
                            self.push(
                                self.error(
                                    codes::WRONG_TYPE,
                                    format!("`{name}` {problem}"),
                                    span.clone(),
                                )
                                .label("this string"),
                            );
                        }
                        None => self.record(at, Value::from(s), span, ty, name),
                    }
                }
                Lit::Str(None) => self.unknown(at.scope, at.path, ty),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Path => match lit {
                Lit::Str(Some(s)) if !s.starts_with('/') => {
                    self.push(
                        self.error(
                            codes::WRONG_TYPE,
                            format!("`{name}` must be an absolute path; {s:?} is not"),
                            span.clone(),
                        )
                        .label("relative")
                        .help("start it with /"),
                    );
                }
                Lit::Str(Some(s)) => {
                    self.record(at, Value::from(s), span, ty, name);
                }
                Lit::Str(None) | Lit::Path => self.unknown(at.scope, at.path, ty),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Package => match lit {
                Lit::Str(Some(s)) if !s.starts_with("/nix/store/") => {
                    self.wrong_type(expr, &lit, ty, name);
                }
                Lit::Str(_) | Lit::Set | Lit::Path => self.unknown(at.scope, at.path, ty),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Enum { values, .. } => match (lit, values) {
                (Lit::Str(Some(s)), Some(values)) => {
                    if values.iter().any(|v| v == s) {
                        self.record(at, Value::from(s), span, ty, name);
                    } else {
                        let candidates: Vec<&str> = values.iter().map(String::as_str).collect();
                        let listed = candidates
                            .iter()
                            .map(|v| format!("{v:?}"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let help = match suggest::closest(s, candidates.iter().copied()) {
                            Some(close) => format!("did you mean {close:?}? (one of {listed})"),
                            None => format!("one of {listed}"),
                        };
                        let finding = self
                            .error(
                                codes::ENUM_VALUE,
                                format!("{s:?} is not a value of `{name}`"),
                                span.clone(),
                            )
                            .label("no such value")
                            .help(help);
                        if name == SECURITY_MODEL && !self.trial {
                            // Unplaced, the share's siblings are not known: `share_proto`
                            // finds no share at this path and makes it a warning.
                            self.lazy.push((at.scope, at.path.clone(), finding));
                        } else {
                            self.push(finding);
                        }
                    }
                }
                (Lit::Str(_), _) => self.unknown(at.scope, at.path, ty),
                (lit @ (Lit::Bool(_) | Lit::List | Lit::Set | Lit::Path | Lit::Lambda), _)
                | (lit @ Lit::Int(_), Some(_)) => self.wrong_type(expr, &lit, ty, name),
                _ => self.unknown(at.scope, at.path, ty),
            },
            OptionType::ListOf { of } => match lit {
                Lit::List => self.list(expr, of, name, at),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::AttrsOf { of } => match lit {
                Lit::Set => self.attrs(expr, of, name, at),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Submodule { freeform } => match lit {
                Lit::Set => {
                    if self.recording() {
                        self.scopes[at.scope]
                            .facts
                            .spans
                            .insert(at.path.clone(), span.clone());
                    }
                    self.set_entries(expr, at, *freeform);
                }
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Module => match lit {
                Lit::Set | Lit::Lambda => {
                    if !self.trial {
                        let vm = self.vm_scope(at.scope, at.path);
                        self.module(expr, vm);
                    }
                }
                Lit::Path => {}
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::OneOf { of } => {
                let fits = of.iter().any(|alternative| {
                    let saved = std::mem::take(&mut self.findings);
                    let trial = std::mem::replace(&mut self.trial, true);
                    self.definition(expr, alternative, name, at);
                    let ok = !self.findings.iter().any(Finding::is_error);
                    self.findings = saved;
                    self.trial = trial;
                    ok
                });
                if fits {
                    self.unknown(at.scope, at.path, ty);
                } else {
                    self.wrong_type(expr, &lit, ty, name);
                }
            }
            OptionType::Attrs => match lit {
                Lit::Set => self.unknown(at.scope, at.path, ty),
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::FunctionTo { .. } => match lit {
                Lit::Lambda => {}
                _ => self.wrong_type(expr, &lit, ty, name),
            },
            OptionType::Other { .. } => self.unknown(at.scope, at.path, ty),
        }
    }

    /// `microvm.hypervisor = pkgs.qemu;`: a package where the name of one is required.
    fn package_for_enum(
        &mut self,
        expr: &Expr,
        package: &str,
        values: &[String],
        ty: &OptionType,
        name: &str,
    ) {
        let help = match suggest::closest(package, values.iter().map(String::as_str)) {
            Some(value) => format!("write the name, not the package: {value:?}"),
            None => format!(
                "write the name, not the package: one of {}",
                values
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.push(
            self.error(
                codes::WRONG_TYPE,
                format!("`{name}` is {}, not a package", ty.describe()),
                expr.span.clone(),
            )
            .label("a package")
            .help(help),
        );
    }

    /// The elements of a list literal (also either side of `++`).
    fn list(&mut self, expr: &Expr, of: &OptionType, name: &str, at: At<'a, '_>) {
        match &expr.kind {
            ExprKind::List(items) => {
                let element = at.node.element().unwrap_or(at.node);
                let element_name = format!("{name}.*");
                let mut element_loc = at.loc.to_vec();
                element_loc.push("*".to_owned());
                for item in items {
                    // The element's place is decided by what it stands for: `mkForce { … }`
                    // and `let … in { … }` are elements like `{ … }`; one under `mkIf` or
                    // `mkDefault`, or one that is not a literal, has no known place.
                    let mut defs = Vec::new();
                    definitions(item, at.flags, &mut defs);
                    let placed = self.recording()
                        && !defs.is_empty()
                        && defs.iter().all(|(def, flags)| {
                            flags.plain() && !matches!(classify(def), Lit::Unknown)
                        });
                    let item_path = if placed {
                        let facts = &mut self.scopes[at.scope].facts;
                        let len = facts.list_len.entry(at.path.clone()).or_insert(0);
                        *len += 1;
                        let item_path = at.path.index(*len - 1);
                        facts.spans.insert(item_path.clone(), item.span.clone());
                        facts
                            .spans
                            .entry(at.path.clone())
                            .or_insert(expr.span.clone());
                        item_path
                    } else {
                        // Nothing below it is recorded, so the path is never used as a place.
                        at.path.clone()
                    };
                    let unplaced = std::mem::replace(&mut self.unplaced, !placed);
                    for (def, flags) in defs {
                        let at = At {
                            node: element,
                            loc: &element_loc,
                            path: &item_path,
                            flags,
                            scope: at.scope,
                        };
                        self.nested(|w| w.definition(def, of, &element_name, at));
                    }
                    self.unplaced = unplaced;
                }
            }
            ExprKind::BinOp {
                op: BinOp::Concat,
                lhs,
                rhs,
            } => {
                for side in [lhs, rhs] {
                    if matches!(side.kind, ExprKind::List(_) | ExprKind::BinOp { .. }) {
                        self.list(side, of, name, at);
                    }
                }
            }
            _ => {}
        }
    }

    /// The values of an `attrsOf` option that a function builds, each under a name of its own
    /// (see `unnamed_key`). Returns whether `expr` builds any that can be seen.
    fn built_attrs(&mut self, expr: &Expr, of: &OptionType, name: &str, at: At<'a, '_>) -> bool {
        let mut built = Vec::new();
        built_values(expr, &mut built);
        if built.is_empty() {
            return false;
        }
        let element = at.node.any_name().unwrap_or(at.node);
        let element_name = format!("{name}.<name>");
        let mut loc = at.loc.to_vec();
        loc.push(UNNAMED.to_owned());
        for value in built {
            match value {
                Built::Set(set) => self.attrs(set, of, name, at),
                Built::Value(value) => {
                    let path = at.path.key(&unnamed_key(&value.span));
                    let at = At {
                        node: element,
                        loc: &loc,
                        path: &path,
                        ..at
                    };
                    self.value(value, of, &element_name, at);
                }
                Built::Pair(pair) => {
                    let ExprKind::AttrSet { entries, .. } = &pair.kind else {
                        continue;
                    };
                    let path = at.path.key(&unnamed_key(&pair.span));
                    for entry in entries {
                        if let Entry::Binding(b) = entry
                            && first_key(&b.path) == Some("value")
                        {
                            let at = At {
                                node: element,
                                loc: &loc,
                                path: &path,
                                ..at
                            };
                            self.option_keys(&b.path[1..], &b.value, of, &element_name, at);
                        }
                    }
                }
            }
        }
        true
    }

    /// The attributes of a set literal for an `attrsOf` option.
    fn attrs(&mut self, expr: &Expr, of: &OptionType, name: &str, at: At<'a, '_>) {
        let element = at.node.any_name().unwrap_or(at.node);
        let element_name = format!("{name}.<name>");
        match &expr.kind {
            ExprKind::AttrSet { entries, .. } => {
                for entry in entries {
                    match entry {
                        Entry::Binding(b) => {
                            let Some(first) = b.path.first() else {
                                continue;
                            };
                            let (key, shown) = attr_key(first);
                            let mut loc = at.loc.to_vec();
                            loc.push(shown.to_owned());
                            let at = At {
                                node: element,
                                loc: &loc,
                                path: &at.path.key(&key),
                                ..at
                            };
                            self.option_keys(&b.path[1..], &b.value, of, &element_name, at);
                        }
                        Entry::Inherit(inherit) => {
                            for key in inherit.names.iter().filter_map(|k| k.name.as_deref()) {
                                self.unknown(at.scope, &at.path.key(key), of);
                            }
                        }
                    }
                }
            }
            ExprKind::BinOp {
                op: BinOp::Update,
                lhs,
                rhs,
            } => {
                for side in [lhs, rhs] {
                    if matches!(side.kind, ExprKind::AttrSet { .. } | ExprKind::BinOp { .. }) {
                        self.attrs(side, of, name, at);
                    } else {
                        self.built_attrs(side, of, name, at);
                    }
                }
            }
            _ => {}
        }
    }

    /// The scope of the guest a `deferredModule` option (`microvm.vms.<name>.config`,
    /// `extraModules`) configures: one per element of the enclosing attribute set.
    fn vm_scope(&mut self, parent: usize, path: &JsonPath) -> usize {
        let mut owner = path.0.clone();
        while matches!(owner.last(), Some(Segment::Index(_))) {
            owner.pop();
        }
        owner.pop();
        let key = (parent, JsonPath(owner));
        if let Some(&scope) = self.vm_scopes.get(&key) {
            return scope;
        }
        // A VM whose name is not known may be one written elsewhere, or several: it is not
        // compared with its siblings.
        let siblings = (!is_unnamed(&key.1)).then_some(parent);
        let scope = self.new_scope(siblings);
        self.vm_scopes.insert(key, scope);
        scope
    }
}
