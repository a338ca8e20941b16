//! StatusCheck (Chaos Mesh's `StatusCheckSpec`): an HTTP request made every `intervalSeconds`
//! until it has succeeded `successThreshold` times in a row (Synchronous), failed
//! `failureThreshold` times in a row, or `duration` is over; the outcomes are recorded in the
//! status. A Workflow's StatusCheck template with `abortWithStatusCheck` aborts the workflow when
//! its check completes without success.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// StatusCheck: is the system under test still healthy?
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "StatusCheck",
    plural = "statuschecks",
    singular = "statuscheck",
    namespaced,
    status = "StatusCheckStatus",
    shortname = "sc",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Count","type":"integer","jsonPath":".status.count"}"#,
    printcolumn = r#"{"name":"Started","type":"date","jsonPath":".status.startTime"}"#,
    printcolumn = r#"{"name":"Completed","type":"date","jsonPath":".status.completionTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StatusCheckSpec {
    /// Synchronous (default): done at the success or the failure threshold; Continuous: runs
    /// until `duration` is over or the failure threshold is reached.
    #[serde(default)]
    pub mode: StatusCheckMode,
    #[serde(default, rename = "type")]
    pub type_: StatusCheckType,
    /// How long the whole check may run (Go duration); unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Seconds after which one request counts as failed.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: i64,
    /// Seconds between requests.
    #[serde(default = "ten")]
    #[schemars(range(min = 1))]
    pub interval_seconds: i64,
    /// Failures in a row that complete the check as failed.
    #[serde(default = "three")]
    #[schemars(range(min = 1))]
    pub failure_threshold: i64,
    /// Successes in a row that complete a Synchronous check.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub success_threshold: i64,
    /// How many records the status keeps.
    #[serde(default = "hundred")]
    #[schemars(range(min = 1, max = 1000))]
    pub records_history_limit: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStatusCheck>,
}

