//! `faultline-controller certs`: the mTLS material between the controller and the node agents,
//! and the sidecar webhook's serving certificate.
//! A CA (new, or an existing one given with --ca-cert/--ca-key), the agents' server
//! certificate (DNS names of the agents' headless Service: the controller dials an agent by pod
//! IP and checks one of these names), the controller's client certificate (its identity, the
//! SAN the agents' `--allowed-client` admits) and the webhook's serving certificate (the names
//! of the webhook Service, which the API server checks). As Secrets, followed by the
//! MutatingWebhookConfiguration of deploy/base/webhook.yaml (and its chaos kinds' validating
//! and defaulting configurations) with the CA as its caBundle (so
//! `kubectl apply -f -` of the output also lets the API server trust the webhook). Written as
//! Kubernetes Secrets of type
//! `kubernetes.io/tls` with `ca.crt` beside `tls.crt`/`tls.key` (the layout cert-manager writes, so
//! the manifests mount either), or as PEM files.
//!
//! Boundaries: this only makes and writes certificates; nothing here talks to a cluster.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The Secret the agents mount.
pub const AGENT_SECRET: &str = "faultline-agent-tls";
/// The Secret the controller mounts.
pub const CONTROLLER_SECRET: &str = "faultline-controller-tls";
/// The Secret the controller pods' webhook container mounts.
pub const WEBHOOK_SECRET: &str = "faultline-webhook-tls";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Kubernetes Secrets (YAML), ready for `kubectl apply -f`.
    Secrets,
    /// PEM files: ca.crt, ca.key, agent.crt, agent.key, controller.crt, controller.key,
    /// webhook.crt, webhook.key.
    Files,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// The namespace faultline runs in (of the Secrets and of the default names).
    #[arg(long, default_value = "faultline")]
    pub namespace: String,
    /// The agents' headless Service: its DNS names go into the agents' certificate.
    #[arg(long, default_value = "faultline-agent")]
    pub agent_service: String,
    /// More DNS names for the agents' certificate (repeatable).
    #[arg(long = "agent-dns-name")]
    pub agent_dns_names: Vec<String>,
    /// The controller's identity (a DNS SAN of its client certificate); the agents must allow it
    /// (`--allowed-client`). Default: faultline-controller.<namespace>.svc.
    #[arg(long)]
    pub controller_identity: Option<String>,
    /// The sidecar webhook's Service: its DNS names go into the webhook's serving certificate.
    #[arg(long, default_value = "faultline-webhook")]
    pub webhook_service: String,
    /// The MutatingWebhookConfiguration written with the CA as its caBundle.
    #[arg(long, default_value = "faultline-webhook")]
    pub webhook_configuration: String,
    /// Validity of the agent, controller and webhook certificates, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Validity of a new CA, in days.
    #[arg(long, default_value_t = 3650)]
    pub ca_days: u32,
    /// Sign with this existing CA certificate (PEM) instead of making a new CA; needs --ca-key.
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The existing CA's private key (PEM).
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "secrets")]
    pub format: Format,
    /// Where to write: a file for secrets ("-" is stdout), a directory for files.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
}

impl CertsArgs {
    /// The DNS names in the agents' certificate, the one the controller checks first.
    pub fn agent_dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.agent_service, &self.namespace);
        let mut names = vec![
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
            format!("{svc}.{ns}"),
            svc.clone(),
        ];
        for extra in &self.agent_dns_names {
            if !names.contains(extra) {
                names.push(extra.clone());
            }
        }
        names
    }

    /// The DNS names the API server may check when it calls the webhook Service.
    pub fn webhook_dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.webhook_service, &self.namespace);
        vec![
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ]
    }

    pub fn controller_identity(&self) -> String {
        self.controller_identity
            .clone()
            .unwrap_or_else(|| format!("faultline-controller.{}.svc", self.namespace))
    }
}

/// A certificate and its key, in PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// What `certs` makes.
#[derive(Debug)]
pub struct Bundle {
    /// The CA certificate; its key only when the CA is new (an existing one stays where it is).
    pub ca_cert: String,
    pub ca_key: Option<String>,
    pub agent: Pem,
    pub controller: Pem,
    pub webhook: Pem,
}

pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let bundle = generate(args)?;
    match args.format {
        Format::Secrets => {
            let yaml = secrets_yaml(args, &bundle)?;
            if args.out.as_os_str() == "-" {
                std::io::stdout().write_all(yaml.as_bytes())?;
            } else {
                write_private(&args.out, &yaml)?;
            }
            if bundle.ca_key.is_some() {
                eprintln!(
                    "certs: a new CA was made and its key not kept; to renew the certificates under the same CA later, \
                     make them with --format files and keep ca.key (see docs/install.md, rotation)"
                );
            }
        }
        Format::Files => write_files(&args.out, &bundle)?,
    }
    Ok(())
}

/// Makes (or loads) the CA and signs the agent's and the controller's certificates.
pub fn generate(args: &CertsArgs) -> anyhow::Result<Bundle> {
    for name in args
        .agent_dns_names()
        .iter()
        .chain(&args.webhook_dns_names())
        .chain([&args.controller_identity(), &args.webhook_configuration])
    {
        check_dns_name(name)?;
    }
    if args.days == 0 || args.ca_days == 0 {
        bail!("--days and --ca-days must be at least 1");
    }
    let (ca_cert, ca_key, issuer) = match (&args.ca_cert, &args.ca_key) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read(cert_path, "CA certificate")?;
            let key = KeyPair::from_pem(&read(key_path, "CA key")?)
                .with_context(|| format!("{}: not a PEM private key", key_path.display()))?;
            let issuer = Issuer::from_ca_cert_pem(&cert, key)
                .with_context(|| format!("{}: not a PEM CA certificate", cert_path.display()))?;
            (cert, None, issuer)
        }
        _ => {
            let ca = new_ca(args.ca_days)?;
            let cert = ca.pem();
            let key = ca.key().serialize_pem();
            // The same CA as an owned issuer, like an existing one.
            let issuer = Issuer::from_ca_cert_pem(&cert, KeyPair::from_pem(&key)?)?;
            (cert, Some(key), issuer)
        }
    };
    let agent = leaf(
        &issuer,
        "faultline-agent",
        &args.agent_dns_names(),
        ExtendedKeyUsagePurpose::ServerAuth,
        args.days,
    )?;
    let controller = leaf(
        &issuer,
        "faultline-controller",
        &[args.controller_identity()],
        ExtendedKeyUsagePurpose::ClientAuth,
        args.days,
    )?;
    let webhook = leaf(
        &issuer,
        "faultline-webhook",
        &args.webhook_dns_names(),
        ExtendedKeyUsagePurpose::ServerAuth,
        args.days,
    )?;
    Ok(Bundle {
        ca_cert,
        ca_key,
        agent,
        controller,
        webhook,
    })
}

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn check_dns_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !valid {
        bail!("{name:?} is not a DNS name (lower-case labels of a-z, 0-9 and '-', dot-separated)");
    }
    Ok(())
}

/// From an hour ago (clock skew between nodes) to `days` from now.
fn validity(params: &mut CertificateParams, days: u32) -> anyhow::Result<()> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + since_epoch + Duration::from_secs(u64::from(days) * 86_400);
    Ok(())
}

/// A new CA, named by the day it was made so that the CAs of two rotations are told apart
/// (in logs, and by verifiers, which look an issuer up by name).
fn new_ca(days: u32) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    validity(&mut params, days)?;
    let made = params.not_before + Duration::from_secs(3600);
    let name = format!(
        "faultline CA {} {:02}:{:02}:{:02}",
        made.date(),
        made.hour(),
        made.minute(),
        made.second()
    );
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "faultline");
    // Signs end-entity certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    dns_names: &[String],
    usage: ExtendedKeyUsagePurpose,
    days: u32,
) -> anyhow::Result<Pem> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "faultline");
    params.subject_alt_names = dns_names
        .iter()
        .map(|n| Ok(SanType::DnsName(n.as_str().try_into()?)))
        .collect::<anyhow::Result<_>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The three Secrets and the webhook configuration, as one multi-document YAML.
