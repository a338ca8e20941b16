//! What a rule does to the head of a request or a response, and to a body it changes. The
//! proxy streams everything else: a body is only read when [`BodyChange`] asks for it.

use http::header::{CONTENT_LENGTH, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{request, response};

use crate::spec::{Action, BodyChange, Rule, Selector, Target};

/// `*` any run of characters, `?` one; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn headers_match(wanted: &[(http::HeaderName, HeaderValue)], have: &HeaderMap) -> bool {
    wanted
        .iter()
        .all(|(name, value)| have.get_all(name).iter().any(|v| v == value))
}

impl Selector {
    /// The request side of the selector (port, path, method, request headers).
    pub fn matches_request(&self, port: u16, request: &request::Parts) -> bool {
        self.port.is_none_or(|p| p == port)
            && self
                .path
                .as_deref()
                .is_none_or(|p| glob(p, request.uri.path()))
            && self.method.as_ref().is_none_or(|m| *m == request.method)
            && headers_match(&self.request_headers, &request.headers)
    }

    /// The whole selector, for a response to `request`.
    pub fn matches_response(
        &self,
        port: u16,
        request: &request::Parts,
        response: &response::Parts,
    ) -> bool {
        self.matches_request(port, request)
            && self.code.is_none_or(|c| c == response.status)
            && headers_match(&self.response_headers, &response.headers)
    }
}

impl Rule {
    /// Whether this rule applies to a request arriving on `port`.
    pub fn selects_request(&self, port: u16, request: &request::Parts) -> bool {
        self.target == Target::Request && self.selector.matches_request(port, request)
    }

    /// Whether this rule applies to the response to `request`.
    pub fn selects_response(
        &self,
        port: u16,
        request: &request::Parts,
        response: &response::Parts,
    ) -> bool {
        self.target == Target::Response && self.selector.matches_response(port, request, response)
    }
}

/// Bytes that need no escaping in a query component.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `replace.queries` sets those keys (every other pair kept, in order); `patch.queries` adds
/// pairs.
fn rewrite_query(query: Option<&str>, action: &Action) -> Option<String> {
    if action.replace_queries.is_empty() && action.patch_queries.is_empty() {
        return query.map(str::to_owned);
    }
    let mut pairs: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let key = p.split('=').next().unwrap_or_default();
            !action.replace_queries.iter().any(|(k, _)| escape(k) == key)
        })
        .map(str::to_owned)
        .collect();
    for (k, v) in action.replace_queries.iter().chain(&action.patch_queries) {
        pairs.push(format!("{}={}", escape(k), escape(v)));
    }
    Some(pairs.join("&"))
}

/// Applies the head changes of a Request rule: path, method, queries, headers (replace sets,
/// patch adds).
pub fn apply_to_request(action: &Action, request: &mut request::Parts) {
    if let Some(method) = &action.replace_method {
        request.method = method.clone();
    }
    let path = action
        .replace_path
        .clone()
        .unwrap_or_else(|| request.uri.path().to_owned());
    let query = rewrite_query(request.uri.query(), action);
    let path_and_query = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    if let Ok(pq) = path_and_query.parse::<PathAndQuery>() {
        let mut parts = request.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            request.uri = uri;
        }
    }
    set_headers(action, &mut request.headers);
}

/// Applies the head changes of a Response rule: status and headers.
pub fn apply_to_response(action: &Action, response: &mut response::Parts) {
    if let Some(code) = action.replace_code {
        response.status = code;
    }
    set_headers(action, &mut response.headers);
}

