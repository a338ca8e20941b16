use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Who a client is: a DNS name or a URI (e.g. a SPIFFE ID) from its certificate's SAN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientIdentity {
    Dns(String),
    Uri(String),
}

impl FromStr for ClientIdentity {
    type Err = String;

    /// `spiffe://…` or any `scheme://…` is a URI; `dns:NAME` or a bare name is a DNS name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty client identity".into());
        }
        if let Some(name) = s.strip_prefix("dns:") {
            return Ok(ClientIdentity::Dns(name.to_ascii_lowercase()));
        }
        if s.contains("://") {
            return Ok(ClientIdentity::Uri(s.to_owned()));
        }
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'))
        {
            Ok(ClientIdentity::Dns(s.to_ascii_lowercase()))
        } else {
            Err(format!("{s:?} is neither a DNS name nor a URI"))
        }
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIdentity::Dns(name) => write!(f, "dns:{name}"),
            ClientIdentity::Uri(uri) => f.write_str(uri),
        }
    }
}

/// The DNS and URI identities in a certificate's subject alternative names.
pub fn peer_identities(cert: &CertificateDer<'_>) -> Result<Vec<ClientIdentity>, String> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("unparsable client certificate: {e}"))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName extension: {e}"))?;
    let Some(san) = san else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(ClientIdentity::Dns(dns.to_ascii_lowercase())),
            GeneralName::URI(uri) => Some(ClientIdentity::Uri((*uri).to_owned())),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_identities() {
        assert_eq!(
            "spiffe://cluster.local/ns/faultline/sa/controller".parse(),
            Ok(ClientIdentity::Uri(
                "spiffe://cluster.local/ns/faultline/sa/controller".into()
            ))
        );
        assert_eq!(
            "Controller.Faultline.svc".parse(),
            Ok(ClientIdentity::Dns("controller.faultline.svc".into()))
        );
        assert_eq!("dns:a.b".parse(), Ok(ClientIdentity::Dns("a.b".into())));
        assert!("".parse::<ClientIdentity>().is_err());
        assert!("a b".parse::<ClientIdentity>().is_err());
    }
}