pub fn secrets_yaml(args: &CertsArgs, bundle: &Bundle) -> anyhow::Result<String> {
    let mut out = String::new();
    for (name, component, pem) in [
        (AGENT_SECRET, "agent", &bundle.agent),
        (CONTROLLER_SECRET, "controller", &bundle.controller),
        (WEBHOOK_SECRET, "webhook", &bundle.webhook),
    ] {
        let data = BTreeMap::from([
            ("ca.crt".to_owned(), bytes(&bundle.ca_cert)),
            ("tls.crt".to_owned(), bytes(&pem.cert)),
            ("tls.key".to_owned(), bytes(&pem.key)),
        ]);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(args.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/part-of".to_owned(),
                        "faultline".to_owned(),
                    ),
                    (
                        "app.kubernetes.io/component".to_owned(),
                        component.to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Secret::default()
        };
        out.push_str("---\n");
        out.push_str(&with_type_meta(&secret, "v1", "Secret")?);
    }
    out.push_str("---\n");
    out.push_str(&with_type_meta(
        &webhook_configuration(args, &bundle.ca_cert),
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    )?);
    for config in chaos_webhook_configurations(args, &bundle.ca_cert)? {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(&config)?);
    }
    Ok(out)
}

/// deploy/base/webhook.yaml's admission configurations of the chaos kinds (validation and
/// defaults, both named `faultline-chaos`), pointed at the webhook Service in `--namespace`,
/// with `ca_pem` as their caBundle.
pub fn chaos_webhook_configurations(
    args: &CertsArgs,
    ca_pem: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut out = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(BASE_WEBHOOKS) {
        let mut value: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if value["metadata"]["name"] != "faultline-chaos" {
            continue;
        }
        for hook in value["webhooks"].as_array_mut().into_iter().flatten() {
            let client = &mut hook["clientConfig"];
            client["caBundle"] = serde_json::Value::String(ca.clone());
            client["service"]["namespace"] = serde_json::Value::String(args.namespace.clone());
            client["service"]["name"] = serde_json::Value::String(args.webhook_service.clone());
        }
        out.push(value);
    }
    if out.len() != 2 {
        bail!("deploy/base/webhook.yaml: expected the two faultline-chaos configurations");
    }
    Ok(out)
}

/// The base manifests of the webhooks, built in.
const BASE_WEBHOOKS: &str = include_str!("../../deploy/base/webhook.yaml");

/// An object's YAML with apiVersion and kind first (k8s-openapi's serialization leaves the
/// type meta out; kubectl needs it).
fn with_type_meta<T: serde::Serialize>(
    object: &T,
    api_version: &str,
    kind: &str,
) -> anyhow::Result<String> {
    let mut value = yaml_serde::to_value(object)?;
    if let yaml_serde::Value::Mapping(map) = &mut value {
        let mut with_kind = yaml_serde::Mapping::new();
        with_kind.insert("apiVersion".into(), api_version.into());
        with_kind.insert("kind".into(), kind.into());
        with_kind.extend(std::mem::take(map));
        *map = with_kind;
    }
    Ok(yaml_serde::to_string(&value)?)
}

