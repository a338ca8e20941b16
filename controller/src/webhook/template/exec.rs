//! Executes a parsed template with Go's text/template semantics (truth, printing, builtins).

use std::fmt::Write as _;

use serde_json::Value;

use super::parse::{Arg, Command, Node, Pipeline, Span};

#[derive(Debug)]
pub struct ExecError {
    pub line: usize,
    pub action: String,
    pub argument: Option<String>,
    pub reason: String,
}

/// Why execution of a list stopped early.
enum Flow {
    Normal,
    Break,
    Continue,
}

struct State<'a> {
    root: &'a Value,
    vars: Vec<(String, Value)>,
    out: String,
}

pub fn render(nodes: &[Node], root: &Value) -> Result<String, ExecError> {
    let mut state = State {
        root,
        vars: vec![(String::new(), root.clone())],
        out: String::new(),
    };
    state.list(nodes, root)?;
    Ok(state.out)
}

/// A reason without a place yet; the action that raised it adds its span.
struct Fail {
    argument: Option<String>,
    reason: String,
}

fn fail(reason: impl Into<String>) -> Fail {
    Fail {
        argument: None,
        reason: reason.into(),
    }
}

fn at(span: &Span) -> impl Fn(Fail) -> ExecError + '_ {
    move |f| ExecError {
        line: span.line,
        action: span.text.clone(),
        argument: f.argument,
        reason: f.reason,
    }
}

pub fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `fmt.Print`'s rendering of a value (`%v`).
fn print_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push_str("map[");
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                print_value(out, &map[k]);
            }
            out.push(']');
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

