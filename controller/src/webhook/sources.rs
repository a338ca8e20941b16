//! Where the ConfigMaps and Namespaces come from: YAML files in a directory (offline mode, for
//! local use and tests), or the API server, watched with kube-runtime reflectors so that a
//! changed template or config takes effect without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;

use super::catalog::Catalog;
use super::config::Settings;
use super::review::Webhook;
use super::template::TemplateEngine;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}, document {document}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        document: usize,
        reason: String,
    },
}

/// The objects of a manifests directory.
#[derive(Debug, Default)]
pub struct Manifests {
    pub config_maps: Vec<ConfigMap>,
    pub namespaces: HashMap<String, Arc<Namespace>>,
}

/// Reads every `*.yaml`/`*.yml` file of `dir` (not recursively): ConfigMaps, Namespaces, and
/// the items of `List`s; other kinds are ignored.
pub fn read_manifests(dir: &Path) -> Result<Manifests, SourceError> {
    let read_err = |path: &Path, source| SourceError::Read {
        path: path.to_owned(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let mut out = Manifests::default();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        for (index, doc) in yaml_serde::Deserializer::from_str(&text).enumerate() {
            let parse_err = |reason: String| SourceError::Parse {
                path: path.clone(),
                document: index + 1,
                reason,
            };
            let value =
                yaml_serde::Value::deserialize(doc).map_err(|e| parse_err(e.to_string()))?;
            let items = match value["kind"].as_str() {
                Some("List") => value["items"].as_sequence().cloned().unwrap_or_default(),
                _ => vec![value],
            };
            for item in items {
                match item["kind"].as_str() {
                    Some("ConfigMap") => out
                        .config_maps
                        .push(yaml_serde::from_value(item).map_err(|e| parse_err(e.to_string()))?),
                    Some("Namespace") => {
                        let ns: Namespace =
                            yaml_serde::from_value(item).map_err(|e| parse_err(e.to_string()))?;
                        let name = ns
                            .metadata
                            .name
                            .clone()
                            .ok_or_else(|| parse_err("a Namespace without a name".into()))?;
                        out.namespaces.insert(name, Arc::new(ns));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// The webhook over a manifests directory.
pub fn offline(
    engine: &dyn TemplateEngine,
    settings: Settings,
    dir: &Path,
) -> Result<Webhook, SourceError> {
    let manifests = read_manifests(dir)?;
    let catalog = Catalog::build(engine, &settings, &manifests.config_maps);
    Ok(Webhook::new(
        settings,
        catalog,
        Arc::new(manifests.namespaces),
    ))
}

/// The webhook over the API server: serve only once `ready` is done, and poll `watch` (which
/// fills the stores and keeps them current) all along.
pub struct InCluster {
    pub webhook: Arc<Webhook>,
    pub watch: futures::future::BoxFuture<'static, ()>,
    pub ready: futures::future::BoxFuture<'static, ()>,
}

/// In a cluster: the Namespaces, the template ConfigMaps (controller's namespace, template
/// labels) and the config ConfigMaps (every namespace, config labels), each reflected into a
/// store; the catalog is rebuilt on every change.
pub fn in_cluster(
    client: kube::Client,
    engine: Arc<dyn TemplateEngine>,
    settings: Settings,
) -> InCluster {
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let (templates, template_writer) = reflector::store::<ConfigMap>();
    let (configs, config_writer) = reflector::store::<ConfigMap>();
    let ns_stream = reflector(
        ns_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map_ok(|_| ())
    .boxed();
    let template_stream = reflector(
        template_writer,
        watcher(
            Api::<ConfigMap>::namespaced(client.clone(), &settings.namespace),
            watcher::Config::default().labels(&settings.template_labels.to_string()),
        ),
    )
    .default_backoff()
    .map_ok(|_| ())
    .boxed();
    let config_stream = reflector(
        config_writer,
        watcher(
            Api::<ConfigMap>::all(client),
            watcher::Config::default().labels(&settings.config_labels.to_string()),
        ),
    )
    .default_backoff()
    .map_ok(|_| ())
    .boxed();

    let webhook = Arc::new(Webhook::new(
        settings.clone(),
        Catalog::default(),
        Arc::new(namespaces.clone()),
    ));
    let rebuild = {
        let webhook = webhook.clone();
        let (templates, configs) = (templates.clone(), configs.clone());
        move || {
            let all: Vec<Arc<ConfigMap>> = templates
                .state()
                .into_iter()
                .chain(configs.state())
                .collect();
            let catalog = Catalog::build(engine.as_ref(), &settings, all.iter().map(Arc::as_ref));
            webhook.set_catalog(catalog);
        }
    };
    let configs_changed = futures::stream::select(template_stream, config_stream);
    let keep_current = async move {
        let namespaces = ns_stream.for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching namespaces");
            }
        });
        let config_maps = configs_changed.for_each(|event| {
            match event {
                Ok(()) => rebuild(),
                Err(e) => tracing::warn!(error = %e, "watching the webhook's ConfigMaps"),
            }
            async {}
        });
        futures::future::join(namespaces, config_maps).await;
    };
    let ready = async move {
        // Err only when a writer is gone, which the watch future owns: nothing to wait for.
        let _ = futures::future::join3(
            namespaces.wait_until_ready(),
            templates.wait_until_ready(),
            configs.wait_until_ready(),
        )
        .await;
    };
    InCluster {
        webhook,
        watch: Box::pin(keep_current),
        ready: Box::pin(ready),
    }
}
