//! The one place that knows rnix and rowan: parses Nix source and lowers rnix's lossless tree
//! into a small owned syntax tree with byte spans. `options` and `lint` work on that tree only,
//! so a change of rnix or rowan (rnix 0.15 just moved to rowan 0.17) stays in this file.

use std::ops::Range;

use rnix::ast::{self, AstToken, HasEntry};
use rowan::ast::AstNode;

/// A byte range in the parsed text.
pub type Span = Range<usize>;

/// Deeper nesting than this is not lowered (it becomes [`ExprKind::Other`]): nobody writes
/// it, and it keeps every recursive walk over the tree far from the stack's end.
pub const MAX_DEPTH: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub span: Span,
    pub kind: ExprKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    AttrSet {
        rec: bool,
        entries: Vec<Entry>,
    },
    LetIn {
        entries: Vec<Entry>,
        body: Box<Expr>,
    },
    With {
        namespace: Box<Expr>,
        body: Box<Expr>,
    },
    Lambda {
        param: Param,
        body: Box<Expr>,
    },
    Apply {
        function: Box<Expr>,
        argument: Box<Expr>,
    },
    /// `expr.a.b or default`.
    Select {
        expr: Box<Expr>,
        path: Vec<Key>,
        default: Option<Box<Expr>>,
    },
    Ident(String),
    Str(Text),
    /// A path literal (`./vm.nix`, `/etc/x`, `<nixpkgs>`, `~/x`).
    Path(Text),
    Int(i64),
    Float(f64),
    Uri(String),
    List(Vec<Expr>),
    BinOp {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `-x`.
    Negate(Box<Expr>),
    /// `!x`.
    Not(Box<Expr>),
    If {
        condition: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Assert {
        condition: Box<Expr>,
        body: Box<Expr>,
    },
    /// `x ? a.b`.
    HasAttr {
        expr: Box<Expr>,
        path: Vec<Key>,
    },
    /// Anything else: `__curPos`, legacy `let { }`, nesting beyond [`MAX_DEPTH`].
    Other,
}

/// The text of a string or path: known, or made at evaluation time by `${…}` (then kept with
/// the interpolations as written, for documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Literal(String),
    Interpolated(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `++`
    Concat,
    /// `//`
    Update,
    /// `+`
    Add,
    /// Every other operator: comparisons, logic, arithmetic, pipes.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Binding(Binding),
    Inherit(Inherit),
}

/// `a.b.c = value;`
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub path: Vec<Key>,
    pub value: Expr,
    pub span: Span,
}

/// `inherit (from) a b;`
#[derive(Debug, Clone, PartialEq)]
pub struct Inherit {
    pub from: Option<Expr>,
    pub names: Vec<Key>,
    pub span: Span,
}

/// One attribute name; `name` is `None` when it is computed (`${x}`, `"${x}"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// `x: …`
    Ident(String),
    /// `{ a, b ? …, ... } @ bind: …`
    Pattern {
        names: Vec<String>,
        ellipsis: bool,
        bind: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
}

/// A parsed file: the tree when the text is valid Nix, otherwise the errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub root: Option<Expr>,
    pub errors: Vec<SyntaxError>,
}

/// Parses Nix source. Text with syntax errors gives the errors and no tree: Nix would not
/// evaluate it either, and rnix's accessors assume a well-formed tree.
///
/// Sources longer than `u32::MAX` bytes are refused as a syntax error (rowan's offsets are
/// 32-bit).
pub fn parse(text: &str) -> Parsed {
    if u32::try_from(text.len()).is_err() {
        return Parsed {
            root: None,
            errors: vec![SyntaxError {
                message: "the file is larger than 4 GiB".to_owned(),
                span: 0..0,
            }],
        };
    }
    if let Some(error) = too_costly(text) {
        return Parsed {
            root: None,
            errors: vec![error],
        };
    }
    let parse = rnix::Root::parse(text);
    if !parse.errors().is_empty() {
        let errors = parse
            .errors()
            .iter()
            .map(|e| lower_error(e, text.len()))
            .collect();
        return Parsed { root: None, errors };
    }
    let root = parse.tree().expr().map(|e| lower_expr(e, 0));
    Parsed {
        root,
        errors: Vec::new(),
    }
}

/// A run of name characters (`[A-Za-z0-9_.+-]`) in code longer than this is refused: rnix's
/// tokenizer looks ahead to the end of the run at every token in it (is it a path?), so a run
/// costs the square of its length (`x.a.a…` ×200,000 took minutes). Real names and attribute
/// paths are far shorter; strings and comments may hold longer runs.
pub const MAX_NAME_RUN: usize = 1024;

