use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};

use super::identity::{ClientIdentity, peer_identities};
use super::pem_files::{ChangeWatch, invalid, read_certs};
use super::{TlsError, provider};

/// Verifies the client's chain against the CA file (re-read when it changes), then requires one
/// of the certificate's SAN identities to be on the allow-list.
#[derive(Debug)]
pub(crate) struct AllowListVerifier {
    ca: PathBuf,
    watch: ChangeWatch,
    chain_verifier: RwLock<Arc<dyn ClientCertVerifier>>,
    allowed: Vec<ClientIdentity>,
}

impl AllowListVerifier {
    pub(crate) fn new(ca: PathBuf, allowed: Vec<ClientIdentity>) -> Result<Self, TlsError> {
        let chain_verifier = build_chain_verifier(&ca)?;
        Ok(Self {
            watch: ChangeWatch::new(vec![ca.clone()]),
            ca,
            chain_verifier: RwLock::new(chain_verifier),
            allowed,
        })
    }

    fn chain_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, Error> {
        if self.watch.changed() {
            match build_chain_verifier(&self.ca) {
                Ok(fresh) => {
                    if let Ok(mut current) = self.chain_verifier.write() {
                        *current = fresh;
                    }
                    tracing::info!(ca = %self.ca.display(), "reloaded the client CA");
                }
                Err(err) => tracing::warn!(%err, "keeping the previous client CA"),
            }
        }
        self.chain_verifier
            .read()
            .map(|v| Arc::clone(&v))
            .map_err(|_| Error::General("client CA state poisoned".into()))
    }
}

fn build_chain_verifier(ca: &std::path::Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| invalid(ca, format!("unusable CA certificate: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| invalid(ca, format!("cannot verify clients with this CA: {e}")))
}

impl ClientCertVerifier for AllowListVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA can change at run time; no hints is allowed by TLS 1.3 (clients send their
        // certificate anyway).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.chain_verifier()?
            .verify_client_cert(end_entity, intermediates, now)?;
        let identities = peer_identities(end_entity).map_err(Error::General)?;
        if identities.iter().any(|id| self.allowed.contains(id)) {
            Ok(ClientCertVerified::assertion())
        } else {
            let presented: Vec<String> = identities.iter().map(ToString::to_string).collect();
            tracing::warn!(?presented, "refused a client whose identity is not allowed");
            Err(Error::General(format!(
                "client identity [{}] is not allowed",
                presented.join(", ")
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
