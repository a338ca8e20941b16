//! `faultline attack network delay|loss|duplicate|corrupt|reorder|bandwidth|partition`: chaosd's
//! flags, turned into the whole network state of the pod (tc rules, an ipset of the `--ip`
//! targets, iptables chains for a partition) and sent as one StartNetworkExperiment.

use anyhow::bail;
use clap::{Args, Subcommand};
use faultline_proto::agent::v1 as api;
use faultline_proto::pb;

#[derive(Args)]
pub struct NetworkAttack {
    #[command(subcommand)]
    action: Action,
}

#[derive(Args)]
struct Common {
    /// The container: containerd://ID, cri-o://ID, docker://ID or a bare ID.
    #[arg(long)]
    container: String,
    /// The pod's UID: its sandbox is used while the container is not running.
    #[arg(long, default_value = "")]
    pod_uid: String,
    /// The pod's network device.
    #[arg(long, default_value = "eth0")]
    device: String,
    /// Only traffic to these addresses or CIDRs (repeatable).
    #[arg(long = "ip")]
    ips: Vec<String>,
    /// Only traffic to these ports (80, 80,443 or 8000:8080; needs --protocol).
    #[arg(long, default_value = "")]
    port: String,
    /// Only this protocol: tcp, udp, icmp or all.
    #[arg(long, default_value = "")]
    protocol: String,
    /// Recover by itself after this long (e.g. 30s, 5m).
    #[arg(long)]
    duration: Option<humantime::Duration>,
    /// Where netem runs: auto, kernel or userspace (NFQUEUE).
    #[arg(long, default_value = "")]
    netem_path: String,
    /// Validate and print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum Action {
    /// Delay outgoing packets.
    Delay {
        #[command(flatten)]
        common: Common,
        /// e.g. 100ms.
        #[arg(long)]
        latency: String,
        #[arg(long, default_value = "")]
        jitter: String,
        /// Correlation with the previous packet's delay, percent.
        #[arg(long, default_value_t = 0.0)]
        correlation: f32,
    },
    /// Drop outgoing packets.
    Loss {
        #[command(flatten)]
        common: Common,
        /// Share of packets, 0-100.
        #[arg(long)]
        percent: f32,
        #[arg(long, default_value_t = 0.0)]
        correlation: f32,
    },
    /// Send outgoing packets twice.
    Duplicate {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        percent: f32,
        #[arg(long, default_value_t = 0.0)]
        correlation: f32,
    },
    /// Flip a bit in outgoing packets.
    Corrupt {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        percent: f32,
        #[arg(long, default_value_t = 0.0)]
        correlation: f32,
    },
    /// Send a share of packets at once while the others are delayed.
    Reorder {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        percent: f32,
        /// The delay the others get (reordering needs one).
        #[arg(long)]
        latency: String,
        #[arg(long, default_value_t = 0.0)]
        correlation: f32,
        #[arg(long, default_value_t = 0)]
        gap: u32,
    },
    /// Limit the outgoing bandwidth (token bucket).
    Bandwidth {
        #[command(flatten)]
        common: Common,
        /// e.g. 1mbit, 100kbit, 1mbps (bytes/s).
        #[arg(long)]
        rate: String,
        /// Bytes that may wait in the queue.
        #[arg(long, default_value_t = 20_000)]
        limit: u32,
        /// Bucket size in bytes.
        #[arg(long, default_value_t = 10_000)]
        buffer: u32,
        /// Peak rate in bits per second.
        #[arg(long, default_value_t = 0)]
        peakrate: u64,
        /// Peak bucket size in bytes.
        #[arg(long, default_value_t = 0)]
        minburst: u32,
    },
    /// Drop all traffic to (and, with --direction both/from, from) the --ip targets.
    Partition {
        #[command(flatten)]
        common: Common,
        /// to, from or both.
        #[arg(long, default_value = "to")]
        direction: String,
    },
}