/// An expression with more operators and arguments in a row than this (between `;`, `=`, `:`,
/// keywords and the like, at one bracket level) is refused: rowan interns the small nodes of
/// such chains (`f x x …`, `- - … 1`, `a+a+…`) and rehashes each whole chain whenever its
/// table grows, which costs the square of the chain's length.
pub const MAX_CHAIN: usize = 1024;

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
}

/// The shapes rnix 0.15 and rowan 0.17 parse in quadratic time (see [`MAX_NAME_RUN`] and
/// [`MAX_CHAIN`]), found in one linear pass over the tokens: an error for the first, or `None`.
fn too_costly(text: &str) -> Option<SyntaxError> {
    use rnix::SyntaxKind as K;

    // Long runs are blanked before tokenizing (which keeps the tokenizer linear); a blanked
    // run that comes out as whitespace was in code, one inside a string or comment was not.
    let bytes = text.as_bytes();
    let mut long_runs = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        if !is_name_char(bytes[start]) {
            start += 1;
            continue;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| !is_name_char(b))
            .map_or(bytes.len(), |n| start + n);
        if end - start > MAX_NAME_RUN {
            long_runs.push(start..end);
        }
        start = end;
    }
    let blanked;
    let tokenized = if long_runs.is_empty() {
        text
    } else {
        let mut copy = bytes.to_vec();
        for run in &long_runs {
            copy[run.clone()].fill(b' ');
        }
        // Only ASCII bytes were replaced by ASCII bytes.
        blanked = String::from_utf8(copy).expect("still UTF-8");
        &blanked
    };

    #[derive(PartialEq)]
    enum Level {
        Code,
        List,
        Str,
    }
    // One chain length per open bracket, string or interpolation.
    let mut levels = vec![(Level::Code, 0usize)];
    let mut runs = long_runs.iter().peekable();
    let mut offset = 0;
    for (kind, token) in rnix::tokenize(tokenized) {
        let span = offset..offset + token.len();
        offset = span.end;
        if kind == K::TOKEN_WHITESPACE {
            while runs.next_if(|run| run.end <= span.start).is_some() {}
            if let Some(run) = runs.peek()
                && run.start < span.end
            {
                return Some(SyntaxError {
                    message: format!(
                        "a name of {} characters: lint reads names and attribute paths of at \
                         most {MAX_NAME_RUN}",
                        run.len()
                    ),
                    span: (*run).clone(),
                });
            }
            continue;
        }
        match kind {
            K::TOKEN_COMMENT => continue,
            K::TOKEN_L_PAREN | K::TOKEN_L_BRACE | K::TOKEN_INTERPOL_START => {
                levels.push((Level::Code, 0));
                continue;
            }
            K::TOKEN_L_BRACK => {
                levels.push((Level::List, 0));
                continue;
            }
            K::TOKEN_STRING_START => {
                levels.push((Level::Str, 0));
                continue;
            }
            K::TOKEN_R_PAREN
            | K::TOKEN_R_BRACE
            | K::TOKEN_R_BRACK
            | K::TOKEN_INTERPOL_END
            | K::TOKEN_STRING_END => {
                if levels.len() > 1 {
                    levels.pop();
                }
                continue;
            }
            _ => {}
        }
        let (level, chain) = levels.last_mut().expect("the outermost level stays");
        let breaks = matches!(
            kind,
            K::TOKEN_SEMICOLON
                | K::TOKEN_ASSIGN
                | K::TOKEN_COMMA
                | K::TOKEN_COLON
                | K::TOKEN_AT
                | K::TOKEN_ELLIPSIS
                | K::TOKEN_IN
                | K::TOKEN_THEN
                | K::TOKEN_ELSE
                | K::TOKEN_IF
                | K::TOKEN_LET
                | K::TOKEN_WITH
                | K::TOKEN_ASSERT
                | K::TOKEN_INHERIT
                | K::TOKEN_REC
        );
        // A list's elements are not a chain; operators between them would be.
        let counts = match level {
            Level::Str => false,
            Level::List => !matches!(
                kind,
                K::TOKEN_IDENT
                    | K::TOKEN_INTEGER
                    | K::TOKEN_FLOAT
                    | K::TOKEN_URI
                    | K::TOKEN_PATH_ABS
                    | K::TOKEN_PATH_REL
                    | K::TOKEN_PATH_HOME
                    | K::TOKEN_PATH_SEARCH
                    | K::TOKEN_STRING_CONTENT
            ),
            Level::Code => true,
        };
        if breaks {
            *chain = 0;
        } else if counts {
            *chain += 1;
            if *chain > MAX_CHAIN {
                return Some(SyntaxError {
                    message: format!(
                        "an expression with more than {MAX_CHAIN} operators and arguments in a \
                         row: lint reads at most that many; split it with `let` bindings"
                    ),
                    span,
                });
            }
        }
    }
    None
}