/// deploy/base/webhook.yaml's MutatingWebhookConfiguration (tests/tests/deploy checks they
/// agree) with `ca_pem` as the caBundle the API server trusts the webhook's certificate by.
pub fn webhook_configuration(args: &CertsArgs, ca_pem: &str) -> MutatingWebhookConfiguration {
    let strings = |items: &[&str]| Some(items.iter().map(|s| (*s).to_owned()).collect());
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(args.webhook_configuration.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_owned(),
                    args.webhook_configuration.clone(),
                ),
                (
                    "app.kubernetes.io/part-of".to_owned(),
                    "faultline".to_owned(),
                ),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "webhook".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "sidecar.admission-webhook.faultline.dev".to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                ca_bundle: Some(bytes(ca_pem)),
                service: Some(ServiceReference {
                    name: args.webhook_service.clone(),
                    namespace: args.namespace.clone(),
                    path: Some("/inject".to_owned()),
                    port: Some(443),
                }),
                url: None,
            },
            rules: Some(vec![RuleWithOperations {
                operations: strings(&["CREATE"]),
                api_groups: strings(&[""]),
                api_versions: strings(&["v1"]),
                resources: strings(&["pods"]),
                scope: Some("Namespaced".to_owned()),
            }]),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "admission-webhook".to_owned(),
                    "enabled".to_owned(),
                )])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".to_owned(),
                    operator: "NotIn".to_owned(),
                    values: Some(vec![
                        "kube-system".to_owned(),
                        "kube-public".to_owned(),
                        args.namespace.clone(),
                    ]),
                }]),
            }),
            failure_policy: Some("Ignore".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(5),
            match_policy: Some("Equivalent".to_owned()),
            reinvocation_policy: Some("Never".to_owned()),
            ..MutatingWebhook::default()
        }]),
    }
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

