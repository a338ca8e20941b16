//! The real [`Agents`]: a node's agent found through the EndpointSlices (addresses cached for a
//! short while), one mTLS channel per node reused by every call, connects retried with
//! exponential backoff, every call bounded by a timeout. A failed connection or call drops the
//! node's channel and address so the next call finds and connects afresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use super::discovery::{AgentService, agent_address};
use super::tls::ClientTls;
use super::{AgentCall, AgentError, AgentReply, Agents};
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    /// Connection attempts per call (the first included).
    pub connect_attempts: u32,
    /// The wait before the second attempt; doubled each time.
    pub backoff: Duration,
    /// How long a discovered address is trusted.
    pub address_ttl: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            connect_attempts: 3,
            backoff: Duration::from_millis(200),
            address_ttl: Duration::from_secs(30),
        }
    }
}

struct NodeAgent {
    address: String,
    found_at: Instant,
    channel: Option<Channel>,
}

pub struct AgentPool {
    client: kube::Client,
    service: AgentService,
    tls: ClientTls,
    settings: PoolSettings,
    metrics: Option<Arc<Metrics>>,
    nodes: Mutex<HashMap<String, NodeAgent>>,
}

impl AgentPool {
    pub fn new(
        client: kube::Client,
        service: AgentService,
        tls: ClientTls,
        settings: PoolSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> AgentPool {
        AgentPool {
            client,
            service,
            tls,
            settings,
            metrics,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    async fn address(&self, node: &str) -> Result<String, AgentError> {
        if let Some(known) = self.nodes.lock().get(node)
            && known.found_at.elapsed() < self.settings.address_ttl
        {
            return Ok(known.address.clone());
        }
        let address = agent_address(&self.client, &self.service, node).await?;
        let mut nodes = self.nodes.lock();
        let entry = nodes.entry(node.to_owned()).or_insert_with(|| NodeAgent {
            address: address.clone(),
            found_at: Instant::now(),
            channel: None,
        });
        if entry.address != address {
            entry.channel = None;
            entry.address = address.clone();
        }
        entry.found_at = Instant::now();
        Ok(address)
    }

    async fn channel(&self, node: &str, address: &str) -> Result<Channel, AgentError> {
        if let Some(channel) = self
            .nodes
            .lock()
            .get(node)
            .filter(|n| n.address == address)
            .and_then(|n| n.channel.clone())
        {
            return Ok(channel);
        }
        let unreachable = |reason: String| AgentError::Unreachable {
            node: node.to_owned(),
            address: address.to_owned(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("https://{address}"))
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(self.settings.connect_timeout)
            .tls_config(self.tls.config())
            .map_err(|e| unreachable(error_chain(&e)))?;
        let mut wait = self.settings.backoff;
        let mut attempt = 1;
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(e) if attempt >= self.settings.connect_attempts => {
                    return Err(unreachable(format!(
                        "{} (after {attempt} attempts)",
                        error_chain(&e)
                    )));
                }
                Err(e) => {
                    tracing::debug!(node, address, attempt, error = %error_chain(&e), "agent connect failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
            }
        };
        if let Some(entry) = self.nodes.lock().get_mut(node)
            && entry.address == address
        {
            entry.channel = Some(channel.clone());
        }
        Ok(channel)
    }

    fn forget(&self, node: &str) {
        self.nodes.lock().remove(node);
    }

    async fn call_node(&self, node: &str, call: AgentCall) -> Result<AgentReply, AgentError> {
        let method = call.method();
        let address = self.address(node).await?;
        let channel = match self.channel(node, &address).await {
            Ok(channel) => channel,
            Err(e) => {
                self.forget(node);
                return Err(e);
            }
        };
        match tokio::time::timeout(
            self.settings.call_timeout,
            super::dispatch::dispatch(channel, call),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(status)) => {
                if status.code() == tonic::Code::Unavailable {
                    self.forget(node);
                }
                Err(AgentError::Refused {
                    node: node.to_owned(),
                    method,
                    code: status.code(),
                    message: status.message().to_owned(),
                })
            }
            Err(_) => {
                self.forget(node);
                Err(AgentError::Timeout {
                    node: node.to_owned(),
                    address,
                    method,
                    seconds: self.settings.call_timeout.as_secs(),
                })
            }
        }
    }
}

impl Agents for AgentPool {
    fn call<'a>(
        &'a self,
        node: &'a str,
        call: AgentCall,
    ) -> BoxFuture<'a, Result<AgentReply, AgentError>> {
        Box::pin(async move {
            let method = call.method();
            let started = Instant::now();
            let result = self.call_node(node, call).await;
            if let Some(metrics) = &self.metrics {
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(e) => e.reason(),
                };
                metrics.agent_call(method, outcome, started.elapsed());
            }
            result
        })
    }
}

/// An error and its causes on one line (tonic's transport errors hide the reason in sources).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