fn span_of(node: &rnix::SyntaxNode) -> Span {
    let range = node.text_range();
    usize::from(range.start())..usize::from(range.end())
}

fn lower_error(error: &rnix::ParseError, len: usize) -> SyntaxError {
    use rnix::ParseError as E;
    let range = |r: &rnix::TextRange| usize::from(r.start())..usize::from(r.end());
    let (message, span) = match error {
        E::Unexpected(r) => ("unexpected input".to_owned(), range(r)),
        E::UnexpectedExtra(r) => ("unexpected input after the expression".to_owned(), range(r)),
        // A long list of what would fit helps nobody.
        E::UnexpectedWanted(got, r, wanted) if wanted.len() > 3 => {
            (format!("unexpected {}", kind_name(*got)), range(r))
        }
        E::UnexpectedWanted(got, r, wanted) => (
            format!(
                "unexpected {}, expected {}",
                kind_name(*got),
                expected(wanted)
            ),
            range(r),
        ),
        E::UnexpectedDoubleBind(r) => ("a pattern is bound twice".to_owned(), range(r)),
        E::UnexpectedEOF => ("unexpected end of file".to_owned(), len..len),
        E::UnexpectedEOFWanted(wanted) => (
            format!("unexpected end of file, expected {}", expected(wanted)),
            len..len,
        ),
        E::DuplicatedArgs(r, name) => (format!("argument `{name}` is declared twice"), range(r)),
        E::RecursionLimitExceeded => ("the expression is nested too deeply".to_owned(), 0..0),
        _ => (error.to_string(), 0..0),
    };
    SyntaxError { message, span }
}

