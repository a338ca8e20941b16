//! Where a delay is put, behind a trait so the choice between the paths, replacement and
//! removal ([`super::Latency`]) are tested without privileges. The real one works on the
//! namespace of the process it runs in.

use std::sync::Arc;

use agent::network::iptables::{self, Backend, CHAOS_TC, OWN_PACKET_MARK, TableRules};
use agent::network::qdisc::{self, Baseline, BuildError, Classful, NetlinkTc};
use agent::network::runner::Runner;
use agent::network::spec::{NetemSpec, TcAction, TcFilter, TcRule};
use agent::network::userspace::{QueueServer, QueueSet};
use agent::network::{NetworkError, netns};

/// The NFQUEUE queue of the delayed device (queues are per network namespace).
const QUEUE: u16 = 31_700;

/// Why the kernel path did not take the delay.
#[derive(Debug)]
pub enum KernelRefusal {
    /// The kernel has no netem (no sch_netem): the userspace path can take over.
    NoNetem(String),
    Failed(NetworkError),
}

#[tonic::async_trait]
pub trait DelayBackend: Send + Sync {
    /// netem with `delay_us` as `device`'s root qdisc, replacing ours if it is there.
    async fn kernel_set(&self, device: &str, delay_us: u32) -> Result<(), KernelRefusal>;
    /// The device's root as it was before the first `kernel_set`.
    async fn kernel_clear(&self, device: &str) -> Result<(), NetworkError>;
    /// Every packet leaving `device` held `delay_us` by the NFQUEUE path (started, or its
    /// delay replaced).
    async fn userspace_set(&self, device: &str, delay_us: u32) -> Result<(), NetworkError>;
    /// The NFQUEUE rules removed and the queue server stopped (held packets released).
    async fn userspace_clear(&self) -> Result<(), NetworkError>;
    /// What the NFQUEUE path did so far, while it runs.
    fn userspace_stats(&self) -> Option<String>;
}

fn netem(delay_us: u32) -> NetemSpec {
    NetemSpec {
        latency_us: delay_us,
        // tc's default queue length.
        limit: 1000,
        ..Default::default()
    }
}

/// The NFQUEUE path's mangle rules: our own duplicates pass, everything else leaving
/// `device` is queued (and flows unqueued if the agent dies: `--queue-bypass`).
pub(crate) fn queue_rules(device: &str) -> TableRules {
    TableRules {
        base: vec![(
            CHAOS_TC,
            vec![
                format!("-m mark --mark {OWN_PACKET_MARK:#x}/{OWN_PACKET_MARK:#x} -j RETURN"),
                format!("-o {device} -j NFQUEUE --queue-num {QUEUE} --queue-bypass"),
            ],
        )],
        named: Vec::new(),
    }
}

struct Userspace {
    server: QueueServer,
    backend: Backend,
}

/// The real backend: netlink and iptables in the namespace of `pid` (ours: entering it is a
/// no-op, so NET_ADMIN is enough).
pub struct NetlinkBackend {
    runner: Arc<dyn Runner>,
    pid: u32,
    inode: u64,
    baseline: std::sync::Mutex<Option<Baseline>>,
    userspace: tokio::sync::Mutex<Option<Userspace>>,
    stats: std::sync::Mutex<Option<Arc<agent::network::userspace::server::Stats>>>,
}

impl NetlinkBackend {
    pub fn new(runner: Arc<dyn Runner>, pid: u32) -> Result<Self, NetworkError> {
        Ok(Self {
            runner,
            pid,
            inode: netns::inode_of(pid)?,
            baseline: Default::default(),
            userspace: Default::default(),
            stats: Default::default(),
        })
    }

    fn recorded_baseline(&self) -> Option<Baseline> {
        self.baseline.lock().ok().and_then(|b| b.clone())
    }
}

