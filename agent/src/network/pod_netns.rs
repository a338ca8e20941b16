//! What network chaos does in a pod's network namespace other than running commands (those go
//! through [`super::runner::Runner`]): finding the namespace, and traffic control inside it over
//! netlink. Behind a trait so `NetworkChaos` (reconcile, rollback, recovery) runs against a fake
//! kernel without root.

use std::any::Any;
use std::fmt::Debug;

use super::error::NetworkError;
use super::netns;
use super::qdisc::{NetlinkTc, TrafficControl};

/// Work on a namespace's traffic control; its result travels back boxed.
pub type TcWork =
    Box<dyn FnOnce(&mut dyn TrafficControl) -> Result<Box<dyn Any + Send>, NetworkError> + Send>;

#[tonic::async_trait]
pub trait PodNetns: Send + Sync + Debug {
    /// The inode of a process's network namespace.
    fn inode_of(&self, pid: u32) -> Result<u64, NetworkError>;
    /// Whether `inode` is the node's own network namespace.
    fn is_host(&self, inode: u64) -> bool;
    /// A live process in the namespace: `hint` if it still is in it, else any.
    fn find_process(&self, inode: u64, hint: Option<u32>) -> Option<u32>;
    /// Runs `work` on the traffic control of the namespace `pid` is in (checked to be `inode`).
    async fn with_tc(
        &self,
        pid: u32,
        inode: u64,
        work: TcWork,
    ) -> Result<Box<dyn Any + Send>, NetworkError>;
}

/// [`PodNetns::with_tc`] with a typed result.
pub async fn in_tc<T, F>(
    ns: &dyn PodNetns,
    pid: u32,
    inode: u64,
    work: F,
) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn TrafficControl) -> Result<T, NetworkError> + Send + 'static,
{
    let boxed = ns
        .with_tc(
            pid,
            inode,
            Box::new(move |tc| work(tc).map(|t| Box::new(t) as Box<dyn Any + Send>)),
        )
        .await?;
    boxed
        .downcast::<T>()
        .map(|t| *t)
        .map_err(|_| NetworkError::Internal("traffic control answered another type".into()))
}

/// The real namespaces: /proc, setns on a dedicated thread, a route netlink socket.
#[derive(Debug, Default)]
pub struct HostNetns;

#[tonic::async_trait]
impl PodNetns for HostNetns {
    fn inode_of(&self, pid: u32) -> Result<u64, NetworkError> {
        netns::inode_of(pid)
    }

    fn is_host(&self, inode: u64) -> bool {
        netns::is_host(inode)
    }

    fn find_process(&self, inode: u64, hint: Option<u32>) -> Option<u32> {
        netns::find_process(inode, hint)
    }

    async fn with_tc(
        &self,
        pid: u32,
        inode: u64,
        work: TcWork,
    ) -> Result<Box<dyn Any + Send>, NetworkError> {
        netns::run_in(pid, inode, move || {
            let mut tc = NetlinkTc::open()?;
            work(&mut tc)
        })
        .await
    }
}

#[cfg(test)]
pub mod fake {
    //! One pod's namespace in memory: a fake kernel whose qdiscs outlive a crashed agent.
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::network::qdisc::fake::FakeTc;

    #[derive(Debug, Default)]
    pub struct FakeNetns {
        /// The namespace's inode and a process in it (`None`: the pod is gone).
        pub inode: u64,
        pub pid: Mutex<Option<u32>>,
        pub tc: Arc<Mutex<FakeTc>>,
    }

    #[tonic::async_trait]
    impl PodNetns for FakeNetns {
        fn inode_of(&self, pid: u32) -> Result<u64, NetworkError> {
            match *self.pid.lock().unwrap() {
                Some(p) if p == pid => Ok(self.inode),
                _ => Err(NetworkError::Namespace {
                    pid,
                    reason: "no such process".into(),
                }),
            }
        }
        fn is_host(&self, inode: u64) -> bool {
            inode == 1
        }
        fn find_process(&self, inode: u64, _: Option<u32>) -> Option<u32> {
            (inode == self.inode)
                .then(|| *self.pid.lock().unwrap())
                .flatten()
        }
        async fn with_tc(
            &self,
            pid: u32,
            inode: u64,
            work: TcWork,
        ) -> Result<Box<dyn Any + Send>, NetworkError> {
            if self.inode_of(pid)? != inode {
                return Err(NetworkError::Namespace {
                    pid,
                    reason: "the process is no longer in the pod's namespace".into(),
                });
            }
            let mut tc = self.tc.lock().unwrap();
            work(&mut *tc)
        }
    }
}