/// A stable short name derived from the targets (ipset names are at most 31 characters).
fn short_hash(parts: &[String]) -> String {
    let hash = parts
        .iter()
        .flat_map(|p| p.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{:08x}", hash as u32)
}

impl Common {
    fn ipset(&self) -> Option<pb::IpSet> {
        (!self.ips.is_empty()).then(|| pb::IpSet {
            name: format!("fl-{}", short_hash(&self.ips)),
            cidrs: self.ips.clone(),
            ..Default::default()
        })
    }

    fn tc(&self, r#type: pb::tc::Type) -> pb::Tc {
        pb::Tc {
            r#type: r#type as i32,
            ipset: self.ipset().map(|s| s.name).unwrap_or_default(),
            protocol: self.protocol.clone(),
            device: self.device.clone(),
            ..Default::default()
        }
    }

    fn request(&self) -> api::StartNetworkExperimentRequest {
        api::StartNetworkExperimentRequest {
            container_id: self.container.clone(),
            pod_uid: self.pod_uid.clone(),
            ipsets: self.ipset().into_iter().collect(),
            duration_ms: self.duration.map(|d| d.as_millis() as u64).unwrap_or(0),
            dry_run: self.dry_run,
            netem_path: self.netem_path.clone(),
            ..Default::default()
        }
    }

    fn netem(&self, netem: pb::Netem) -> api::StartNetworkExperimentRequest {
        let mut tc = self.tc(pb::tc::Type::Netem);
        tc.netem = Some(netem);
        self.one_tc(tc)
    }

    /// A request with one tc rule, filtered by --port when given.
    fn one_tc(&self, tc: pb::Tc) -> api::StartNetworkExperimentRequest {
        let mut request = self.request();
        request.tcs = vec![tc];
        if !self.port.is_empty() {
            request.tc_ports = vec![api::TcPorts {
                tc: 0,
                egress_port: self.port.clone(),
                ..Default::default()
            }];
        }
        request
    }
}

impl NetworkAttack {
    pub fn request(&self) -> anyhow::Result<api::StartNetworkExperimentRequest> {
        Ok(match &self.action {
            Action::Delay {
                common,
                latency,
                jitter,
                correlation,
            } => common.netem(pb::Netem {
                time: latency.clone(),
                jitter: jitter.clone(),
                delay_corr: *correlation,
                ..Default::default()
            }),
            Action::Loss {
                common,
                percent,
                correlation,
            } => common.netem(pb::Netem {
                loss: *percent,
                loss_corr: *correlation,
                ..Default::default()
            }),
            Action::Duplicate {
                common,
                percent,
                correlation,
            } => common.netem(pb::Netem {
                duplicate: *percent,
                duplicate_corr: *correlation,
                ..Default::default()
            }),
            Action::Corrupt {
                common,
                percent,
                correlation,
            } => common.netem(pb::Netem {
                corrupt: *percent,
                corrupt_corr: *correlation,
                ..Default::default()
            }),
            Action::Reorder {
                common,
                percent,
                latency,
                correlation,
                gap,
            } => common.netem(pb::Netem {
                time: latency.clone(),
                reorder: *percent,
                reorder_corr: *correlation,
                gap: *gap,
                ..Default::default()
            }),
            Action::Bandwidth {
                common,
                rate,
                limit,
                buffer,
                peakrate,
                minburst,
            } => {
                let mut tc = common.tc(pb::tc::Type::Bandwidth);
                tc.tbf = Some(pb::Tbf {
                    rate: rate.clone(),
                    limit: *limit,
                    buffer: *buffer,
                    peak_rate: *peakrate,
                    min_burst: *minburst,
                });
                common.one_tc(tc)
            }
            Action::Partition { common, direction } => {
                let Some(set) = common.ipset() else {
                    bail!("a partition needs at least one --ip");
                };
                let directions: &[pb::chain::Direction] = match direction.as_str() {
                    "to" => &[pb::chain::Direction::Output],
                    "from" => &[pb::chain::Direction::Input],
                    "both" => &[pb::chain::Direction::Output, pb::chain::Direction::Input],
                    other => bail!("--direction {other:?}: to, from or both"),
                };
                let mut request = common.request();
                request.chains = directions
                    .iter()
                    .map(|d| pb::Chain {
                        name: format!(
                            "FL-{}-{}",
                            if *d == pb::chain::Direction::Output {
                                "OUT"
                            } else {
                                "IN"
                            },
                            short_hash(&common.ips)
                        ),
                        direction: *d as i32,
                        ipsets: vec![set.name.clone()],
                        target: "DROP".into(),
                        protocol: common.protocol.clone(),
                        destination_ports: common.port.clone(),
                        device: common.device.clone(),
                        ..Default::default()
                    })
                    .collect();
                request
            }
        })
    }
}
