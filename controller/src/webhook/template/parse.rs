//! Template source → tree: text, actions and the control structures around them.

#[derive(Debug)]
pub struct ParseError {
    pub line: usize,
    pub action: Option<String>,
    pub reason: String,
}

/// Where an action is, for errors: its line and its text.
#[derive(Debug, Clone)]
pub struct Span {
    pub line: usize,
    pub text: String,
}

#[derive(Debug)]
pub enum Node {
    Text(String),
    /// Prints the pipeline's value, unless it declares or assigns variables.
    Action(Span, Pipeline),
    If(Span, Pipeline, Vec<Node>, Vec<Node>),
    Range(Span, Pipeline, Vec<Node>, Vec<Node>),
    With(Span, Pipeline, Vec<Node>, Vec<Node>),
    Break,
    Continue,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `$x :=` or `$i, $e :=` (range), with `assign` for `$x =`.
    pub vars: Vec<String>,
    pub assign: bool,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone)]
pub struct Command {
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub enum Arg {
    /// `.` followed by fields: `.` is an empty chain.
    Dot(Vec<String>),
    /// `$name.Field...`; `$` alone is the name "".
    Var(String, Vec<String>),
    Func(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    /// `( pipeline ).Field...`
    Sub(Box<Pipeline>, Vec<String>),
}

pub const FUNCTIONS: &[&str] = &[
    "and", "or", "not", "len", "index", "print", "printf", "println", "eq", "ne", "lt", "le", "gt",
    "ge",
];

enum Item {
    Text(String),
    Action(Span),
}

/// Splits the source into text and actions (comments dropped, `{{-`/`-}}` applied).
fn items(source: &str) -> Result<Vec<Item>, ParseError> {
    let mut items = Vec::new();
    let mut rest = source;
    let mut offset = 0;
    let line_at = |pos: usize| source[..pos].matches('\n').count() + 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let text = if trim_next { rest.trim_start() } else { rest };
            items.push(Item::Text(text.to_owned()));
            break;
        };
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let trim_left = after.starts_with('-') && after[1..].starts_with(char::is_whitespace);
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_owned()));
        }
        let line = line_at(offset + open);
        let body_start = if trim_left { 1 } else { 0 };
        let close = find_close(&after[body_start..]).ok_or_else(|| ParseError {
            line,
            action: None,
            reason: "unclosed action (no \"}}\")".into(),
        })?;
        let mut body = &after[body_start..body_start + close];
        trim_next = body.ends_with('-') && body[..body.len() - 1].ends_with(char::is_whitespace);
        if trim_next {
            body = &body[..body.len() - 1];
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            items.push(Item::Action(Span {
                line,
                text: body.to_owned(),
            }));
        }
        let consumed = open + 2 + body_start + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    Ok(items)
}

/// The position of the `}}` closing an action, skipping string literals.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    /// `.A.B`, `.` alone is empty.
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Pipe,
    Open,
    /// `)` and the fields that follow it.
    Close(Vec<String>),
    Declare,
    Assign,
    Comma,
}

fn fields(chars: &[char], i: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    while *i < chars.len() && chars[*i] == '.' {
        let start = *i + 1;
        let mut end = start;
        while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
            end += 1;
        }
        if end == start {
            break;
        }
        out.push(chars[start..end].iter().collect());
        *i = end;
    }
    out
}

fn tokens(span: &Span) -> Result<Vec<Token>, ParseError> {
    let fail = |reason: String| ParseError {
        line: span.line,
        action: Some(span.text.clone()),
        reason,
    };
    let chars: Vec<char> = span.text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                out.push(Token::Pipe);
                i += 1
            }
            '(' => {
                out.push(Token::Open);
                i += 1
            }
            ')' => {
                i += 1;
                out.push(Token::Close(fields(&chars, &mut i)));
            }
            ',' => {
                out.push(Token::Comma);
                i += 1
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::Declare);
                i += 2
            }
            '=' => {
                out.push(Token::Assign);
                i += 1
            }
            '.' => {
                let chain = fields(&chars, &mut i);
                if chain.is_empty() {
                    i += 1;
                }
                out.push(Token::Dot(chain));
            }
            '$' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                i = end;
                out.push(Token::Var(name, fields(&chars, &mut i)));
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(fail("unterminated quoted string".into())),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            s.push(match chars.get(i) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                other => {
                                    return Err(fail(format!(
                                        "unknown escape \\{other:?} in string"
                                    )));
                                }
                            });
                        }
                        Some(&c) => s.push(c),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Str(s));
            }
            '`' => {
                let start = i + 1;
                let end = (start..chars.len())
                    .find(|&j| chars[j] == '`')
                    .ok_or_else(|| fail("unterminated raw string".into()))?;
                out.push(Token::Str(chars[start..end].iter().collect()));
                i = end + 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect::<String>().replace('_', "");
                if let Ok(n) = word.parse::<i64>() {
                    out.push(Token::Int(n));
                } else if let Some(n) = word
                    .strip_prefix("0x")
                    .and_then(|h| i64::from_str_radix(h, 16).ok())
                {
                    out.push(Token::Int(n));
                } else if let Ok(f) = word.parse::<f64>() {
                    out.push(Token::Float(f));
                } else {
                    return Err(fail(format!("bad number syntax: {word:?}")));
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return Err(fail(format!("unexpected {other:?} in action"))),
        }
    }
    Ok(out)
}