impl State<'_> {
    fn list(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, ExecError> {
        for node in nodes {
            match self.node(node, dot)? {
                Flow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Normal)
    }

    /// Runs `body` with variables declared inside it dropped afterwards.
    fn scoped(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, ExecError> {
        let depth = self.vars.len();
        let flow = self.list(nodes, dot);
        self.vars.truncate(depth);
        flow
    }

    fn node(&mut self, node: &Node, dot: &Value) -> Result<Flow, ExecError> {
        match node {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(span, pipe) => {
                let value = self.pipeline(pipe, dot).map_err(at(span))?;
                if pipe.vars.is_empty() {
                    print_value(&mut self.out, &value);
                } else {
                    self.set_vars(span, pipe, &[value])?;
                }
            }
            Node::If(span, pipe, then, otherwise) => {
                let value = self.pipeline(pipe, dot).map_err(at(span))?;
                let depth = self.vars.len();
                if !pipe.vars.is_empty() {
                    self.set_vars(span, pipe, std::slice::from_ref(&value))?;
                }
                let branch = if truth(&value) { then } else { otherwise };
                let flow = self.list(branch, dot);
                self.vars.truncate(depth);
                return flow;
            }
            Node::With(span, pipe, body, otherwise) => {
                let value = self.pipeline(pipe, dot).map_err(at(span))?;
                let depth = self.vars.len();
                let flow = if truth(&value) {
                    if !pipe.vars.is_empty() {
                        self.set_vars(span, pipe, std::slice::from_ref(&value))?;
                    }
                    self.list(body, &value)
                } else {
                    self.list(otherwise, dot)
                };
                self.vars.truncate(depth);
                return flow;
            }
            Node::Range(span, pipe, body, otherwise) => {
                let value = self.pipeline(pipe, dot).map_err(at(span))?;
                let entries: Vec<(Value, Value)> = match &value {
                    Value::Null => Vec::new(),
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (Value::from(i), v.clone()))
                        .collect(),
                    Value::Object(map) => {
                        let mut keys: Vec<&String> = map.keys().collect();
                        keys.sort();
                        keys.into_iter()
                            .map(|k| (Value::from(k.as_str()), map[k].clone()))
                            .collect()
                    }
                    Value::Number(n) => match n.as_i64() {
                        Some(count) => (0..count.max(0))
                            .map(|i| (Value::from(i), Value::from(i)))
                            .collect(),
                        None => {
                            return Err(at(span)(fail(format!("range can't iterate over {n}"))));
                        }
                    },
                    other => {
                        return Err(at(span)(fail(format!(
                            "range can't iterate over a {}",
                            type_name(other)
                        ))));
                    }
                };
                if entries.is_empty() {
                    return self.scoped(otherwise, dot);
                }
                for (key, item) in entries {
                    let depth = self.vars.len();
                    match pipe.vars.len() {
                        0 => {}
                        1 => self.vars.push((pipe.vars[0].clone(), item.clone())),
                        _ => {
                            self.vars.push((pipe.vars[0].clone(), key));
                            self.vars.push((pipe.vars[1].clone(), item.clone()));
                        }
                    }
                    let flow = self.list(body, &item);
                    self.vars.truncate(depth);
                    if let Flow::Break = flow? {
                        break;
                    }
                }
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn set_vars(
        &mut self,
        span: &Span,
        pipe: &Pipeline,
        values: &[Value],
    ) -> Result<(), ExecError> {
        let value = values.first().cloned().unwrap_or(Value::Null);
        let name = &pipe.vars[0];
        if pipe.assign {
            match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value,
                None => return Err(at(span)(fail(format!("undefined variable ${name}")))),
            }
        } else {
            self.vars.push((name.clone(), value));
        }
        Ok(())
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Value) -> Result<Value, Fail> {
        let mut last: Option<Value> = None;
        for command in &pipe.commands {
            last = Some(self.command(command, dot, last)?);
        }
        Ok(last.unwrap_or(Value::Null))
    }

    fn command(&mut self, cmd: &Command, dot: &Value, piped: Option<Value>) -> Result<Value, Fail> {
        let Some(first) = cmd.args.first() else {
            return Err(fail("empty command"));
        };
        if let Arg::Func(name) = first {
            let mut args = cmd.args[1..]
                .iter()
                .map(|a| self.arg(a, dot))
                .collect::<Result<Vec<_>, _>>()?;
            args.extend(piped);
            return call(name, &args);
        }
        if cmd.args.len() > 1 || piped.is_some() {
            return Err(fail(
                "can't give an argument to a non-function (only functions take arguments or a piped value)",
            ));
        }
        self.arg(first, dot)
    }

    fn arg(&mut self, arg: &Arg, dot: &Value) -> Result<Value, Fail> {
        Ok(match arg {
            Arg::Dot(chain) => {
                let at_root = std::ptr::eq(dot, self.root);
                fields(dot, chain, at_root)?
            }
            Arg::Var(name, chain) => {
                let Some((_, value)) = self.vars.iter().rev().find(|(n, _)| n == name) else {
                    return Err(fail(format!("undefined variable ${name}")));
                };
                let value = value.clone();
                fields(&value, chain, name.is_empty())?
            }
            Arg::Func(name) => call(name, &[])?,
            Arg::Str(s) => Value::from(s.as_str()),
            Arg::Int(n) => Value::from(*n),
            Arg::Float(f) => Value::from(*f),
            Arg::Bool(b) => Value::from(*b),
            Arg::Nil => Value::Null,
            Arg::Sub(pipe, chain) => {
                let value = self.pipeline(pipe, dot)?;
                fields(&value, chain, false)?
            }
        })
    }
}

/// `.A.B` on a value; on the template's arguments a missing key names the argument.
fn fields(start: &Value, chain: &[String], at_root: bool) -> Result<Value, Fail> {
    let mut current = start;
    for (depth, field) in chain.iter().enumerate() {
        current = match current {
            Value::Object(map) => match map.get(field) {
                Some(v) => v,
                None if at_root && depth == 0 => {
                    let mut given: Vec<&str> = map.keys().map(String::as_str).collect();
                    given.sort_unstable();
                    return Err(Fail {
                        argument: Some(field.clone()),
                        reason: format!(
                            "argument {field:?} is not given (given: {})",
                            if given.is_empty() {
                                "none".to_owned()
                            } else {
                                given.join(", ")
                            }
                        ),
                    });
                }
                None => return Err(fail(format!("map has no entry for key {field:?}"))),
            },
            other => {
                return Err(fail(format!(
                    "can't evaluate field {field} in a {}",
                    type_name(other)
                )));
            }
        };
    }
    Ok(current.clone())
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn compare(name: &str, a: &Value, b: &Value) -> Result<std::cmp::Ordering, Fail> {
    let incompatible = || {
        fail(format!(
            "{name}: incompatible types for comparison ({} and {})",
            type_name(a),
            type_name(b)
        ))
    };
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => {
            let (x, y) = (number(a).unwrap_or(0.0), number(b).unwrap_or(0.0));
            x.partial_cmp(&y).ok_or_else(incompatible)
        }
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) if name == "eq" || name == "ne" => Ok(x.cmp(y)),
        (Value::Null, Value::Null) if name == "eq" || name == "ne" => Ok(std::cmp::Ordering::Equal),
        _ => Err(incompatible()),
    }
}

fn arity(name: &str, args: &[Value], want: usize) -> Result<(), Fail> {
    if args.len() != want {
        return Err(fail(format!(
            "wrong number of arguments for {name}: want {want}, got {}",
            args.len()
        )));
    }
    Ok(())
}

fn call(name: &str, args: &[Value]) -> Result<Value, Fail> {
    use std::cmp::Ordering::*;
    Ok(match name {
        "and" | "or" => {
            if args.is_empty() {
                return Err(fail(format!("{name} needs at least one argument")));
            }
            let stop = |v: &Value| if name == "and" { !truth(v) } else { truth(v) };
            args.iter()
                .find(|v| stop(v))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null)
        }
        "not" => {
            arity(name, args, 1)?;
            Value::from(!truth(&args[0]))
        }
        "len" => {
            arity(name, args, 1)?;
            Value::from(match &args[0] {
                Value::String(s) => s.len(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                other => return Err(fail(format!("len of a {}", type_name(other)))),
            })
        }
        "index" => {
            let Some((first, keys)) = args.split_first() else {
                return Err(fail("index needs a value to index"));
            };
            let mut current = first.clone();
            for key in keys {
                current = match (&current, key) {
                    (Value::Array(items), Value::Number(n)) => {
                        let i = n.as_u64().and_then(|i| usize::try_from(i).ok());
                        match i.and_then(|i| items.get(i)) {
                            Some(v) => v.clone(),
                            None => return Err(fail(format!("index out of range: {n}"))),
                        }
                    }
                    (Value::Object(map), Value::String(k)) => {
                        map.get(k).cloned().unwrap_or(Value::Null)
                    }
                    (v, k) => {
                        return Err(fail(format!(
                            "can't index a {} with a {}",
                            type_name(v),
                            type_name(k)
                        )));
                    }
                };
            }
            current
        }
        "print" | "println" => {
            let mut out = String::new();
            for (i, v) in args.iter().enumerate() {
                // Print adds spaces between operands when neither is a string; Println always.
                let between =
                    name == "println" || (i > 0 && !args[i - 1].is_string() && !v.is_string());
                if i > 0 && between {
                    out.push(' ');
                }
                print_value(&mut out, v);
            }
            if name == "println" {
                out.push('\n');
            }
            Value::from(out)
        }
        "printf" => {
            let Some((Value::String(format), rest)) = args.split_first() else {
                return Err(fail("printf needs a format string first"));
            };
            Value::from(printf(format, rest))
        }
        "eq" => {
            let Some((first, rest)) = args.split_first() else {
                return Err(fail("eq needs at least two arguments"));
            };
            if rest.is_empty() {
                return Err(fail("eq needs at least two arguments"));
            }
            let mut equal = false;
            for other in rest {
                if compare(name, first, other)? == Equal {
                    equal = true;
                }
            }
            Value::from(equal)
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(name, args, 2)?;
            let order = compare(name, &args[0], &args[1])?;
            Value::from(match name {
                "ne" => order != Equal,
                "lt" => order == Less,
                "le" => order != Greater,
                "gt" => order == Greater,
                _ => order != Less,
            })
        }
        other => return Err(fail(format!("function {other:?} not defined"))),
    })
}

/// `fmt.Sprintf` for the verbs templates use: %v %s %d %q %f %t %x %X %%, with the flags `-`,
/// `0`, `+`, width and precision. A verb without an operand prints `%!v(MISSING)` like Go.
fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let mut next = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero, mut plus) = (false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => left = true,
                '0' => zero = true,
                '+' => plus = true,
                ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = 0usize;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = width * 10 + d as usize;
            chars.next();
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p * 10 + d as usize;
                chars.next();
            }
            precision = Some(p);
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(value) = next.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let mut text = String::new();
        match (verb, value) {
            ('d', Value::Number(n)) if n.is_i64() || n.is_u64() => {
                if plus && n.as_i64().is_some_and(|i| i >= 0) {
                    text.push('+');
                }
                let _ = write!(text, "{n}");
            }
            ('f' | 'F', Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(0.0);
                let _ = write!(text, "{:.*}", precision.unwrap_or(6), f);
            }
            ('x', Value::Number(n)) if n.is_i64() => {
                let _ = write!(text, "{:x}", n.as_i64().unwrap_or(0));
            }
            ('X', Value::Number(n)) if n.is_i64() => {
                let _ = write!(text, "{:X}", n.as_i64().unwrap_or(0));
            }
            ('x', Value::String(s)) => {
                for b in s.bytes() {
                    let _ = write!(text, "{b:02x}");
                }
            }
            ('t', Value::Bool(b)) => {
                let _ = write!(text, "{b}");
            }
            ('q', Value::String(s)) => {
                let _ = write!(text, "{}", Value::from(s.as_str()));
            }
            ('s' | 'v', v) => {
                print_value(&mut text, v);
                if let (Some(p), 's') = (precision, verb) {
                    text = text.chars().take(p).collect();
                }
            }
            (verb, v) => {
                let mut shown = String::new();
                print_value(&mut shown, v);
                let _ = write!(text, "%!{verb}({}={shown})", type_name(v));
            }
        }
        let len = text.chars().count();
        if len < width {
            let pad = width - len;
            if left {
                out.push_str(&text);
                out.extend(std::iter::repeat_n(' ', pad));
            } else {
                let fill = if zero && verb != 's' { '0' } else { ' ' };
                out.extend(std::iter::repeat_n(fill, pad));
                out.push_str(&text);
            }
        } else {
            out.push_str(&text);
        }
    }
    let extra: Vec<&Value> = next.collect();
    if !extra.is_empty() {
        out.push_str("%!(EXTRA ");
        for (i, v) in extra.into_iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}=", type_name(v));
            print_value(&mut out, v);
        }
        out.push(')');
    }
    out
}