/// `TOKEN_SEMICOLON` → `` `;` ``, `TOKEN_IDENT` → `identifier`.
/// What rnix would have accepted, in words: `an attribute name`, `` `;` or `}` ``.
fn expected(wanted: &[rnix::SyntaxKind]) -> String {
    use rnix::SyntaxKind as K;
    let mut names: Vec<String> = Vec::new();
    // rnix asks for an attribute name as "an identifier, `or` or `__curPos`" (both are
    // names there); people call it a name.
    let attribute_name = wanted.contains(&K::TOKEN_IDENT) && wanted.contains(&K::TOKEN_OR);
    for kind in wanted {
        let name = match kind {
            K::TOKEN_IDENT | K::TOKEN_OR | K::TOKEN_CUR_POS if attribute_name => {
                "an attribute name".to_owned()
            }
            _ => kind_name(*kind),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    match names.split_last() {
        None => "something else".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn kind_name(kind: rnix::SyntaxKind) -> String {
    use rnix::SyntaxKind as K;
    let symbol = match kind {
        K::TOKEN_ADD => "+",
        K::TOKEN_AND_AND => "&&",
        K::TOKEN_ASSERT => "assert",
        K::TOKEN_AT => "@",
        K::TOKEN_CONCAT => "++",
        K::TOKEN_CUR_POS => "__curPos",
        K::TOKEN_DIV => "/",
        K::TOKEN_ELLIPSIS => "...",
        K::TOKEN_EQUAL => "==",
        K::TOKEN_IF => "if",
        K::TOKEN_IMPLICATION => "->",
        K::TOKEN_INHERIT => "inherit",
        K::TOKEN_INTERPOL_START => "${",
        K::TOKEN_INTERPOL_END => "}",
        K::TOKEN_INVERT => "!",
        K::TOKEN_LESS => "<",
        K::TOKEN_LESS_OR_EQ => "<=",
        K::TOKEN_LET => "let",
        K::TOKEN_MORE => ">",
        K::TOKEN_MORE_OR_EQ => ">=",
        K::TOKEN_MUL => "*",
        K::TOKEN_NOT_EQUAL => "!=",
        K::TOKEN_OR => "or",
        K::TOKEN_OR_OR => "||",
        K::TOKEN_PIPE_LEFT => "<|",
        K::TOKEN_PIPE_RIGHT => "|>",
        K::TOKEN_QUESTION => "?",
        K::TOKEN_REC => "rec",
        K::TOKEN_SUB => "-",
        K::TOKEN_UPDATE => "//",
        K::TOKEN_WITH => "with",
        K::TOKEN_INTEGER | K::TOKEN_FLOAT => return "a number".to_owned(),
        K::TOKEN_PATH_ABS | K::TOKEN_PATH_HOME | K::TOKEN_PATH_REL | K::TOKEN_PATH_SEARCH => {
            return "a path".to_owned();
        }
        K::TOKEN_URI => return "a URI".to_owned(),
        K::TOKEN_STRING_CONTENT => return "the text of a string".to_owned(),
        K::TOKEN_COMMENT => return "a comment".to_owned(),
        K::TOKEN_ERROR => return "text that is not Nix".to_owned(),
        K::TOKEN_SEMICOLON => ";",
        K::TOKEN_COLON => ":",
        K::TOKEN_COMMA => ",",
        K::TOKEN_DOT => ".",
        K::TOKEN_ASSIGN => "=",
        K::TOKEN_L_BRACE => "{",
        K::TOKEN_R_BRACE => "}",
        K::TOKEN_L_BRACK => "[",
        K::TOKEN_R_BRACK => "]",
        K::TOKEN_L_PAREN => "(",
        K::TOKEN_R_PAREN => ")",
        K::TOKEN_STRING_START | K::TOKEN_STRING_END => "\"",
        K::TOKEN_IN => "in",
        K::TOKEN_THEN => "then",
        K::TOKEN_ELSE => "else",
        K::TOKEN_IDENT => return "an identifier".to_owned(),
        _ => {
            let debug = format!("{kind:?}");
            return debug
                .trim_start_matches("TOKEN_")
                .trim_start_matches("NODE_")
                .to_lowercase()
                .replace('_', " ");
        }
    };
    format!("`{symbol}`")
}

fn boxed(expr: Option<ast::Expr>, depth: usize, fallback: &Span) -> Box<Expr> {
    Box::new(match expr {
        Some(e) => lower_expr(e, depth),
        None => Expr {
            span: fallback.clone(),
            kind: ExprKind::Other,
        },
    })
}

fn lower_expr(expr: ast::Expr, depth: usize) -> Expr {
    let span = span_of(expr.syntax());
    if depth > MAX_DEPTH {
        return Expr {
            span,
            kind: ExprKind::Other,
        };
    }
    let d = depth + 1;
    let kind = match expr {
        ast::Expr::Paren(p) => match p.expr() {
            Some(inner) => return lower_expr(inner, d),
            None => ExprKind::Other,
        },
        ast::Expr::Root(r) => match r.expr() {
            Some(inner) => return lower_expr(inner, d),
            None => ExprKind::Other,
        },
        ast::Expr::AttrSet(set) => ExprKind::AttrSet {
            rec: set.rec_token().is_some(),
            entries: lower_entries(set.entries(), d),
        },
        ast::Expr::LetIn(let_in) => ExprKind::LetIn {
            entries: lower_entries(let_in.entries(), d),
            body: boxed(let_in.body(), d, &span),
        },
        ast::Expr::With(with) => ExprKind::With {
            namespace: boxed(with.namespace(), d, &span),
            body: boxed(with.body(), d, &span),
        },
        ast::Expr::Lambda(lambda) => ExprKind::Lambda {
            param: lower_param(lambda.param()),
            body: boxed(lambda.body(), d, &span),
        },
        ast::Expr::Apply(apply) => ExprKind::Apply {
            function: boxed(apply.lambda(), d, &span),
            argument: boxed(apply.argument(), d, &span),
        },
        ast::Expr::Select(select) => ExprKind::Select {
            expr: boxed(select.expr(), d, &span),
            path: lower_attrpath(select.attrpath(), d),
            default: select.default_expr().map(|e| Box::new(lower_expr(e, d))),
        },
        ast::Expr::Ident(ident) => ExprKind::Ident(ident.syntax().text().to_string()),
        ast::Expr::Str(s) => ExprKind::Str(lower_str(&s)),
        ast::Expr::PathAbs(_)
        | ast::Expr::PathRel(_)
        | ast::Expr::PathHome(_)
        | ast::Expr::PathSearch(_) => {
            let interpolated = expr
                .syntax()
                .children()
                .any(|c| ast::Interpol::can_cast(c.kind()));
            ExprKind::Path(if interpolated {
                Text::Interpolated(expr.syntax().text().to_string())
            } else {
                Text::Literal(expr.syntax().text().to_string())
            })
        }
        ast::Expr::Literal(literal) => match literal.kind() {
            ast::LiteralKind::Integer(i) => match i.value() {
                Ok(value) => ExprKind::Int(value),
                Err(_) => ExprKind::Other,
            },
            ast::LiteralKind::Float(f) => match f.value() {
                Ok(value) => ExprKind::Float(value),
                Err(_) => ExprKind::Other,
            },
            ast::LiteralKind::Uri(u) => ExprKind::Uri(u.syntax().text().to_string()),
        },
        ast::Expr::List(list) => ExprKind::List(list.items().map(|e| lower_expr(e, d)).collect()),
        ast::Expr::BinOp(bin) => ExprKind::BinOp {
            op: match bin.operator() {
                Some(ast::BinOpKind::Concat) => BinOp::Concat,
                Some(ast::BinOpKind::Update) => BinOp::Update,
                Some(ast::BinOpKind::Add) => BinOp::Add,
                _ => BinOp::Other,
            },
            lhs: boxed(bin.lhs(), d, &span),
            rhs: boxed(bin.rhs(), d, &span),
        },
        ast::Expr::UnaryOp(unary) => {
            let inner = boxed(unary.expr(), d, &span);
            match unary.operator() {
                Some(ast::UnaryOpKind::Negate) => ExprKind::Negate(inner),
                Some(ast::UnaryOpKind::Invert) => ExprKind::Not(inner),
                None => ExprKind::Other,
            }
        }
        ast::Expr::IfElse(if_else) => ExprKind::If {
            condition: boxed(if_else.condition(), d, &span),
            then: boxed(if_else.body(), d, &span),
            otherwise: boxed(if_else.else_body(), d, &span),
        },
        ast::Expr::Assert(assert) => ExprKind::Assert {
            condition: boxed(assert.condition(), d, &span),
            body: boxed(assert.body(), d, &span),
        },
        ast::Expr::HasAttr(has) => ExprKind::HasAttr {
            expr: boxed(has.expr(), d, &span),
            path: lower_attrpath(has.attrpath(), d),
        },
        ast::Expr::Error(_) | ast::Expr::LegacyLet(_) | ast::Expr::CurPos(_) => ExprKind::Other,
    };
    Expr { span, kind }
}

fn lower_str(s: &ast::Str) -> Text {
    let mut text = String::new();
    let mut interpolated = false;
    for part in s.normalized_parts() {
        match part {
            ast::InterpolPart::Literal(literal) => text.push_str(&literal),
            ast::InterpolPart::Interpolation(interpol) => {
                interpolated = true;
                text.push_str(&interpol.syntax().text().to_string());
            }
        }
    }
    if interpolated {
        Text::Interpolated(text)
    } else {
        Text::Literal(text)
    }
}

fn lower_attr(attr: ast::Attr, depth: usize) -> Key {
    let span = span_of(attr.syntax());
    let name = match attr {
        ast::Attr::Ident(ident) => Some(ident.syntax().text().to_string()),
        ast::Attr::Str(s) => match lower_str(&s) {
            Text::Literal(name) => Some(name),
            Text::Interpolated(_) => None,
        },
        // `${"name"}` is a static name too.
        ast::Attr::Dynamic(dynamic) => match dynamic.expr().map(|e| lower_expr(e, depth)) {
            Some(Expr {
                kind: ExprKind::Str(Text::Literal(name)),
                ..
            }) => Some(name),
            _ => None,
        },
    };
    Key { name, span }
}

fn lower_attrpath(path: Option<ast::Attrpath>, depth: usize) -> Vec<Key> {
    path.map(|p| p.attrs().map(|a| lower_attr(a, depth)).collect())
        .unwrap_or_default()
}

fn lower_entries(entries: impl Iterator<Item = ast::Entry>, depth: usize) -> Vec<Entry> {
    entries
        .map(|entry| match entry {
            ast::Entry::AttrpathValue(binding) => {
                let span = span_of(binding.syntax());
                Entry::Binding(Binding {
                    path: lower_attrpath(binding.attrpath(), depth),
                    value: match binding.value() {
                        Some(value) => lower_expr(value, depth),
                        None => Expr {
                            span: span.clone(),
                            kind: ExprKind::Other,
                        },
                    },
                    span,
                })
            }
            ast::Entry::Inherit(inherit) => Entry::Inherit(Inherit {
                from: inherit
                    .from()
                    .and_then(|f| f.expr())
                    .map(|e| lower_expr(e, depth)),
                names: inherit.attrs().map(|a| lower_attr(a, depth)).collect(),
                span: span_of(inherit.syntax()),
            }),
        })
        .collect()
}

fn lower_param(param: Option<ast::Param>) -> Param {
    match param {
        Some(ast::Param::IdentParam(ident)) => Param::Ident(
            ident
                .ident()
                .map(|i| i.syntax().text().to_string())
                .unwrap_or_default(),
        ),
        Some(ast::Param::Pattern(pattern)) => Param::Pattern {
            names: pattern
                .pat_entries()
                .filter_map(|e| e.ident())
                .map(|i| i.syntax().text().to_string())
                .collect(),
            ellipsis: pattern.ellipsis_token().is_some(),
            bind: pattern
                .pat_bind()
                .and_then(|b| b.ident())
                .map(|i| i.syntax().text().to_string()),
        },
        None => Param::Ident(String::new()),
    }
}

impl Expr {
    /// The identifier this expression is, if it is one.
    pub fn ident(&self) -> Option<&str> {
        match &self.kind {
            ExprKind::Ident(name) => Some(name),
            _ => None,
        }
    }

    /// The dotted name of an identifier or a select without `or`: `lib.types.str`.
    pub fn dotted_name(&self) -> Option<String> {
        match &self.kind {
            ExprKind::Ident(name) => Some(name.clone()),
            ExprKind::Select {
                expr,
                path,
                default: None,
            } => {
                let mut name = expr.dotted_name()?;
                for key in path {
                    name.push('.');
                    name.push_str(key.name.as_deref()?);
                }
                Some(name)
            }
            _ => None,
        }
    }

    /// A function application split into the function and its arguments: `f a b` → (`f`, [a, b]).
    pub fn call(&self) -> Option<(&Expr, Vec<&Expr>)> {
        let mut args = Vec::new();
        let mut current = self;
        while let ExprKind::Apply { function, argument } = &current.kind {
            args.push(argument.as_ref());
            current = function;
        }
        if args.is_empty() {
            return None;
        }
        args.reverse();
        Some((current, args))
    }

    /// A call of a named function, by the last part of its name: `lib.mkIf c x` → (`mkIf`,
    /// [c, x]).
    pub fn named_call(&self) -> Option<(String, Vec<&Expr>)> {
        let (function, args) = self.call()?;
        let name = function.dotted_name()?;
        let last = name.rsplit('.').next().unwrap_or(&name).to_owned();
        Some((last, args))
    }

    /// An integer literal, also negated: `3`, `-3`.
    pub fn int_literal(&self) -> Option<i64> {
        match &self.kind {
            ExprKind::Int(i) => Some(*i),
            ExprKind::Negate(inner) => match inner.kind {
                ExprKind::Int(i) => i.checked_neg(),
                _ => None,
            },
            _ => None,
        }
    }

    /// The text of a string literal without interpolation.
    pub fn str_literal(&self) -> Option<&str> {
        match &self.kind {
            ExprKind::Str(Text::Literal(text)) => Some(text),
            _ => None,
        }
    }
}

impl Expr {
    /// The direct sub-expressions of an expression.
    pub fn children(&self) -> Vec<&Expr> {
        match &self.kind {
            ExprKind::AttrSet { entries, .. } | ExprKind::LetIn { entries, .. } => {
                let mut out: Vec<&Expr> = entries
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Binding(b) => Some(&b.value),
                        Entry::Inherit(i) => i.from.as_ref(),
                    })
                    .collect();
                if let ExprKind::LetIn { body, .. } = &self.kind {
                    out.push(body);
                }
                out
            }
            ExprKind::With { namespace, body } => vec![namespace, body],
            ExprKind::Lambda { body, .. } => vec![body],
            ExprKind::Apply { function, argument } => vec![function, argument],
            ExprKind::Select { expr, default, .. } => {
                let mut out = vec![expr.as_ref()];
                out.extend(default.as_deref());
                out
            }
            ExprKind::List(items) => items.iter().collect(),
            ExprKind::BinOp { lhs, rhs, .. } => vec![lhs, rhs],
            ExprKind::Negate(inner) | ExprKind::Not(inner) => vec![inner],
            ExprKind::If {
                condition,
                then,
                otherwise,
            } => vec![condition, then, otherwise],
            ExprKind::Assert { condition, body } => vec![condition, body],
            ExprKind::HasAttr { expr, .. } => vec![expr],
            _ => Vec::new(),
        }
    }
}

impl Inherit {
    /// Each inherited name with the expression it stands for: `inherit (from) a;` binds `a` to
    /// `from.a`, `inherit a;` to the variable `a` of the enclosing scope.
    pub fn bindings(&self) -> impl Iterator<Item = (&str, Expr)> + '_ {
        self.names.iter().filter_map(move |key| {
            let name = key.name.as_deref()?;
            let kind = match &self.from {
                Some(from) => ExprKind::Select {
                    expr: Box::new(from.clone()),
                    path: vec![key.clone()],
                    default: None,
                },
                None => ExprKind::Ident(name.to_owned()),
            };
            let span = key.span.clone();
            Some((name, Expr { span, kind }))
        })
    }
}

impl Key {
    pub fn is(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }
}

/// Stack for walks over syntax trees: deeply nested (or adversarial) files recurse deeply, and
/// test harness threads have small stacks.
const DEEP_STACK_BYTES: usize = 256 << 20;

/// Runs `f` on a thread with a large stack (or on this one, if no thread can be had).
pub fn with_deep_stack<T: Send>(f: impl Fn() -> T + Sync) -> T {
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .stack_size(DEEP_STACK_BYTES)
            .spawn_scoped(scope, &f)
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => f(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Expr {
        let parsed = parse(text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.root.expect("an expression")
    }

    #[test]
    fn lowers_bindings_with_spans_and_static_keys() {
        let text = r#"{ a.b = 1; "c" = "x"; ${"d"} = ./p; ${e} = 2.5; inherit (lib) f; }"#;
        let ExprKind::AttrSet { rec, entries } = root(text).kind else {
            panic!("not a set")
        };
        assert!(!rec);
        let Entry::Binding(first) = &entries[0] else {
            panic!()
        };
        let names: Vec<_> = first.path.iter().map(|k| k.name.clone()).collect();
        assert_eq!(names, [Some("a".to_owned()), Some("b".to_owned())]);
        assert_eq!(&text[first.value.span.clone()], "1");
        assert_eq!(first.value.kind, ExprKind::Int(1));
        let Entry::Binding(second) = &entries[1] else {
            panic!()
        };
        assert!(second.path[0].is("c"));
        assert_eq!(second.value.str_literal(), Some("x"));
        let Entry::Binding(third) = &entries[2] else {
            panic!()
        };
        assert!(third.path[0].is("d"));
        assert_eq!(
            third.value.kind,
            ExprKind::Path(Text::Literal("./p".into()))
        );
        let Entry::Binding(fourth) = &entries[3] else {
            panic!()
        };
        assert_eq!(fourth.path[0].name, None);
        assert_eq!(fourth.value.kind, ExprKind::Float(2.5));
        let Entry::Inherit(inherit) = &entries[4] else {
            panic!()
        };
        assert_eq!(inherit.from.as_ref().and_then(Expr::ident), Some("lib"));
        assert!(inherit.names[0].is("f"));
        let (name, value) = inherit.bindings().next().unwrap();
        assert_eq!(name, "f");
        assert_eq!(value.dotted_name().as_deref(), Some("lib.f"));
        let bare = root("{ inherit g; }");
        let ExprKind::AttrSet { entries, .. } = &bare.kind else {
            panic!("not a set")
        };
        let Entry::Inherit(inherit) = &entries[0] else {
            panic!()
        };
        let (_, value) = inherit.bindings().next().unwrap();
        assert_eq!(value.ident(), Some("g"));
    }

    #[test]
    fn strings_with_interpolation_are_not_literals() {
        assert_eq!(
            root(r#""a${b}""#).kind,
            ExprKind::Str(Text::Interpolated("a${b}".into()))
        );
        assert_eq!(
            root("''\n  two\n    lines\n''").str_literal(),
            Some("two\n  lines\n")
        );
        assert_eq!(root(r#""\${x}""#).str_literal(), Some("${x}"));
    }

    #[test]
    fn calls_and_dotted_names() {
        let expr = root("lib.mkOverride 50 (x)");
        let (function, args) = expr.call().unwrap();
        assert_eq!(function.dotted_name().as_deref(), Some("lib.mkOverride"));
        assert_eq!(args.len(), 2);
        assert_eq!(args[1].ident(), Some("x"), "parentheses are dropped");
        let (name, args) = expr.named_call().unwrap();
        assert_eq!((name.as_str(), args.len()), ("mkOverride", 2));
        assert_eq!(root("mkIf c x").named_call().unwrap().0, "mkIf");
        assert!(
            root("(x: x) 1").named_call().is_none(),
            "not a named function"
        );
        assert_eq!(root("-3").int_literal(), Some(-3));
        assert_eq!(root("3").int_literal(), Some(3));
        assert_eq!(root("-x").int_literal(), None);
        assert_eq!(
            root("-3").kind,
            ExprKind::Negate(Box::new(Expr {
                span: 1..2,
                kind: ExprKind::Int(3)
            }))
        );
    }

    #[test]
    fn syntax_errors_give_no_tree() {
        let parsed = parse("{ a = ; }");
        assert!(parsed.root.is_none());
        assert!(!parsed.errors.is_empty());
        let parsed = parse("{ a = 1;");
        assert!(
            parsed
                .errors
                .iter()
                .any(|e| e.message.contains("end of file"))
        );
    }

    /// rnix's expectations in words: an attribute name, not "an identifier or or or cur pos".
    #[test]
    fn syntax_errors_say_what_was_expected_in_words() {
        let first = |text: &str| parse(text).errors[0].message.clone();
        assert_eq!(
            first("{ microvm. = 1; }"),
            "unexpected `=`, expected an attribute name"
        );
        assert_eq!(
            first("{ microvm."),
            "unexpected end of file, expected an attribute name"
        );
        let message = first("{ a = 1 }");
        assert!(!message.contains("token"), "{message}");
    }

    #[test]
    fn deep_nesting_is_cut_off_not_overflowed() {
        let text = format!("{}1{}", "[".repeat(400), "]".repeat(400));
        let parsed = parse(&text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        // The lists are lowered down to MAX_DEPTH; below that is one Other, not the `1`.
        let mut expr = parsed.root.as_ref().expect("a tree");
        let mut levels = 0;
        while let ExprKind::List(items) = &expr.kind {
            assert_eq!(items.len(), 1);
            expr = &items[0];
            levels += 1;
        }
        assert_eq!(expr.kind, ExprKind::Other, "cut off");
        assert_eq!(levels, MAX_DEPTH + 1);
        let chain = vec!["1"; 500].join(" + ");
        assert!(parse(&chain).root.is_some());
    }

    /// Shapes that rnix and rowan parse in quadratic time are refused with a syntax error.
    #[test]
    fn costly_shapes_are_refused() {
        let refused = |text: &str, what: &str| {
            let parsed = parse(text);
            assert!(parsed.root.is_none(), "{what} should be refused");
            assert_eq!(parsed.errors.len(), 1, "{what}: {:?}", parsed.errors);
            parsed.errors[0].clone()
        };
        let select = format!("{{ a = x{}; }}", ".a".repeat(MAX_NAME_RUN));
        let error = refused(&select, "a long attribute path");
        assert!(error.message.contains("a name of"), "{error:?}");
        assert_eq!(
            &select[error.span.clone()],
            format!("x{}", ".a".repeat(MAX_NAME_RUN))
        );
        let error = refused(
            &format!("f{}", " x".repeat(MAX_CHAIN + 1)),
            "an application chain",
        );
        assert!(
            error.message.contains("operators and arguments"),
            "{error:?}"
        );
        refused(
            &format!("{}1", "- ".repeat(MAX_CHAIN + 1)),
            "a chain of minus signs",
        );
        refused(&vec!["1"; MAX_CHAIN].join("+"), "a chain of additions");
        // Within bounds, and long runs in strings and comments, lists of many elements and
        // many short expressions, are read.
        let fine = [
            format!("{{ a = x{}; }}", ".a".repeat(MAX_NAME_RUN / 2 - 1)),
            format!("f{}", " x".repeat(MAX_CHAIN - 1)),
            format!(
                "{{ s = \"{0}\"; t = ''{0}''; /* {0} */ }} # {0}\n",
                "a".repeat(5 * MAX_NAME_RUN)
            ),
            format!("[{}]", " x".repeat(10 * MAX_CHAIN)),
            format!("{{{}}}", " a = f x;".repeat(10 * MAX_CHAIN)),
        ];
        for text in fine {
            let parsed = parse(&text);
            assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        }
    }
}
