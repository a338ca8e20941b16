//! The async machinery behind the blocking API: an owned tokio runtime and the gRPC clients,
//! shared by the testbed and every pod it hands out (so `Pod::exec_sync` works from any thread).

use std::future::Future;
use std::path::Path;

use tonic::transport::Channel;

use crate::cri::Cri;
use crate::error::{Error, Result};

pub(crate) struct Session {
    runtime: tokio::runtime::Runtime,
    pub channel: Channel,
    pub cri: Cri,
}

impl Session {
    /// The channel connects lazily (and reconnects), so this can be made before containerd runs.
    pub fn new(socket: &Path) -> Result<Session> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testbed-rt")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let channel = {
            let _guard = runtime.enter();
            crate::grpc::connect_lazy(socket)?
        };
        let cri = Cri::new(channel.clone());
        Ok(Session {
            runtime,
            channel,
            cri,
        })
    }

    /// Runs `future` to completion on the testbed runtime. Must not be called from inside an
    /// async context (the testbed API is for plain test functions).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}