fn set_headers(action: &Action, headers: &mut HeaderMap) {
    for (name, value) in &action.replace_headers {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &action.patch_headers {
        headers.append(name.clone(), value.clone());
    }
}

/// The new body, if the rule changes it. A merge patch applies to a JSON body only; another
/// body is left as it is.
pub fn change_body(change: &BodyChange, body: &[u8]) -> Option<Vec<u8>> {
    match change {
        BodyChange::Keep => None,
        BodyChange::Replace(bytes) => Some(bytes.clone()),
        BodyChange::MergeJson(patch) => {
            let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
            json_patch::merge(&mut doc, patch);
            serde_json::to_vec(&doc).ok()
        }
    }
}

/// After a body change: the length is the new one (and a chunked body becomes a sized one).
pub fn fix_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::HttpChaosSpec;
    use http::{Method, Request, Response, StatusCode};

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn response(code: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut builder = Response::builder().status(code);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn rules(json: &str) -> Vec<Rule> {
        HttpChaosSpec::parse(json, &[80], "").unwrap().rules
    }

    #[test]
    fn globs_match_paths() {
        assert!(glob("/api/*", "/api/v1/users"));
        assert!(glob("/a?c", "/abc"));
        assert!(!glob("/api/*", "/other"));
        assert!(glob("*", ""));
    }

    /// Every given selector field must match; the port is the one the request arrived on.
    #[test]
    fn selection_is_by_port_path_method_and_headers() {
        let rule = &rules(
            r#"[{"target": "Request", "selector": {"port": 80, "path": "/api/*", "method": "GET", "request_headers": {"X-User": "alice"}}, "actions": {"abort": true}}]"#,
        )[0];
        let hit = request(Method::GET, "/api/x", &[("x-user", "alice")]);
        assert!(rule.selects_request(80, &hit));
        assert!(!rule.selects_request(81, &hit));
        assert!(
            !rule.selects_request(80, &request(Method::POST, "/api/x", &[("x-user", "alice")]))
        );
        assert!(!rule.selects_request(80, &request(Method::GET, "/other", &[("x-user", "alice")])));
        assert!(!rule.selects_request(80, &request(Method::GET, "/api/x", &[("x-user", "bob")])));
        // A Request rule never selects a response.
        assert!(!rule.selects_response(80, &hit, &response(200, &[])));
    }

    #[test]
    fn response_rules_select_by_code_and_response_headers() {
        let rule = &rules(
            r#"[{"target": "Response", "selector": {"code": 200, "response_headers": {"Content-Type": "application/json"}}, "actions": {"replace": {"code": 503}}}]"#,
        )[0];
        let req = request(Method::GET, "/", &[]);
        assert!(rule.selects_response(
            80,
            &req,
            &response(200, &[("content-type", "application/json")])
        ));
        assert!(!rule.selects_response(
            80,
            &req,
            &response(404, &[("content-type", "application/json")])
        ));
        assert!(!rule.selects_response(
            80,
            &req,
            &response(200, &[("content-type", "text/plain")])
        ));
        let mut resp = response(200, &[]);
        apply_to_response(&rule.action, &mut resp);
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn request_heads_are_replaced_and_patched() {
        let rule = &rules(
            r#"[{"target": "Request", "selector": {}, "actions": {
                "replace": {"path": "/new", "method": "PUT", "queries": {"a": "x y"}, "headers": {"X-Mode": "chaos"}},
                "patch": {"queries": [["b", "2"]], "headers": [["X-Extra", "1"]]}}}]"#,
        )[0];
        let mut req = request(Method::GET, "/old?a=1&keep=yes", &[("x-mode", "normal")]);
        apply_to_request(&rule.action, &mut req);
        assert_eq!(req.method, Method::PUT);
        assert_eq!(req.uri.path(), "/new");
        assert_eq!(req.uri.query(), Some("keep=yes&a=x%20y&b=2"));
        assert_eq!(req.headers["x-mode"], "chaos");
        assert_eq!(req.headers["x-extra"], "1");
    }

    #[test]
    fn bodies_are_replaced_or_merge_patched() {
        assert_eq!(change_body(&BodyChange::Keep, b"x"), None);
        assert_eq!(
            change_body(&BodyChange::Replace(b"new".to_vec()), b"old"),
            Some(b"new".to_vec())
        );
        let patch = BodyChange::MergeJson(serde_json::json!({"a": null, "b": {"c": 2}}));
        let out = change_body(&patch, br#"{"a": 1, "b": {"d": 3}}"#).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({"b": {"c": 2, "d": 3}})
        );
        assert_eq!(change_body(&patch, b"not json"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        fix_length(&mut headers, 12);
        assert_eq!(headers[CONTENT_LENGTH], "12");
        assert!(!headers.contains_key(http::header::TRANSFER_ENCODING));
    }
}
