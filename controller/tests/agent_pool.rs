//! The agent pool against a mocked API server: a node without an agent endpoint, and an agent
//! that does not answer (connects retried with backoff, then the address is forgotten so the
//! next call finds it afresh).

mod support;

use std::time::Duration;

use controller::agent::discovery::AgentService;
use controller::agent::pool::{AgentPool, PoolSettings};
use controller::agent::tls::ClientTls;
use controller::agent::{AgentCall, AgentError, Agents};
use http::Method;
use serde_json::json;
use support::*;

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/faultline/endpointslices?&labelSelector=kubernetes.io%2Fservice-name%3Dfaultline-agent";

fn tls() -> ClientTls {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert =
        rcgen::CertificateParams::new(vec!["faultline-controller.faultline.svc".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
    ClientTls::from_pem(
        ca.pem().as_bytes(),
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        "faultline-agent.faultline.svc",
    )
}

fn slices(node: &str, port: u16) -> serde_json::Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {}, "items": [{
        "metadata": {"name": "faultline-agent-1", "namespace": "faultline"},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "nodeName": node}]
    }]})
}

fn settings() -> PoolSettings {
    PoolSettings {
        connect_timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(10),
        ..PoolSettings::default()
    }
}

#[tokio::test]
async fn a_node_without_an_agent_endpoint_is_named() {
    let tb = testbed();
    let pool = AgentPool::new(
        tb.ctx.client.clone(),
        AgentService::default(),
        tls(),
        settings(),
        None,
    );
    let server = tb
        .server
        .play(vec![expect(Method::GET, SLICES, slices("node-b", 31767))]);
    let error = within(pool.call("node-a", AgentCall::ListExperiments))
        .await
        .expect_err("no agent");
    finished(server).await;
    assert_eq!(
        error,
        AgentError::NoAgent {
            node: "node-a".into(),
            service: "faultline/faultline-agent".into()
        }
    );
    assert!(error.is_transient());
}

#[tokio::test]
async fn an_agent_that_does_not_answer_is_retried_then_looked_up_again() {
    let tb = testbed();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let pool = AgentPool::new(
        tb.ctx.client.clone(),
        AgentService::default(),
        tls(),
        settings(),
        None,
    );
    let server = tb.server.play(vec![
        expect(Method::GET, SLICES, slices("node-a", port)),
        // The failed connection dropped the cached address: the next call reads the slices again.
        expect(Method::GET, SLICES, slices("node-a", port)),
    ]);
    for _ in 0..2 {
        let error = within(pool.call("node-a", AgentCall::ListExperiments))
            .await
            .expect_err("down");
        let AgentError::Unreachable {
            node,
            address,
            reason,
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!(node, "node-a");
        assert_eq!(address, &format!("127.0.0.1:{port}"));
        assert!(reason.contains("after 3 attempts"), "{reason}");
        assert!(error.is_transient() && !error.may_have_applied());
    }
    finished(server).await;
}
