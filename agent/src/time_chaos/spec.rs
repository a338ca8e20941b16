//! The request, parsed once at the edge: pb.TimeRequest (Chaos Mesh's controller) or
//! faultline.agent.v1's StartTimeExperimentRequest.

use std::time::Duration;

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use timeshift::{ClockMask, Offset, Shift};

use super::TimeError;

/// One time experiment to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSpec {
    /// The journal id: `time-` and the caller's uid (Chaos Mesh sends the chaos's UID and the
    /// pod's UID, concatenated).
    pub id: String,
    pub container_id: String,
    /// Chaos Mesh's `<pod UID>:<container name>`; informative.
    pub pod_container_name: String,
    pub shift: Shift,
    pub duration: Option<Duration>,
    pub dry_run: bool,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TimeError {
    TimeError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// The journal id for a caller's uid.
pub fn id_of(uid: &str) -> Result<String, TimeError> {
    if uid.is_empty() {
        return Err(invalid("uid", "missing: the experiment's identity"));
    }
    if uid.len() > 100
        || !uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "uid",
            format!("{uid:?}: at most 100 letters, digits, '-' or '_'"),
        ));
    }
    Ok(format!("time-{uid}"))
}

fn container(container_id: &str) -> Result<String, TimeError> {
    if container_id.trim().is_empty() {
        return Err(invalid("container_id", "missing"));
    }
    Ok(container_id.to_owned())
}

impl TimeSpec {
    pub fn from_chaos_daemon(request: &pb::TimeRequest) -> Result<TimeSpec, TimeError> {
        let offset =
            Offset::new(request.sec, request.nsec).map_err(|e| invalid("sec", e.to_string()))?;
        let mask = ClockMask::from_wire(request.clk_ids_mask)
            .map_err(|e| invalid("clk_ids_mask", e.to_string()))?;
        Ok(TimeSpec {
            id: id_of(&request.uid)?,
            container_id: container(&request.container_id)?,
            pod_container_name: request.pod_container_name.clone(),
            shift: Shift { offset, mask },
            duration: None,
            dry_run: false,
        })
    }

    pub fn from_agent(request: &api::StartTimeExperimentRequest) -> Result<TimeSpec, TimeError> {
        let offset =
            Offset::parse_go(&request.offset).map_err(|e| invalid("offset", e.to_string()))?;
        let mask = ClockMask::from_names(&request.clock_ids)
            .map_err(|e| invalid("clock_ids", e.to_string()))?;
        let id = if request.id.is_empty() {
            id_of(&format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            ))?
        } else {
            request
                .id
                .strip_prefix("time-")
                .map(id_of)
                .unwrap_or_else(|| Err(invalid("id", "not a time experiment's id")))?
        };
        Ok(TimeSpec {
            id,
            container_id: container(&request.container_id)?,
            pod_container_name: String::new(),
            shift: Shift { offset, mask },
            duration: (request.duration_ms > 0).then(|| Duration::from_millis(request.duration_ms)),
            dry_run: request.dry_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::TimeRequest {
        pb::TimeRequest {
            container_id: "containerd://abc".into(),
            sec: -1,
            nsec: -500_000_000,
            clk_ids_mask: 3,
            uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            pod_container_name: "pod-uid:app".into(),
        }
    }

    #[test]
    fn chaos_mesh_requests_parse() {
        let spec = TimeSpec::from_chaos_daemon(&request()).unwrap();
        assert_eq!(spec.id, "time-1b4e28ba-2fa1-11d2-883f-0016d3cca427");
        assert_eq!(spec.shift.offset.nanos(), -1_500_000_000);
        assert_eq!(spec.shift.mask, ClockMask(3));
    }

    #[test]
    fn bad_requests_name_the_field() {
        type Change = fn(&mut pb::TimeRequest);
        let cases: [(Change, &str); 4] = [
            (|r| r.uid.clear(), "uid"),
            (|r| r.uid = "../x".into(), "uid"),
            (|r| r.container_id.clear(), "container_id"),
            (|r| r.clk_ids_mask = 1 << 12, "clk_ids_mask"),
        ];
        for (change, field) in cases {
            let mut r = request();
            change(&mut r);
            let err = TimeSpec::from_chaos_daemon(&r).unwrap_err();
            assert!(err.to_string().starts_with(field), "{err}");
        }
        // Chaos Mesh's RecoverTimeOffset carries no mask: SetTimeOffset needs one.
        let mut r = request();
        r.clk_ids_mask = 0;
        assert!(TimeSpec::from_chaos_daemon(&r).is_err());
    }

    #[test]
    fn agent_requests_parse() {
        let spec = TimeSpec::from_agent(&api::StartTimeExperimentRequest {
            container_id: "abc".into(),
            offset: "-5m".into(),
            clock_ids: vec!["CLOCK_REALTIME".into(), "CLOCK_MONOTONIC".into()],
            duration_ms: 2000,
            dry_run: false,
            id: "time-x1".into(),
        })
        .unwrap();
        assert_eq!(spec.id, "time-x1");
        assert_eq!(spec.shift.offset.sec, -300);
        assert_eq!(spec.duration, Some(Duration::from_secs(2)));
        let err = TimeSpec::from_agent(&api::StartTimeExperimentRequest {
            container_id: "abc".into(),
            offset: "1d".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("offset:"), "{err}");
    }
}
