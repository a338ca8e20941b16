//! The configs the webhook can inject, built from the template and config ConfigMaps.
//!
//! Built whenever a ConfigMap changes, not per request: each config's template is rendered
//! with its arguments once, so a request only looks a config up. A config that cannot be
//! used (unknown template, render error, YAML that is not an injection, a name defined twice)
//! stays in the catalog with the reason, which the webhook returns as a warning.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;

use super::config::{ConfigDoc, Injection, Settings};
use super::template::{Template, TemplateEngine};
use crate::crd::PodSelectorSpec;

/// The data key of a template ConfigMap.
pub const TEMPLATE_KEY: &str = "data";

#[derive(Debug)]
pub struct Config {
    pub name: String,
    /// `namespace/configmap[key]`, for messages.
    pub source: String,
    pub selector: Option<PodSelectorSpec>,
    pub injection: Result<Arc<Injection>, String>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    configs: HashMap<String, Arc<Config>>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Arc<Config>> {
        self.configs.get(name)
    }

    /// The config names, sorted (for "unknown config" messages).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.configs.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Builds the catalog from every ConfigMap the webhook watches; those matching neither
    /// label filter are ignored.
    pub fn build<'a>(
        engine: &dyn TemplateEngine,
        settings: &Settings,
        config_maps: impl IntoIterator<Item = &'a ConfigMap>,
    ) -> Catalog {
        let mut templates: BTreeMap<String, Result<Arc<dyn Template>, String>> = BTreeMap::new();
        let mut docs: Vec<(String, Result<ConfigDoc, String>)> = Vec::new();
        let mut config_maps: Vec<&ConfigMap> = config_maps.into_iter().collect();
        config_maps.sort_by_key(|cm| (cm.metadata.namespace.clone(), cm.metadata.name.clone()));
        for cm in config_maps {
            let labels = cm.metadata.labels.as_ref();
            let namespace = cm.metadata.namespace.as_deref().unwrap_or_default();
            let name = cm.metadata.name.as_deref().unwrap_or_default();
            let data = cm.data.as_ref();
            if settings.template_labels.matches(labels) && namespace == settings.namespace {
                let compiled = match data.and_then(|d| d.get(TEMPLATE_KEY)) {
                    Some(source) => engine.compile(name, source).map_err(|e| e.to_string()),
                    None => Err(format!(
                        "template ConfigMap {namespace}/{name} has no data key {TEMPLATE_KEY:?}"
                    )),
                };
                templates.insert(name.to_owned(), compiled);
            } else if settings.config_labels.matches(labels) {
                for (key, text) in data.into_iter().flatten() {
                    let source = format!("{namespace}/{name}[{key}]");
                    let doc = yaml_serde::from_str::<ConfigDoc>(text)
                        .map_err(|e| format!("config {source} is not a config: {e}"));
                    docs.push((source, doc));
                }
            }
        }

        let mut configs: HashMap<String, Arc<Config>> = HashMap::new();
        for (source, doc) in docs {
            let doc = match doc {
                Ok(doc) => doc,
                Err(reason) => {
                    tracing::warn!(%reason, "webhook config ignored");
                    continue;
                }
            };
            let injection = match &doc.template {
                None => Ok(Arc::new(doc.injection)),
                Some(template) => render(&templates, template, &doc.arguments, &doc.name),
            };
            if let Err(reason) = &injection {
                tracing::warn!(config = %doc.name, %source, %reason, "webhook config unusable");
            }
            let config = match configs.get(&doc.name) {
                Some(first) => Config {
                    name: doc.name.clone(),
                    injection: Err(format!(
                        "config {:?} is defined twice, in {} and {source}",
                        doc.name, first.source
                    )),
                    source,
                    selector: None,
                },
                None => Config {
                    name: doc.name.clone(),
                    source,
                    selector: doc.selector,
                    injection,
                },
            };
            configs.insert(doc.name, Arc::new(config));
        }
        Catalog { configs }
    }
}