#[tonic::async_trait]
impl DelayBackend for NetlinkBackend {
    async fn kernel_set(&self, device: &str, delay_us: u32) -> Result<(), KernelRefusal> {
        let known = self.recorded_baseline();
        let device = device.to_owned();
        let rule = TcRule {
            device: device.clone(),
            filter: TcFilter::default(),
            action: TcAction::Netem(netem(delay_us)),
        };
        let (baseline, built) = netns::run_in(self.pid, self.inode, move || {
            let mut tc = NetlinkTc::open()?;
            // Recorded before our first tree: what recovery puts back.
            let baseline = match known {
                Some(b) => b,
                None => qdisc::baseline(&mut tc, &device)?,
            };
            let plan = qdisc::plan_device(&device, &[&rule], |_| true, Classful::Prio);
            let built = qdisc::build(&mut tc, &device, &plan, &baseline);
            Ok((baseline, built))
        })
        .await
        .map_err(KernelRefusal::Failed)?;
        if let Ok(mut b) = self.baseline.lock() {
            *b = Some(baseline);
        }
        match built {
            Ok(()) => Ok(()),
            Err(BuildError::NetemRefused(reason)) => Err(KernelRefusal::NoNetem(reason)),
            Err(BuildError::Other(e)) => Err(KernelRefusal::Failed(e)),
            Err(BuildError::PrioRefused) => Err(KernelRefusal::Failed(NetworkError::Internal(
                "prio refused for a tree without prio".into(),
            ))),
        }
    }

    async fn kernel_clear(&self, device: &str) -> Result<(), NetworkError> {
        let Some(baseline) = self.recorded_baseline() else {
            return Ok(());
        };
        let device = device.to_owned();
        netns::run_in(self.pid, self.inode, move || {
            qdisc::restore(&mut NetlinkTc::open()?, &device, &baseline)
        })
        .await
    }

    async fn userspace_set(&self, device: &str, delay_us: u32) -> Result<(), NetworkError> {
        let queues = QueueSet::from([(QUEUE, vec![netem(delay_us)])]);
        let mut userspace = self.userspace.lock().await;
        if let Some(running) = userspace.as_ref() {
            return running.server.update(queues).await;
        }
        let backend = iptables::detect_backend(&*self.runner, self.pid).await?;
        // The queue is bound before any packet is sent to it.
        let server = QueueServer::start(self.pid, self.inode, queues).await?;
        let rules = queue_rules(device);
        if let Err(e) =
            iptables::apply_table(&*self.runner, self.pid, backend, "mangle", &rules, &[]).await
        {
            if let Err(undo) =
                iptables::clear_table(&*self.runner, self.pid, backend, "mangle", &[]).await
            {
                tracing::error!(%undo, "NFQUEUE rules not removed after a failed start");
            }
            server.stop();
            return Err(e);
        }
        if let Ok(mut stats) = self.stats.lock() {
            *stats = Some(Arc::clone(&server.stats));
        }
        *userspace = Some(Userspace { server, backend });
        Ok(())
    }

    async fn userspace_clear(&self) -> Result<(), NetworkError> {
        let mut userspace = self.userspace.lock().await;
        let Some(running) = userspace.take() else {
            return Ok(());
        };
        let cleared =
            iptables::clear_table(&*self.runner, self.pid, running.backend, "mangle", &[]).await;
        if let Err(e) = cleared {
            // Keep serving the queue: with the rules still there, stopping would hold (or,
            // bypassed, stop delaying) traffic while the state says the delay is set.
            *userspace = Some(running);
            return Err(e);
        }
        running.server.stop();
        if let Ok(mut stats) = self.stats.lock() {
            *stats = None;
        }
        Ok(())
    }

    fn userspace_stats(&self) -> Option<String> {
        self.stats
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.describe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packet_leaving_the_device_is_queued_but_our_own_copies() {
        let text = iptables::restore_input("mangle", &queue_rules("eth0"), &[]);
        assert_eq!(
            text,
            "*mangle\n:CHAOS-TC - [0:0]\n\
             -A CHAOS-TC -m mark --mark 0xfa17000/0xfa17000 -j RETURN\n\
             -A CHAOS-TC -o eth0 -j NFQUEUE --queue-num 31700 --queue-bypass\n\
             COMMIT\n"
        );
    }
}
