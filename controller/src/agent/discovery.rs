//! Finding a node's agent: the EndpointSlices of the agents' headless Service (label
//! `kubernetes.io/service-name`), the ready endpoint whose `nodeName` is the node.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;

use super::AgentError;

/// The agents' headless Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentService {
    pub namespace: String,
    pub name: String,
    /// The port's name in the EndpointSlices; when absent, the first port (or `default_port`).
    pub port_name: String,
    pub default_port: u16,
}

impl Default for AgentService {
    fn default() -> Self {
        AgentService {
            namespace: "faultline".into(),
            name: "faultline-agent".into(),
            port_name: "grpc".into(),
            default_port: 31767,
        }
    }
}

/// `host:port` of the agent on `node`, read from the Service's EndpointSlices.
pub async fn agent_address(
    client: &kube::Client,
    service: &AgentService,
    node: &str,
) -> Result<String, AgentError> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &service.namespace);
    let list = slices
        .list(
            &ListParams::default().labels(&format!("kubernetes.io/service-name={}", service.name)),
        )
        .await
        .map_err(|e| AgentError::Discovery {
            reason: e.to_string(),
        })?;
    address_on_node(&list.items, service, node).ok_or_else(|| AgentError::NoAgent {
        node: node.to_owned(),
        service: format!("{}/{}", service.namespace, service.name),
    })
}

/// The first ready endpoint on `node` (an endpoint without a ready condition counts as ready,
/// as Kubernetes says consumers should treat it).
pub fn address_on_node(
    slices: &[EndpointSlice],
    service: &AgentService,
    node: &str,
) -> Option<String> {
    slices.iter().find_map(|slice| {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(service.port_name.as_str()))
            .or_else(|| slice.ports.iter().flatten().next())
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(service.default_port);
        slice
            .endpoints
            .iter()
            .filter(|e| e.node_name.as_deref() == Some(node))
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .find_map(|e| e.addresses.first())
            .map(|ip| {
                if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                }
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).expect("an EndpointSlice")
    }

    #[test]
    fn the_ready_endpoint_on_the_node_is_chosen() {
        let s = slice(json!({
            "metadata": {"name": "faultline-agent-abc"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 31766}, {"name": "grpc", "port": 31767}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": "node-a", "conditions": {"ready": false}},
                {"addresses": ["10.0.0.2"], "nodeName": "node-b"},
                {"addresses": ["10.0.0.3"], "nodeName": "node-a", "conditions": {"ready": true}},
            ]
        }));
        let svc = AgentService::default();
        assert_eq!(
            address_on_node(std::slice::from_ref(&s), &svc, "node-a").as_deref(),
            Some("10.0.0.3:31767")
        );
        assert_eq!(
            address_on_node(std::slice::from_ref(&s), &svc, "node-b").as_deref(),
            Some("10.0.0.2:31767")
        );
        assert_eq!(address_on_node(&[s], &svc, "node-c"), None);
    }

    #[test]
    fn without_a_named_port_the_first_or_the_default_is_used() {
        let svc = AgentService::default();
        let first = slice(json!({
            "metadata": {"name": "a"}, "addressType": "IPv4",
            "ports": [{"port": 9000}],
            "endpoints": [{"addresses": ["10.0.0.9"], "nodeName": "n"}]
        }));
        assert_eq!(
            address_on_node(&[first], &svc, "n").as_deref(),
            Some("10.0.0.9:9000")
        );
        let none = slice(json!({
            "metadata": {"name": "b"}, "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00::9"], "nodeName": "n"}]
        }));
        assert_eq!(
            address_on_node(&[none], &svc, "n").as_deref(),
            Some("[fd00::9]:31767")
        );
    }
}
