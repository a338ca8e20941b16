//! The webhook binary in offline mode, over TLS with a real client: it serves the certificate
//! it was given (a client trusting another CA, or checking another name, is refused), answers
//! an AdmissionReview on /inject with the injection, and a bad body with a 400; a certificate
//! rotated in its files is served to the next connection, without a restart.

#[path = "support/webhook_client.rs"]
mod webhook_client;

use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use webhook_client::{SERVER_NAME, certs, connect, start};

fn manifests() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook/manifests")
}

#[tokio::test]
async fn the_webhook_binary_answers_an_admission_review_over_tls() {
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let certs = certs();
    let server = start(
        Path::new(env!("CARGO_BIN_EXE_faultline-controller")),
        &manifests(),
        tls_dir.path(),
        &certs,
    );
    let review = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook/reviews/tikv-template.json"),
    )
    .expect("the review");

    let mut client = connect(server.addr, &certs.ca_pem, SERVER_NAME)
        .await
        .expect("a TLS connection trusting the webhook's CA");
    // Twice on one connection: keep-alive.
    for _ in 0..2 {
        let (status, body) = client
            .post("/inject", Bytes::from(review.clone()))
            .await
            .expect("a response");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let out: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(
            out["response"]["uid"],
            "7a3c2d10-0001-4b6e-9c1f-5d8e2a7b4c01"
        );
        assert_eq!(out["response"]["allowed"], true);
        let patch = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().expect("a patch"))
            .expect("base64");
        let patch: serde_json::Value = serde_json::from_slice(&patch).expect("JSON");
        assert!(
            patch
                .as_array()
                .expect("operations")
                .iter()
                .any(|op| op["path"] == "/spec/containers/-" && op["value"]["name"] == "chaosfs"),
            "{patch}"
        );
    }
    let (status, _) = client
        .post("/inject", Bytes::from_static(b"not a review"))
        .await
        .expect("a response");
    assert_eq!(status, 400);

    // Another CA: the handshake fails. The right CA but another name: also.
    let other = certs_of_another_ca();
    assert!(connect(server.addr, &other, SERVER_NAME).await.is_err());
    assert!(
        connect(server.addr, &certs.ca_pem, "faultline-agent.faultline.svc")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let first = certs();
    let server = start(
        Path::new(env!("CARGO_BIN_EXE_faultline-controller")),
        &manifests(),
        tls_dir.path(),
        &first,
    );
    let mut kept = connect(server.addr, &first.ca_pem, SERVER_NAME)
        .await
        .expect("the first certificate");
    // Rotation as a Secret volume update does it: new files replacing the old under the same
    // names (the kubelet swaps a symlink; a rename is the same for a reader).
    let second = certs();
    for (name, text) in [("tls.key", &second.key_pem), ("tls.crt", &second.cert_pem)] {
        let new = tls_dir.path().join(format!("{name}.new"));
        std::fs::write(&new, text).expect("write");
        std::fs::rename(&new, tls_dir.path().join(name)).expect("rename");
    }
    let mut renewed = connect(server.addr, &second.ca_pem, SERVER_NAME)
        .await
        .expect("the new certificate, on a new connection");
    assert!(
        connect(server.addr, &first.ca_pem, SERVER_NAME)
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // Both connections work: the established one keeps its session.
    for client in [&mut kept, &mut renewed] {
        let (status, _) = client
            .post("/inject", Bytes::from_static(b"{}"))
            .await
            .expect("a response");
        assert_eq!(status, 400);
    }
}

fn certs_of_another_ca() -> String {
    certs().ca_pem
}