struct Parser {
    items: std::vec::IntoIter<Item>,
    /// Where the template ends, for "unexpected end" errors.
    last_line: usize,
}

/// What ended a list of nodes.
enum Terminator {
    Eof,
    End(Span),
    Else(Span, Vec<Token>),
}

pub fn parse(source: &str) -> Result<Vec<Node>, ParseError> {
    let items = items(source)?;
    let mut parser = Parser {
        items: items.into_iter(),
        last_line: source.matches('\n').count() + 1,
    };
    let (nodes, end) = parser.list()?;
    match end {
        Terminator::Eof => Ok(nodes),
        Terminator::End(span) | Terminator::Else(span, _) => Err(ParseError {
            line: span.line,
            action: Some(span.text.clone()),
            reason: format!("unexpected {{{{{}}}}}", span.text),
        }),
    }
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, Terminator), ParseError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            let span = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Item::Action(span) => span,
            };
            let mut toks = tokens(&span)?;
            let keyword = match toks.first() {
                Some(Token::Word(w)) => Some(w.clone()),
                _ => None,
            };
            let fail = |reason: String| ParseError {
                line: span.line,
                action: Some(span.text.clone()),
                reason,
            };
            match keyword.as_deref() {
                Some("end") if toks.len() == 1 => return Ok((nodes, Terminator::End(span))),
                Some("else") => {
                    toks.remove(0);
                    return Ok((nodes, Terminator::Else(span, toks)));
                }
                Some("if") | Some("range") | Some("with") => {
                    toks.remove(0);
                    let node = self.control(keyword.as_deref().unwrap_or_default(), span, toks)?;
                    nodes.push(node);
                }
                Some("break") if toks.len() == 1 => nodes.push(Node::Break),
                Some("continue") if toks.len() == 1 => nodes.push(Node::Continue),
                Some(w @ ("define" | "template" | "block")) => {
                    return Err(fail(format!(
                        "{{{{{w}}}}} is not supported by faultline's templates"
                    )));
                }
                _ => {
                    let pipe = pipeline(&span, &toks, true)?;
                    nodes.push(Node::Action(span, pipe));
                }
            }
        }
        Ok((nodes, Terminator::Eof))
    }

    /// `if`/`range`/`with` after their keyword, up to their `{{end}}`.
    fn control(&mut self, kind: &str, span: Span, toks: Vec<Token>) -> Result<Node, ParseError> {
        let pipe = pipeline(&span, &toks, kind == "range")?;
        if pipe.assign || (kind != "range" && pipe.vars.len() > 1) {
            return Err(ParseError {
                line: span.line,
                action: Some(span.text.clone()),
                reason: format!("too many declarations in {kind}"),
            });
        }
        let (body, end) = self.list()?;
        let otherwise = match end {
            Terminator::Eof => {
                return Err(ParseError {
                    line: self.last_line,
                    action: None,
                    reason: format!(
                        "unexpected end of template: the {{{{{}}}}} of line {} has no {{{{end}}}}",
                        span.text, span.line
                    ),
                });
            }
            Terminator::End(_) => Vec::new(),
            Terminator::Else(else_span, rest) => {
                if rest.is_empty() {
                    let (otherwise, end) = self.list()?;
                    match end {
                        Terminator::End(_) => otherwise,
                        Terminator::Eof => {
                            return Err(ParseError {
                                line: self.last_line,
                                action: None,
                                reason: format!(
                                    "unexpected end of template: the {{{{else}}}} of line {} has no {{{{end}}}}",
                                    else_span.line
                                ),
                            });
                        }
                        Terminator::Else(s, _) => {
                            return Err(ParseError {
                                line: s.line,
                                action: Some(s.text),
                                reason: "a second {{else}}".into(),
                            });
                        }
                    }
                } else {
                    // `else if ...` / `else with ...`: a nested node sharing this `end`.
                    let mut rest = rest;
                    match rest.first() {
                        Some(Token::Word(w)) if (w == "if" || w == "with") && w == kind => {
                            rest.remove(0);
                            vec![self.control(kind, else_span, rest)?]
                        }
                        _ => {
                            return Err(ParseError {
                                line: else_span.line,
                                action: Some(else_span.text),
                                reason: format!("unexpected words after else in {kind}"),
                            });
                        }
                    }
                }
            }
        };
        Ok(match kind {
            "if" => Node::If(span, pipe, body, otherwise),
            "range" => Node::Range(span, pipe, body, otherwise),
            _ => Node::With(span, pipe, body, otherwise),
        })
    }
}