pub fn write_files(dir: &Path, bundle: &Bundle) -> anyhow::Result<()> {
    if dir.as_os_str() == "-" {
        bail!("--format files needs --out DIRECTORY");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = vec![
        ("ca.crt", &bundle.ca_cert),
        ("agent.crt", &bundle.agent.cert),
        ("agent.key", &bundle.agent.key),
        ("controller.crt", &bundle.controller.cert),
        ("controller.key", &bundle.controller.key),
        ("webhook.crt", &bundle.webhook.cert),
        ("webhook.key", &bundle.webhook.key),
    ];
    if let Some(key) = &bundle.ca_key {
        files.push(("ca.key", key));
    }
    for (name, text) in files {
        write_private(&dir.join(name), text)?;
        println!("{}", dir.join(name).display());
    }
    Ok(())
}

/// Writes through a temporary file and a rename (a reader never sees half a key), mode 0600.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde::Deserialize;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        certs: CertsArgs,
    }

    fn args(argv: &[&str]) -> CertsArgs {
        Cli::parse_from(std::iter::once("certs").chain(argv.iter().copied())).certs
    }

    #[test]
    fn default_names_match_the_agents_service_and_default_allowed_client() {
        let a = args(&[]);
        assert_eq!(
            a.agent_dns_names(),
            [
                "faultline-agent.faultline.svc",
                "faultline-agent.faultline.svc.cluster.local",
                "faultline-agent.faultline",
                "faultline-agent"
            ]
        );
        assert_eq!(
            a.controller_identity(),
            "faultline-controller.faultline.svc"
        );
        let b = args(&["--namespace", "chaos", "--agent-dns-name", "node.example"]);
        assert_eq!(b.agent_dns_names()[0], "faultline-agent.chaos.svc");
        assert_eq!(b.agent_dns_names().last().unwrap(), "node.example");
        assert_eq!(b.controller_identity(), "faultline-controller.chaos.svc");
    }

    #[test]
    fn bad_names_and_validity_are_refused() {
        let err = generate(&args(&["--controller-identity", "Not A Name"])).unwrap_err();
        assert!(
            err.to_string().contains("\"Not A Name\" is not a DNS name"),
            "{err}"
        );
        let err = generate(&args(&["--days", "0"])).unwrap_err();
        assert!(err.to_string().contains("--days"), "{err}");
    }

    #[test]
    fn secrets_carry_the_tls_layout_in_the_namespace() {
        let a = args(&["--namespace", "chaos"]);
        let bundle = generate(&a).unwrap();
        let yaml = secrets_yaml(&a, &bundle).unwrap();
        let docs: Vec<yaml_serde::Value> = yaml_serde::Deserializer::from_str(&yaml)
            .map(|d| yaml_serde::Value::deserialize(d).unwrap())
            .collect();
        // Three Secrets, the sidecar webhook's configuration, the chaos kinds' two.
        assert_eq!(docs.len(), 6);
        for (doc, name) in docs
            .iter()
            .zip([AGENT_SECRET, CONTROLLER_SECRET, WEBHOOK_SECRET])
        {
            assert_eq!(doc["apiVersion"], "v1");
            assert_eq!(doc["kind"], "Secret");
            assert_eq!(doc["type"], "kubernetes.io/tls");
            assert_eq!(doc["metadata"]["name"], name);
            assert_eq!(doc["metadata"]["namespace"], "chaos");
            let secret: Secret = yaml_serde::from_value(doc.clone()).unwrap();
            let data = secret.data.unwrap();
            let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
            assert_eq!(text("ca.crt"), bundle.ca_cert);
            assert!(text("tls.crt").starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(text("tls.key").contains("PRIVATE KEY-----"));
        }
    }

    #[test]
    fn the_webhook_configuration_trusts_the_ca_for_the_webhook_service() {
        let a = args(&["--namespace", "chaos"]);
        let bundle = generate(&a).unwrap();
        let yaml = secrets_yaml(&a, &bundle).unwrap();
        let last = yaml_serde::Deserializer::from_str(&yaml)
            .map(|d| yaml_serde::Value::deserialize(d).unwrap())
            .nth(3)
            .unwrap();
        assert_eq!(last["kind"], "MutatingWebhookConfiguration");
        assert_eq!(last["apiVersion"], "admissionregistration.k8s.io/v1");
        let config: MutatingWebhookConfiguration = yaml_serde::from_value(last).unwrap();
        let webhook = &config.webhooks.unwrap()[0];
        let ca = webhook.client_config.ca_bundle.as_ref().unwrap();
        assert_eq!(String::from_utf8(ca.0.clone()).unwrap(), bundle.ca_cert);
        let service = webhook.client_config.service.as_ref().unwrap();
        assert_eq!(
            (service.namespace.as_str(), service.name.as_str()),
            ("chaos", "faultline-webhook")
        );
        let excluded = webhook
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert_eq!(excluded, ["kube-system", "kube-public", "chaos"]);
        // The serving certificate carries the name the API server dials.
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(bundle.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(bundle.webhook.cert.as_bytes()).unwrap();
        let verify = |name: &str| {
            verifier.verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        verify("faultline-webhook.chaos.svc").unwrap();
        verify("faultline-webhook.chaos.svc.cluster.local").unwrap();
        assert!(verify("faultline-agent.chaos.svc").is_err());
    }

    #[test]
    fn the_chaos_admission_configurations_trust_the_ca() {
        let args = args(&["--namespace", "chaos-ns"]);
        let configs = chaos_webhook_configurations(&args, "PEM").expect("configurations");
        let kinds: Vec<&str> = configs.iter().filter_map(|c| c["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ValidatingWebhookConfiguration",
                "MutatingWebhookConfiguration"
            ]
        );
        let validate = &configs[0]["webhooks"][0];
        assert_eq!(validate["failurePolicy"], "Fail");
        assert_eq!(validate["clientConfig"]["caBundle"], "UEVN");
        assert_eq!(validate["clientConfig"]["service"]["namespace"], "chaos-ns");
        assert_eq!(
            validate["clientConfig"]["service"]["path"],
            "/validate-chaos"
        );
        assert_eq!(
            validate["rules"][0]["apiGroups"],
            serde_json::json!(["chaos.faultline.dev"])
        );
        assert_eq!(
            configs[1]["webhooks"][0]["clientConfig"]["service"]["path"],
            "/default-chaos"
        );
    }

    #[test]
    fn an_existing_ca_signs_and_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(&args(&[])).unwrap();
        write_files(dir.path(), &first).unwrap();
        let ca_cert = dir.path().join("ca.crt");
        let ca_key = dir.path().join("ca.key");
        let again = generate(&args(&[
            "--ca-cert",
            ca_cert.to_str().unwrap(),
            "--ca-key",
            ca_key.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(again.ca_cert, first.ca_cert);
        assert!(again.ca_key.is_none());
        assert_ne!(again.agent.cert, first.agent.cert);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ca_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
