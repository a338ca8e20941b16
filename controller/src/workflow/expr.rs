//! The expressions of a Task's `conditionalBranches` (Chaos Mesh evaluates them with
//! antonmedv/expr over `exitCode` and `stdout`): the part of that language such conditions use —
//! integer and string literals, `true`/`false`, the two names, `== != < <= > >=`, `&& || !` (and
//! `and`, `or`, `not`), parentheses. An empty expression does not evaluate (Chaos Mesh's branch
//! is then Unknown).

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Str(String),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Int(i64),
    Str(String),
    Name(String),
    Op(&'static str),
    Open,
    Close,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Lit(Value),
    Name(String),
    Not(Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push(Token::Int(
                s.parse().map_err(|_| format!("{s}: too large"))?,
            ));
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("an unterminated string".into()),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        i += 1;
                        match chars.get(i) {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(&e) => s.push(e),
                            None => return Err("an unterminated string".into()),
                        }
                    }
                    Some(&x) => s.push(x),
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Str(s));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(match word.as_str() {
                "and" => Token::Op("&&"),
                "or" => Token::Op("||"),
                "not" => Token::Op("!"),
                _ => Token::Name(word),
            });
        } else if c == '(' {
            out.push(Token::Open);
            i += 1;
        } else if c == ')' {
            out.push(Token::Close);
            i += 1;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = ["==", "!=", "<=", ">=", "&&", "||"]
                .into_iter()
                .find(|op| *op == two);
            match (op, c) {
                (Some(op), _) => {
                    out.push(Token::Op(op));
                    i += 2;
                }
                (None, '<') => {
                    out.push(Token::Op("<"));
                    i += 1;
                }
                (None, '>') => {
                    out.push(Token::Op(">"));
                    i += 1;
                }
                (None, '!') => {
                    out.push(Token::Op("!"));
                    i += 1;
                }
                _ => return Err(format!("unexpected {c:?}")),
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek_op(&self, ops: &[&'static str]) -> Option<&'static str> {
        match self.tokens.get(self.at) {
            Some(Token::Op(op)) if ops.contains(op) => Some(op),
            _ => None,
        }
    }

    fn binary(
        &mut self,
        ops: &[&'static str],
        next: fn(&mut Parser) -> Result<Expr, String>,
    ) -> Result<Expr, String> {
        let mut left = next(self)?;
        while let Some(op) = self.peek_op(ops) {
            self.at += 1;
            let right = next(self)?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr, String> {
        self.binary(&["||"], Parser::and)
    }

    fn and(&mut self) -> Result<Expr, String> {
        self.binary(&["&&"], Parser::compare)
    }

    fn compare(&mut self) -> Result<Expr, String> {
        self.binary(&["==", "!=", "<", "<=", ">", ">="], Parser::unary)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_op(&["!"]).is_some() {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Int(n)) => Ok(Expr::Lit(Value::Int(n))),
            Some(Token::Str(s)) => Ok(Expr::Lit(Value::Str(s))),
            Some(Token::Name(n)) if n == "true" => Ok(Expr::Lit(Value::Bool(true))),
            Some(Token::Name(n)) if n == "false" => Ok(Expr::Lit(Value::Bool(false))),
            Some(Token::Name(n)) => Ok(Expr::Name(n)),
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.tokens.get(self.at) {
                    Some(Token::Close) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => Err("a missing ')'".into()),
                }
            }
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("an incomplete expression".into()),
        }
    }
}

/// Parses an expression; the error says where it went wrong.
pub fn parse(text: &str) -> Result<Expr, String> {
    if text.trim().is_empty() {
        return Err("an empty expression".into());
    }
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
    };
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(format!(
            "{text:?}: unexpected {:?}",
            parser.tokens[parser.at]
        ));
    }
    Ok(expr)
}

fn eval(expr: &Expr, env: &BTreeMap<String, Value>) -> Result<Value, String> {
    Ok(match expr {
        Expr::Lit(v) => v.clone(),
        Expr::Name(n) => env
            .get(n)
            .cloned()
            .ok_or_else(|| format!("unknown name {n:?}"))?,
        Expr::Not(inner) => match eval(inner, env)? {
            Value::Bool(b) => Value::Bool(!b),
            other => return Err(format!("! of {other:?}")),
        },
        Expr::Bin(op, l, r) => {
            let l = eval(l, env)?;
            if *op == "&&" || *op == "||" {
                let Value::Bool(lb) = l else {
                    return Err(format!("{op} of {l:?}"));
                };
                if (*op == "&&" && !lb) || (*op == "||" && lb) {
                    return Ok(Value::Bool(lb));
                }
                return match eval(r, env)? {
                    Value::Bool(rb) => Ok(Value::Bool(rb)),
                    other => Err(format!("{op} of {other:?}")),
                };
            }
            let r = eval(r, env)?;
            let ordering = match (&l, &r) {
                (Value::Int(a), Value::Int(b)) => a.cmp(b),
                (Value::Str(a), Value::Str(b)) => a.cmp(b),
                (Value::Bool(a), Value::Bool(b)) if *op == "==" || *op == "!=" => a.cmp(b),
                _ if *op == "==" => return Ok(Value::Bool(false)),
                _ if *op == "!=" => return Ok(Value::Bool(true)),
                _ => return Err(format!("{l:?} {op} {r:?}: not comparable")),
            };
            use std::cmp::Ordering::*;
            Value::Bool(match *op {
                "==" => ordering == Equal,
                "!=" => ordering != Equal,
                "<" => ordering == Less,
                "<=" => ordering != Greater,
                ">" => ordering == Greater,
                _ => ordering != Less,
            })
        }
    })
}

/// Evaluates to a boolean, as expr's EvalBool.
pub fn eval_bool(text: &str, env: &BTreeMap<String, Value>) -> Result<bool, String> {
    match eval(&parse(text)?, env)? {
        Value::Bool(b) => Ok(b),
        other => Err(format!("{text:?} is {other:?}, not a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(code: i64, stdout: &str) -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("exitCode".to_owned(), Value::Int(code)),
            ("stdout".to_owned(), Value::Str(stdout.into())),
        ])
    }

    #[test]
    fn chaos_mesh_s_example_branches() {
        // The expressions of Chaos Mesh's custom-task example.
        let a = r#"exitCode == 0 && stdout == "branch-a""#;
        let b = r#"exitCode == 0 && stdout == "branch-b""#;
        let failed = "exitCode != 0";
        assert_eq!(eval_bool(a, &env(0, "branch-b")), Ok(false));
        assert_eq!(eval_bool(b, &env(0, "branch-b")), Ok(true));
        assert_eq!(eval_bool(failed, &env(0, "branch-b")), Ok(false));
        assert_eq!(eval_bool(failed, &env(1, "")), Ok(true));
        assert_eq!(
            eval_bool("!(exitCode > 2) or stdout == 'x'", &env(3, "x")),
            Ok(true)
        );
        assert_eq!(
            eval_bool("exitCode >= 3 and not false", &env(3, "")),
            Ok(true)
        );
    }

    #[test]
    fn what_does_not_evaluate_is_an_error() {
        assert!(eval_bool("", &env(0, "")).is_err());
        assert!(eval_bool("exitCode ==", &env(0, "")).is_err());
        assert!(eval_bool("exitCode", &env(0, "")).is_err());
        assert!(eval_bool("nope == 1", &env(0, "")).is_err());
        assert!(eval_bool("(exitCode == 0", &env(0, "")).is_err());
        assert!(parse("stdout == \"x").is_err());
    }
}