fn pipeline(span: &Span, toks: &[Token], declare: bool) -> Result<Pipeline, ParseError> {
    let fail = |reason: String| ParseError {
        line: span.line,
        action: Some(span.text.clone()),
        reason,
    };
    let mut vars = Vec::new();
    let mut assign = false;
    let mut rest = toks;
    // `$x :=`, `$x =`, `$i, $e :=`
    let decl_end = toks
        .iter()
        .position(|t| matches!(t, Token::Declare | Token::Assign));
    if let Some(end) = decl_end {
        let names = &toks[..end];
        let mut expect_var = true;
        for t in names {
            match (t, expect_var) {
                (Token::Var(name, f), true) if f.is_empty() && !name.is_empty() => {
                    vars.push(name.clone());
                    expect_var = false;
                }
                (Token::Comma, false) if declare => expect_var = true,
                _ => return Err(fail("bad variable declaration".into())),
            }
        }
        if expect_var || vars.len() > 2 {
            return Err(fail("bad variable declaration".into()));
        }
        assign = matches!(toks[end], Token::Assign);
        rest = &toks[end + 1..];
    }
    let (commands, used) = commands(span, rest, false)?;
    if used != rest.len() {
        return Err(fail("unexpected \")\"".into()));
    }
    if commands.is_empty() {
        return Err(fail("missing value".into()));
    }
    Ok(Pipeline {
        vars,
        assign,
        commands,
    })
}

/// Commands separated by `|`, up to the end or (inside parentheses) the closing `)`.
fn commands(
    span: &Span,
    toks: &[Token],
    nested: bool,
) -> Result<(Vec<Command>, usize), ParseError> {
    let fail = |reason: String| ParseError {
        line: span.line,
        action: Some(span.text.clone()),
        reason,
    };
    let mut commands = Vec::new();
    let mut args = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let arg = match &toks[i] {
            Token::Close(_) if nested => break,
            Token::Close(_) => return Err(fail("unexpected \")\"".into())),
            Token::Pipe => {
                if args.is_empty() {
                    return Err(fail("missing command before \"|\"".into()));
                }
                commands.push(Command {
                    args: std::mem::take(&mut args),
                });
                i += 1;
                continue;
            }
            Token::Open => {
                let (inner, used) = commands_in_parens(span, &toks[i + 1..])?;
                i += used + 1;
                let Some(Token::Close(after)) = toks.get(i) else {
                    return Err(fail("unclosed \"(\"".into()));
                };
                if inner.is_empty() {
                    return Err(fail("missing value in \"()\"".into()));
                }
                Arg::Sub(
                    Box::new(Pipeline {
                        vars: Vec::new(),
                        assign: false,
                        commands: inner,
                    }),
                    after.clone(),
                )
            }
            Token::Dot(f) => Arg::Dot(f.clone()),
            Token::Var(n, f) => Arg::Var(n.clone(), f.clone()),
            Token::Str(s) => Arg::Str(s.clone()),
            Token::Int(n) => Arg::Int(*n),
            Token::Float(n) => Arg::Float(*n),
            Token::Word(w) => match w.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                f if FUNCTIONS.contains(&f) => Arg::Func(f.to_owned()),
                f => return Err(fail(format!("function {f:?} not defined"))),
            },
            Token::Declare | Token::Assign | Token::Comma => {
                return Err(fail("unexpected declaration".into()));
            }
        };
        args.push(arg);
        i += 1;
    }
    if !args.is_empty() {
        commands.push(Command { args });
    } else if !commands.is_empty() {
        return Err(fail("missing command after \"|\"".into()));
    }
    Ok((commands, i))
}

fn commands_in_parens(span: &Span, toks: &[Token]) -> Result<(Vec<Command>, usize), ParseError> {
    commands(span, toks, true)
}
