//! HTTPS interception (`ApplyHttpChaosRequest.tls`): the proxy terminates TLS for the redirected
//! ports with the given certificate and key, applies the rules to the decrypted HTTP, and talks
//! TLS to the real server, verifying it with the given CA, or without one against the public
//! Web PKI roots (Mozilla's, compiled in), as Chaos Mesh's tproxy does. Built once from
//! [`TlsConfig`]; [`Interception::new`] is also the check the agent makes before anything
//! changes in a pod, so bad material is refused with the field that holds it.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::spec::{SpecError, TlsConfig};

/// The proxy speaks HTTP/1.1 on both sides.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The two TLS ends of an intercepted connection.
pub struct Interception {
    source: TlsConfig,
    /// Towards the client: the given certificate and key.
    pub server: Arc<ServerConfig>,
    /// Towards the real server: verified with the given CA, or the Web PKI roots.
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Interception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interception")
            .field("ca", &self.source.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Interception {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn certificates(field: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, SpecError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(field, "no CERTIFICATE block in the PEM"));
    }
    Ok(certs)
}

impl Interception {
    pub fn new(tls: &TlsConfig) -> Result<Self, SpecError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates("tls.cert_file.value", &tls.cert_pem)?;
        // tproxy reads PKCS#1 RSA keys only; every PEM key form rustls takes is taken here
        // (PKCS#1, PKCS#8, SEC1), a superset.
        let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| {
            invalid(
                "tls.key_file.value",
                format!("no private key (PKCS#1, PKCS#8 or SEC1 PEM): {e}"),
            )
        })?;
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                invalid(
                    "tls.key_file.value",
                    format!("not usable with the certificate of tls.cert_file: {e}"),
                )
            })?;
        server.alpn_protocols = vec![ALPN_HTTP1.to_vec()];

        let mut roots = RootCertStore::empty();
        match &tls.ca_pem {
            Some(ca) => {
                for (i, cert) in certificates("tls.ca_file.value", ca)?
                    .into_iter()
                    .enumerate()
                {
                    roots.add(cert).map_err(|e| {
                        invalid(
                            "tls.ca_file.value",
                            format!("certificate {i} is not a usable trust anchor: {e}"),
                        )
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Self {
            source: tls.clone(),
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// The name the real server's certificate is checked against: the name the client asked for
/// (its SNI), else the address it connected to (a certificate with that IP in its SANs).
pub fn upstream_name(sni: Option<&str>, upstream: std::net::IpAddr) -> ServerName<'static> {
    sni.and_then(|name| ServerName::try_from(name.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(upstream.into()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and a server certificate it signed for `names` (DNS names or IPs).
    pub(crate) struct Pki {
        pub ca_pem: String,
        pub cert_pem: String,
        pub key_pem: String,
    }

    pub(crate) fn pki(names: &[&str]) -> Pki {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca_pem: issuer.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn config(pki: &Pki, ca: bool) -> TlsConfig {
        TlsConfig {
            cert_pem: pki.cert_pem.clone().into_bytes(),
            key_pem: pki.key_pem.clone().into_bytes(),
            ca_pem: ca.then(|| pki.ca_pem.clone().into_bytes()),
        }
    }

    fn field_of(err: SpecError) -> String {
        match err {
            SpecError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn good_material_builds_both_ends() {
        let pki = pki(&["web.shop.svc", "10.0.0.7"]);
        let with_ca = Interception::new(&config(&pki, true)).unwrap();
        assert_eq!(with_ca.server.alpn_protocols, [b"http/1.1".to_vec()]);
        assert_eq!(with_ca.client.alpn_protocols, [b"http/1.1".to_vec()]);
        // Without a CA: the Web PKI roots, as tproxy.
        Interception::new(&config(&pki, false)).unwrap();
    }

    #[test]
    fn bad_material_names_its_field() {
        let pki = pki(&["web"]);
        let other = super::tests::pki(&["web"]);
        let cases = [
            (
                TlsConfig {
                    cert_pem: b"not pem".to_vec(),
                    ..config(&pki, false)
                },
                "tls.cert_file.value",
            ),
            (
                TlsConfig {
                    cert_pem: pki.key_pem.clone().into_bytes(),
                    ..config(&pki, false)
                },
                "tls.cert_file.value",
            ),
            (
                TlsConfig {
                    key_pem: pki.cert_pem.clone().into_bytes(),
                    ..config(&pki, false)
                },
                "tls.key_file.value",
            ),
            // A key that is not the certificate's.
            (
                TlsConfig {
                    key_pem: other.key_pem.clone().into_bytes(),
                    ..config(&pki, false)
                },
                "tls.key_file.value",
            ),
            (
                TlsConfig {
                    ca_pem: Some(
                        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                    ),
                    ..config(&pki, false)
                },
                "tls.ca_file.value",
            ),
            (
                TlsConfig {
                    ca_pem: Some(Vec::new()),
                    ..config(&pki, false)
                },
                "tls.ca_file.value",
            ),
        ];
        for (i, (tls, field)) in cases.into_iter().enumerate() {
            let err = Interception::new(&tls).expect_err(&format!("case {i}"));
            assert_eq!(field_of(err), field, "case {i}");
        }
    }

    #[test]
    fn the_upstream_is_checked_against_the_sni_else_its_address() {
        let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(
            upstream_name(Some("web.shop.svc"), ip),
            ServerName::try_from("web.shop.svc").unwrap()
        );
        assert_eq!(upstream_name(None, ip), ServerName::IpAddress(ip.into()));
    }
}