fn render(
    templates: &BTreeMap<String, Result<Arc<dyn Template>, String>>,
    template: &str,
    arguments: &BTreeMap<String, serde_json::Value>,
    config: &str,
) -> Result<Arc<Injection>, String> {
    let compiled = match templates.get(template) {
        Some(Ok(t)) => t,
        Some(Err(reason)) => return Err(reason.clone()),
        None => {
            let known: Vec<&str> = templates.keys().map(String::as_str).collect();
            return Err(format!(
                "config {config:?} uses template {template:?}, which is not defined (templates: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        }
    };
    let args = serde_json::Value::Object(
        arguments
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let text = compiled.render(&args).map_err(|e| e.to_string())?;
    yaml_serde::from_str::<Injection>(&text).map_err(|e| {
        format!("template {template:?} rendered with the arguments of config {config:?} is not an injection: {e}")
    })
    .map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::template::GoTemplates;
    use serde_json::json;

    fn cm(namespace: &str, name: &str, component: &str, data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/component": component}},
            "data": data,
        }))
        .unwrap()
    }

    fn build(cms: &[ConfigMap]) -> Catalog {
        Catalog::build(&GoTemplates, &Settings::default(), cms)
    }

    const TEMPLATE: &str = "containers:\n- name: side\n  image: {{.Image}}\n";

    #[test]
    fn a_template_config_renders_with_its_arguments() {
        let catalog = build(&[
            cm("faultline", "t", "template", json!({"data": TEMPLATE})),
            cm(
                "app",
                "c",
                "webhook",
                json!({"c.yaml": "name: cfg\ntemplate: t\narguments:\n  Image: busybox\n"}),
            ),
        ]);
        let config = catalog.get("cfg").unwrap();
        assert_eq!(config.source, "app/c[c.yaml]");
        let injection = config.injection.as_ref().unwrap();
        assert_eq!(injection.containers[0].image.as_deref(), Some("busybox"));
        assert_eq!(catalog.names(), ["cfg"]);
    }

    #[test]
    fn templates_outside_the_controllers_namespace_or_without_the_label_are_not_templates() {
        let catalog = build(&[
            cm("elsewhere", "t", "template", json!({"data": TEMPLATE})),
            cm("faultline", "u", "other", json!({"data": TEMPLATE})),
            cm(
                "app",
                "c",
                "webhook",
                json!({"a": "name: a\ntemplate: t\n", "b": "name: b\ntemplate: u\n"}),
            ),
        ]);
        for name in ["a", "b"] {
            let reason = catalog.get(name).unwrap().injection.as_ref().unwrap_err();
            assert!(
                reason.contains("which is not defined (templates: none)"),
                "{reason}"
            );
        }
    }

    #[test]
    fn unusable_configs_keep_their_reason() {
        let catalog = build(&[
            cm("faultline", "t", "template", json!({"data": TEMPLATE})),
            cm("faultline", "nodata", "template", json!({"other": "x"})),
            cm(
                "faultline",
                "notyaml",
                "template",
                json!({"data": "containers: {{.Image}}\n"}),
            ),
            cm(
                "app",
                "c",
                "webhook",
                json!({
                    "missing": "name: missing\ntemplate: t\n",
                    "nodata": "name: nodata\ntemplate: nodata\n",
                    "notyaml": "name: notyaml\ntemplate: notyaml\narguments: {Image: x}\n",
                    "garbage": "[not, a, config]",
                }),
            ),
            cm(
                "other",
                "d",
                "webhook",
                json!({"x": "name: missing\ncontainers: []\n"}),
            ),
        ]);
        let reason = |n: &str| catalog.get(n).unwrap().injection.clone().unwrap_err();
        // Defined twice: neither definition is used.
        assert!(reason("missing").contains("defined twice, in app/c[missing] and other/d[x]"));
        assert!(reason("nodata").contains("has no data key \"data\""));
        assert!(
            reason("notyaml").contains("is not an injection"),
            "{}",
            reason("notyaml")
        );
        assert_eq!(catalog.names(), ["missing", "nodata", "notyaml"]);
    }
}
