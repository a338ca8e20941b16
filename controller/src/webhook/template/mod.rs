//! Go `text/template` rendering of the sidecar templates, behind a small trait so that the
//! engine can be swapped.
//!
//! Why our own engine: the Go-template crate on crates.io, gtmpl (0.7.1, the only one with Go's
//! semantics rather than a Jinja look-alike), is marked passively maintained, still on
//! thiserror 1 and lazy_static, and its execution errors (`gtmpl::ExecError`) carry neither the
//! line nor the argument, which a user fixing a ConfigMap needs. The templates
//! of the sidecar mode use a small part of text/template, implemented here with Go's semantics:
//! text with `{{- -}}` trimming and comments; fields (`.A.B`), `.`, `$`, variables (`$x := ...`,
//! `range $i, $e := ...`); `if`/`else if`/`else`, `range` (lists, maps in key order, integers)
//! with `else`, `break` and `continue`, `with`/`else`; pipelines (`a | printf "%s"`) and
//! parenthesized pipelines; the builtins `and or not len index print printf println eq ne lt le
//! gt ge`. Not supported (a clear parse error): `define`, `template`, `block`, methods,
//! `html`/`js`/`urlquery`. One deliberate difference: a missing key is an error naming the
//! argument (Go's `missingkey=error`), not `<no value>` in a rendered path.

mod exec;
mod parse;

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// A template engine: compiles a named template once, renders it with arguments many times.
pub trait TemplateEngine: Send + Sync {
    fn compile(&self, name: &str, source: &str) -> Result<Arc<dyn Template>, TemplateError>;
}

/// A compiled template.
pub trait Template: Send + Sync + fmt::Debug {
    fn name(&self) -> &str;
    fn render(&self, arguments: &Value) -> Result<String, TemplateError>;
}

/// What went wrong, where: the template's name, the line of the action, the action's text and,
/// for a missing argument, which one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?}, line {line}{}: {reason}", action.as_ref().map(|a| format!(", at {{{{{a}}}}}")).unwrap_or_default())]
pub struct TemplateError {
    pub template: String,
    pub line: usize,
    /// The action's text between the braces, when the error is in one.
    pub action: Option<String>,
    /// The argument that is missing, when that is the error.
    pub argument: Option<String>,
    pub reason: String,
}

/// Go's text/template, the subset listed in this module's documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct GoTemplates;

impl TemplateEngine for GoTemplates {
    fn compile(&self, name: &str, source: &str) -> Result<Arc<dyn Template>, TemplateError> {
        let nodes = parse::parse(source).map_err(|e| TemplateError {
            template: name.to_owned(),
            line: e.line,
            action: e.action,
            argument: None,
            reason: e.reason,
        })?;
        Ok(Arc::new(GoTemplate {
            name: name.to_owned(),
            nodes,
        }))
    }
}

#[derive(Debug)]
struct GoTemplate {
    name: String,
    nodes: Vec<parse::Node>,
}

impl Template for GoTemplate {
    fn name(&self) -> &str {
        &self.name
    }