fn one() -> i64 {
    1
}
fn three() -> i64 {
    3
}
fn ten() -> i64 {
    10
}
fn hundred() -> i64 {
    100
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StatusCheckMode {
    #[default]
    Synchronous,
    Continuous,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StatusCheckType {
    #[default]
    HTTP,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpStatusCheck {
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Header name to values, as Go's http.Header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    pub criteria: HttpCriteria,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HttpMethod {
    #[default]
    GET,
    POST,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCriteria {
    /// A code ("200") or an inclusive range ("200-299").
    pub status_code: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCheckStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Requests made.
    #[serde(default)]
    pub count: i64,
    /// Completed, DurationExceed, FailureThresholdExceed, SuccessThresholdExceed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<StatusCheckCondition>,
    /// The latest outcomes, oldest first (at most recordsHistoryLimit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<StatusCheckRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCheckRecord {
    pub start_time: String,
    /// Success or Failure.
    pub outcome: String,
    /// Why it failed (status code, timeout, connection error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCheckCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

impl StatusCheckStatus {
    pub fn is_true(&self, type_: &str) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    }

    /// Chaos Mesh's IsCompleted.
    pub fn completed(&self) -> bool {
        self.is_true(COMPLETED)
    }

    /// Chaos Mesh's needToAbort: completed, and not by reaching the success threshold.
    pub fn failed(&self) -> bool {
        self.completed()
            && self
                .conditions
                .iter()
                .any(|c| c.type_ == SUCCESS_THRESHOLD_EXCEED && c.status != "True")
    }
}

pub const COMPLETED: &str = "Completed";
pub const DURATION_EXCEED: &str = "DurationExceed";
pub const FAILURE_THRESHOLD_EXCEED: &str = "FailureThresholdExceed";
pub const SUCCESS_THRESHOLD_EXCEED: &str = "SuccessThresholdExceed";

/// A problem with a StatusCheck spec: the field (under the spec) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    pub field: String,
    pub message: String,
}

impl StatusCheckSpec {
    /// Chaos Mesh's webhook rules and the CRD's bounds, checked again (the admission may be
    /// off). `at` prefixes the field names.
    pub fn problems(&self, at: &str) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: String| {
            out.push(SpecProblem {
                field: format!("{at}{field}"),
                message,
            })
        };
        for (field, value, max) in [
            ("timeoutSeconds", self.timeout_seconds, None),
            ("intervalSeconds", self.interval_seconds, None),
            ("failureThreshold", self.failure_threshold, None),
            ("successThreshold", self.success_threshold, None),
            (
                "recordsHistoryLimit",
                self.records_history_limit,
                Some(1000),
            ),
        ] {
            if value < 1 || max.is_some_and(|m| value > m) {
                let range = match max {
                    Some(m) => format!("1 to {m}"),
                    None => "at least 1".into(),
                };
                bad(field, format!("{value}: must be {range}"));
            }
        }
        if let Some(d) = &self.duration
            && let Err(e) = crate::plan::parse_go_duration(d)
        {
            bad("duration", e);
        }
        match &self.http {
            None => bad(
                "http",
                "the detail of the HTTP status check is required".into(),
            ),
            Some(http) => {
                if http.url.is_empty() {
                    bad("http.url", "the request URL is required".into());
                } else if let Err(e) = request_uri(&http.url) {
                    bad(
                        "http.url",
                        format!("{:?}: not a valid request URL ({e})", http.url),
                    );
                }
                if let Err(e) = StatusCodes::parse(&http.criteria.status_code) {
                    bad("http.criteria.statusCode", e);
                }
            }
        }
        out
    }
}

/// Go's url.ParseRequestURI as Chaos Mesh uses it: an absolute URL (scheme and host) or an
/// absolute path.
fn request_uri(url: &str) -> Result<(), String> {
    if url.starts_with('/') {
        return Ok(());
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if uri.scheme().is_none() {
        return Err("no scheme".into());
    }
    Ok(())
}

/// `criteria.statusCode`: one code or an inclusive range, each 1 to 999 (Chaos Mesh's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusCodes {
    pub low: u16,
    pub high: u16,
}

impl StatusCodes {
    pub fn parse(text: &str) -> Result<StatusCodes, String> {
        let code = |s: &str| -> Result<u16, String> {
            let n: i64 = s
                .parse()
                .map_err(|_| format!("incorrect status code format: {s:?} is not a number"))?;
            if !(1..1000).contains(&n) {
                return Err(format!(
                    "incorrect status code format: invalid status code {n}"
                ));
            }
            Ok(n as u16)
        };
        if text.is_empty() {
            return Err("status code is required".into());
        }
        if let Ok(n) = text.parse::<i64>() {
            let c = code(&n.to_string())?;
            return Ok(StatusCodes { low: c, high: c });
        }
        let Some((low, high)) = text.split_once('-') else {
            return Err(format!(
                "incorrect status code format: {text:?} is not a single number or a range"
            ));
        };
        Ok(StatusCodes {
            low: code(low)?,
            high: code(high)?,
        })
    }

    pub fn contains(&self, code: u16) -> bool {
        (self.low..=self.high).contains(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> StatusCheckSpec {
        serde_json::from_value(v).expect("a spec")
    }

    #[test]
    fn defaults_are_chaos_mesh_s() {
        // Chaos Mesh: mode Synchronous, type HTTP, timeoutSeconds 1, intervalSeconds 10,
        // failureThreshold 3, successThreshold 1, recordsHistoryLimit 100, method GET.
        let s = spec(json!({"http": {"url": "http://a/", "criteria": {"statusCode": "200"}}}));
        assert_eq!(s.mode, StatusCheckMode::Synchronous);
        assert_eq!(s.type_, StatusCheckType::HTTP);
        assert_eq!(s.timeout_seconds, 1);
        assert_eq!(s.interval_seconds, 10);
        assert_eq!(s.failure_threshold, 3);
        assert_eq!(s.success_threshold, 1);
        assert_eq!(s.records_history_limit, 100);
        assert_eq!(s.http.as_ref().map(|h| h.method), Some(HttpMethod::GET));
        assert_eq!(s.problems("spec."), vec![]);
    }

    #[test]
    fn validation_follows_chaos_mesh() {
        // http is required for type HTTP.
        let s = spec(json!({}));
        assert_eq!(s.problems("spec.")[0].field, "spec.http");
        // Thresholds and intervals at least 1; recordsHistoryLimit at most 1000.
        let s = spec(json!({"intervalSeconds": 0, "recordsHistoryLimit": 1001,
            "http": {"url": "http://a/", "criteria": {"statusCode": "200"}}}));
        let fields: Vec<_> = s.problems("spec.").into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["spec.intervalSeconds", "spec.recordsHistoryLimit"]);
        // The URL must parse as a request URI.
        let s = spec(json!({"http": {"url": "not a url", "criteria": {"statusCode": "200"}}}));
        assert_eq!(s.problems("spec.")[0].field, "spec.http.url");
        // An unknown type or mode is refused by the schema (the enum).
        assert!(serde_json::from_value::<StatusCheckSpec>(json!({"type": "TCP"})).is_err());
        assert!(serde_json::from_value::<StatusCheckSpec>(json!({"mode": "Once"})).is_err());
        assert!(
            serde_json::from_value::<StatusCheckSpec>(json!({"http": {"url": "http://a/",
                "method": "PUT", "criteria": {"statusCode": "200"}}}))
            .is_err()
        );
    }

    #[test]
    fn status_codes_are_a_code_or_an_inclusive_range_from_1_to_999() {
        assert_eq!(
            StatusCodes::parse("200"),
            Ok(StatusCodes {
                low: 200,
                high: 200
            })
        );
        let range = StatusCodes::parse("200-400").expect("a range");
        // Both ends included.
        assert!(range.contains(200) && range.contains(400) && !range.contains(401));
        assert!(StatusCodes::parse("").unwrap_err().contains("required"));
        assert!(StatusCodes::parse("0").is_err());
        assert!(StatusCodes::parse("1000").is_err());
        assert!(StatusCodes::parse("200-1000").is_err());
        assert!(
            StatusCodes::parse("2xx")
                .unwrap_err()
                .contains("single number or a range")
        );
    }
}
