//! deploy/overlays/chaos-mesh puts faultline agents where Chaos Mesh's controller-manager looks
//! for its chaos-daemons. The facts pinned here are Chaos Mesh's (controllers/utils/chaosdaemon,
//! pkg/grpc, helm/chaos-mesh):
//! - the controller lists the EndpointSlices of its own namespace (chaos-mesh by default) and
//!   takes those whose names start with "chaos-daemon-", i.e. the slices of a Service named
//!   chaos-daemon, matching the target pod's nodeName;
//! - it dials the daemon on port 31767 (chaosDaemon.grpcPort), over mTLS, checking the server
//!   name chaos-daemon.chaos-mesh.org and presenting controller-manager.chaos-mesh.org;
//! - the Helm chart keeps the daemon's certificate (with ca.crt) in the Secret
//!   chaos-mesh-daemon-certs, whether Helm or cert-manager makes it.

use crate::{list, object, render, root, text};

#[test]
fn chaos_meshs_controller_finds_and_trusts_the_agents() {
    let objects = render(&root().join("deploy/overlays/chaos-mesh"));
    for o in &objects {
        assert_eq!(
            o["metadata"]["namespace"],
            "chaos-mesh",
            "{} {}",
            text(&o["kind"]),
            text(&o["metadata"]["name"])
        );
    }
    // Only agents: Chaos Mesh's controller drives them.
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "Deployment" || o["kind"] == "CustomResourceDefinition"),
        "the overlay installs more than agents"
    );

    let service = object(&objects, "Service", "chaos-daemon");
    assert_eq!(service["spec"]["clusterIP"], "None");
    let grpc = list(&service["spec"]["ports"])
        .iter()
        .find(|p| p["port"] == 31767)
        .cloned()
        .expect("the Service has port 31767");
    assert_eq!(grpc["targetPort"], "grpc");

    let ds = object(&objects, "DaemonSet", "faultline-agent");
    let template = &ds["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"]
        .as_mapping()
        .expect("a selector")
    {
        assert_eq!(
            &labels[key], value,
            "the Service does not select the agents"
        );
    }
    let container = &list(&template["spec"]["containers"])[0];
    let args: Vec<&str> = list(&container["args"]).iter().map(text).collect();
    assert!(args.contains(&"--listen=0.0.0.0:31767"), "{args:?}");
    assert!(
        args.contains(&"--allowed-client=controller-manager.chaos-mesh.org"),
        "{args:?}"
    );
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--allowed-client=faultline")),
        "{args:?}"
    );
    let tls = list(&template["spec"]["volumes"])
        .iter()
        .find(|v| v["name"] == "tls")
        .cloned()
        .expect("a tls volume");
    assert_eq!(tls["secret"]["secretName"], "chaos-mesh-daemon-certs");
}