    fn render(&self, arguments: &Value) -> Result<String, TemplateError> {
        exec::render(&self.nodes, arguments).map_err(|e| TemplateError {
            template: self.name.clone(),
            line: e.line,
            action: Some(e.action),
            argument: e.argument,
            reason: e.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, args: Value) -> Result<String, TemplateError> {
        GoTemplates.compile("t", source)?.render(&args)
    }

    fn ok(source: &str, args: Value) -> String {
        render(source, args).unwrap_or_else(|e| panic!("{source:?}: {e}"))
    }

    #[test]
    fn fields_text_and_trimming() {
        let args = json!({"DataPath": "/var/lib/tikv/data", "M": {"Inner": "x"}});
        assert_eq!(
            ok("-d {{.DataPath}} -f {{ .M.Inner }}.", args.clone()),
            "-d /var/lib/tikv/data -f x."
        );
        assert_eq!(ok("a  {{- .M.Inner -}}  \n b", args.clone()), "axb");
        assert_eq!(ok("a{{/* a comment */}}b", args.clone()), "ab");
        assert_eq!(ok("{{ $.M.Inner }}", args), "x");
    }

    #[test]
    fn conditionals_and_with() {
        let src = "{{if .A}}a{{else if .B}}b{{else}}none{{end}}";
        assert_eq!(ok(src, json!({"A": "1", "B": true})), "a");
        assert_eq!(ok(src, json!({"A": "", "B": true})), "b");
        assert_eq!(ok(src, json!({"A": 0, "B": []})), "none");
        let with = "{{with .M}}{{.K}}{{else}}empty{{end}}";
        assert_eq!(ok(with, json!({"M": {"K": "v"}})), "v");
        assert_eq!(ok(with, json!({"M": {}})), "empty");
    }

    #[test]
    fn range_over_lists_maps_and_ints() {
        let args = json!({"L": ["a", "b", "c"], "M": {"z": 1, "a": 2}});
        assert_eq!(ok("{{range .L}}[{{.}}]{{end}}", args.clone()), "[a][b][c]");
        assert_eq!(
            ok("{{range $i, $e := .L}}{{$i}}={{$e}} {{end}}", args.clone()),
            "0=a 1=b 2=c "
        );
        assert_eq!(
            ok("{{range $k, $v := .M}}{{$k}}:{{$v}},{{end}}", args.clone()),
            "a:2,z:1,"
        );
        assert_eq!(
            ok("{{range .Nope}}x{{else}}empty{{end}}", json!({"Nope": []})),
            "empty"
        );
        assert_eq!(ok("{{range 3}}{{.}}{{end}}", json!({})), "012");
        assert_eq!(
            ok(
                "{{range .L}}{{if eq . \"b\"}}{{continue}}{{end}}{{if eq . \"c\"}}{{break}}{{end}}{{.}}{{end}}",
                args
            ),
            "a"
        );
    }

    #[test]
    fn pipelines_printf_and_builtins() {
        let args = json!({"Port": 65533, "Name": "tikv", "L": ["x", "y"]});
        assert_eq!(
            ok("{{printf \"-addr=:%d\" .Port}}", args.clone()),
            "-addr=:65533"
        );
        assert_eq!(
            ok(
                "{{.Name | printf \"%s-fuse\" | printf \"%q\"}}",
                args.clone()
            ),
            "\"tikv-fuse\""
        );
        assert_eq!(ok("{{len .L}} {{index .L 1}}", args.clone()), "2 y");
        assert_eq!(
            ok("{{if and .Name (gt .Port 1024)}}high{{end}}", args.clone()),
            "high"
        );
        assert_eq!(
            ok(
                "{{or .Missing2 .Name}}",
                json!({"Missing2": "", "Name": "n"})
            ),
            "n"
        );
        assert_eq!(
            ok("{{not .Name}} {{ne .Name \"x\"}}", args.clone()),
            "false true"
        );
        assert_eq!(
            ok("{{print .Name 1 2}}|{{println .Name}}", args.clone()),
            "tikv1 2|tikv\n"
        );
        assert_eq!(
            ok("{{$x := .Name}}{{$x}}{{$x = \"y\"}}{{$x}}", args.clone()),
            "tikvy"
        );
        assert_eq!(
            ok(
                "{{printf \"%5s|%-4d|%.2f|%v|%t\" \"ab\" 7 1.5 .L true}}",
                args
            ),
            "   ab|7   |1.50|[x y]|true"
        );
    }

    #[test]
    fn errors_name_template_line_action_and_argument() {
        let err = render("line one\n  -d {{.DataPath}}\n", json!({"MountPath": "/m"})).unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.argument.as_deref(), Some("DataPath"));
        assert_eq!(
            err.to_string(),
            "template \"t\", line 2, at {{.DataPath}}: argument \"DataPath\" is not given (given: MountPath)"
        );
        let err = render("a\nb\n{{if .A}}x", json!({})).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("unexpected end of template"), "{err}");
        let err = render("{{ .A | nosuch }}", json!({"A": 1})).unwrap_err();
        assert!(
            err.reason.contains("function \"nosuch\" not defined"),
            "{err}"
        );
        let err = render("{{ .A.B }}", json!({"A": "str"})).unwrap_err();
        assert!(
            err.reason.contains("can't evaluate field B in a string"),
            "{err}"
        );
        let err = render("{{ .A ", json!({})).unwrap_err();
        assert!(err.reason.contains("unclosed action"), "{err}");
        let err = render("{{ index .L 5 }}", json!({"L": [1]})).unwrap_err();
        assert!(err.reason.contains("index out of range: 5"), "{err}");
        let err = render("{{ template \"x\" }}", json!({})).unwrap_err();
        assert!(err.reason.contains("not supported"), "{err}");
    }
}
