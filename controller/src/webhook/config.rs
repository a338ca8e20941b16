//! The injection configs: what a config ConfigMap says (the template form and the older full
//! form), and what a rendered template is.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Volume, VolumeMount};
use serde::Deserialize;

use crate::crd::PodSelectorSpec;

/// What is injected into a pod: the older full form of a config, and what a template renders.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Injection {
    #[serde(default)]
    pub init_containers: Vec<Container>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Added to every application container of the pod (same name overwrites), and to the
    /// injected containers where they do not name that mount themselves.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// Per application container, commands run before the container's own command.
    #[serde(default)]
    pub post_start: BTreeMap<String, PostStart>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PostStart {
    pub command: Vec<String>,
}

/// One document of a config ConfigMap: a name, a selector, and either a template with its
/// arguments or the injection itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDoc {
    pub name: String,
    #[serde(default)]
    pub selector: Option<PodSelectorSpec>,
    /// The template ConfigMap's name (in the controller's namespace).
    #[serde(default)]
    pub template: Option<String>,
    /// The template's arguments (`{{.DataPath}}` is `arguments.DataPath`).
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
    #[serde(flatten)]
    pub injection: Injection,
}

/// An equality label selector (`key=value,key=value`), as given to `--template-labels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter(BTreeMap<String, String>);

#[derive(Debug, thiserror::Error)]
#[error("label selector {0:?}: expected key=value[,key=value...]")]
pub struct LabelFilterError(String);

impl std::str::FromStr for LabelFilter {
    type Err = LabelFilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut pairs = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| LabelFilterError(s.to_owned()))?;
            let (k, v) = (k.trim(), v.trim().trim_start_matches('='));
            if k.is_empty() {
                return Err(LabelFilterError(s.to_owned()));
            }
            pairs.insert(k.to_owned(), v.to_owned());
        }
        if pairs.is_empty() {
            return Err(LabelFilterError(s.to_owned()));
        }
        Ok(LabelFilter(pairs))
    }
}

impl std::fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl LabelFilter {
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.0
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }
}

/// Where the webhook finds its ConfigMaps.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The controller's namespace: templates live here, and its pods are never injected.
    pub namespace: String,
    pub template_labels: LabelFilter,
    pub config_labels: LabelFilter,
}

pub const DEFAULT_TEMPLATE_LABELS: &str = "app.kubernetes.io/component=template";
pub const DEFAULT_CONFIG_LABELS: &str = "app.kubernetes.io/component=webhook";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: "faultline".into(),
            template_labels: LabelFilter(BTreeMap::from([(
                "app.kubernetes.io/component".into(),
                "template".into(),
            )])),
            config_labels: LabelFilter(BTreeMap::from([(
                "app.kubernetes.io/component".into(),
                "webhook".into(),
            )])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filters_parse_print_and_match() {
        let f: LabelFilter = "app.kubernetes.io/component=template, tier=x"
            .parse()
            .unwrap();
        assert_eq!(f.to_string(), "app.kubernetes.io/component=template,tier=x");
        let labels = BTreeMap::from([
            (
                "app.kubernetes.io/component".to_owned(),
                "template".to_owned(),
            ),
            ("tier".to_owned(), "x".to_owned()),
        ]);
        assert!(f.matches(Some(&labels)));
        assert!(!f.matches(None));
        assert!("novalue".parse::<LabelFilter>().is_err());
        assert!("".parse::<LabelFilter>().is_err());
        assert_eq!(
            Settings::default().template_labels.to_string(),
            DEFAULT_TEMPLATE_LABELS
        );
        assert_eq!(
            Settings::default().config_labels.to_string(),
            DEFAULT_CONFIG_LABELS
        );
    }

    #[test]
    fn both_config_forms_parse() {
        let template: ConfigDoc = yaml_serde::from_str(
            "name: chaosfs-tikv\ntemplate: chaosfs-sidecar\narguments:\n  DataPath: /d\nselector:\n  labelSelectors:\n    app: tikv\n",
        )
        .unwrap();
        assert_eq!(template.template.as_deref(), Some("chaosfs-sidecar"));
        assert_eq!(template.arguments["DataPath"], "/d");
        assert_eq!(template.injection, Injection::default());
        let full: ConfigDoc = yaml_serde::from_str(
            "name: x\ncontainers:\n- name: c\n  image: i\npostStart:\n  app:\n    command: [a, b]\n",
        )
        .unwrap();
        assert_eq!(full.injection.containers[0].name, "c");
        assert_eq!(full.injection.post_start["app"].command, ["a", "b"]);
    }
}
