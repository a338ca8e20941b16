//! The NFQUEUE server of one pod: a dedicated OS thread that joins the pod's network namespace,
//! binds the pod's queues and decides every queued packet with its queue's [`Model`]: accept,
//! drop, hold until a deadline (a timer heap), accept a corrupted copy, and send duplicates
//! through a raw socket whose packets carry [`OWN_PACKET_MARK`] so the rules let them pass.
//!
//! The iptables rules use `--queue-bypass`: if this thread (or the agent) dies, packets flow
//! again instead of being dropped, and the agent's recovery removes the rules.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netlink::message::split_messages;
use netlink::nfqueue::{self, PACKET_MESSAGE_TYPE, Packet, Verdict};
use netlink::socket::{Family, NetlinkSocket};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, setsockopt,
    sockopt,
};

use super::model::{self, Decision, Model, Rng};
use crate::network::error::NetworkError;
use crate::network::iptables::OWN_PACKET_MARK;
use crate::network::netns;
use crate::network::spec::NetemSpec;

/// The netem rules of each queue number.
pub type QueueSet = BTreeMap<u16, Vec<NetemSpec>>;

/// How long the thread sleeps at most between looks at its commands.
const TICK: Duration = Duration::from_millis(10);

/// Counters of what the path did (for listings and the benchmark).
#[derive(Debug, Default)]
pub struct Stats {
    pub packets: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
    pub duplicated: AtomicU64,
    pub corrupted: AtomicU64,
    pub held: AtomicU64,
}

impl Stats {
    pub fn describe(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} packets: {} dropped, {} delayed ({} held now), {} duplicated, {} corrupted",
            g(&self.packets),
            g(&self.dropped),
            g(&self.delayed),
            g(&self.held),
            g(&self.duplicated),
            g(&self.corrupted)
        )
    }
}

enum Command {
    Update(QueueSet, mpsc::Sender<Result<(), String>>),
    Stop,
}

/// A running server; stopping it (or dropping it) releases every held packet.
#[derive(Debug)]
pub struct QueueServer {
    commands: mpsc::Sender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub stats: Arc<Stats>,
}

fn wait_ack(rx: mpsc::Receiver<Result<(), String>>) -> Result<(), NetworkError> {
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(NetworkError::Internal(format!("NFQUEUE: {e}"))),
        Err(_) => Err(NetworkError::Internal(
            "the NFQUEUE thread did not answer".into(),
        )),
    }
}

impl QueueServer {
    /// Starts the thread in the namespace of `pid` (which must have `inode`) and binds `queues`;
    /// returns once they are bound.
    pub async fn start(pid: u32, inode: u64, queues: QueueSet) -> Result<Self, NetworkError> {
        let (commands, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name(format!("nfqueue-{pid}"))
            .spawn(move || serve(pid, inode, queues, rx, ready_tx, thread_stats))
            .map_err(|e| NetworkError::Internal(format!("spawning the NFQUEUE thread: {e}")))?;
        let server = Self {
            commands,
            thread: Some(thread),
            stats,
        };
        tokio::task::spawn_blocking(move || wait_ack(ready_rx))
            .await
            .map_err(|e| NetworkError::Internal(e.to_string()))??;
        Ok(server)
    }

    /// Replaces the queues and their rules (new queues are bound before this returns).
    pub async fn update(&self, queues: QueueSet) -> Result<(), NetworkError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::Update(queues, tx))
            .map_err(|_| NetworkError::Internal("the NFQUEUE thread is gone".into()))?;
        tokio::task::spawn_blocking(move || wait_ack(rx))
            .await
            .map_err(|e| NetworkError::Internal(e.to_string()))?
    }

    /// Whether the thread still runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for QueueServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A packet waiting for its deadline.
struct Held {
    queue: u16,
    id: u32,
    /// A replacement payload (corrupted), if any.
    payload: Option<Vec<u8>>,
    /// Copies to send with it.
    copies: Vec<Vec<u8>>,
}

struct Server {
    socket: NetlinkSocket,
    raw: Option<OwnedFd>,
    models: BTreeMap<u16, Model>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    held: BTreeMap<u64, Held>,
    next_seq: u64,
    rng: Rng,
    stats: Arc<Stats>,
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
        ^ u64::from(std::process::id())
}

impl Server {
    fn configure(&mut self, queues: QueueSet) -> Result<(), String> {
        // Packets that arrive while we wait for acknowledgements are decided afterwards, with
        // the new rules: none may be left without a verdict.
        let mut arrived = Vec::new();
        let result = self.configure_queues(queues, &mut arrived);
        for (kind, body) in arrived {
            if kind == PACKET_MESSAGE_TYPE
                && let Ok(packet) = Packet::parse(&body)
            {
                self.handle(packet);
            }
        }
        result
    }

    fn configure_queues(
        &mut self,
        queues: QueueSet,
        arrived: &mut Vec<(u16, Vec<u8>)>,
    ) -> Result<(), String> {
        let old: Vec<u16> = self.models.keys().copied().collect();
        for queue in old.iter().filter(|q| !queues.contains_key(q)) {
            let _ = self
                .socket
                .request_keeping(nfqueue::unbind(*queue), arrived);
        }
        let mut models = BTreeMap::new();
        for (queue, specs) in queues {
            let model = Model::new(&specs, seed() ^ u64::from(queue));
            if !old.contains(&queue) {
                self.socket
                    .request_keeping(nfqueue::bind(queue), arrived)
                    .map_err(|e| format!("binding queue {queue}: {e}"))?;
            }
            // The kernel holds our delayed packets too: its queue is netem's limit. Past it,
            // packets are dropped, as netem drops past its limit (no fail-open).
            let gso = if model.alters_packets() {
                0
            } else {
                nfqueue::NFQA_CFG_F_GSO
            };
            self.socket
                .request_keeping(
                    nfqueue::configure(
                        queue,
                        0xffff,
                        model.limit().max(64),
                        gso,
                        nfqueue::NFQA_CFG_F_FAIL_OPEN | nfqueue::NFQA_CFG_F_GSO,
                    ),
                    arrived,
                )
                .map_err(|e| format!("configuring queue {queue}: {e}"))?;
            models.insert(queue, model);
        }
        self.models = models;
        Ok(())
    }

    fn verdict(&self, queue: u16, id: u32, verdict: Verdict, payload: Option<&[u8]>) {
        let bytes = nfqueue::verdict(queue, id, verdict, payload).finish(0);
        if let Err(err) = self.socket.send_raw(&bytes) {
            tracing::debug!(%err, queue, id, "verdict not delivered");
        }
    }

    fn send_copy(&self, packet: &[u8]) {
        let Some(raw) = &self.raw else { return };
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return; // IPv4 only
        }
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let addr = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
        if let Err(err) = sendto(
            std::os::fd::AsRawFd::as_raw_fd(raw),
            packet,
            &addr,
            MsgFlags::empty(),
        ) {
            tracing::debug!(%err, "duplicate not sent");
        }
    }

    fn handle(&mut self, packet: Packet) {
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        let Some(model) = self.models.get_mut(&packet.queue) else {
            self.verdict(packet.queue, packet.id, Verdict::Accept, None);
            return;
        };
        let Decision {
            drop,
            duplicates,
            corrupt,
            delay,
        } = model.decide();
        if drop {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.verdict(packet.queue, packet.id, Verdict::Drop, None);
            return;
        }
        let copies = vec![packet.payload.clone(); duplicates as usize];
        self.stats
            .duplicated
            .fetch_add(u64::from(duplicates), Ordering::Relaxed);
        let payload = corrupt.then(|| {
            self.stats.corrupted.fetch_add(1, Ordering::Relaxed);
            let mut bytes = packet.payload;
            model::corrupt(&mut bytes, &mut self.rng);
            bytes
        });
        if delay.is_zero() {
            self.verdict(packet.queue, packet.id, Verdict::Accept, payload.as_deref());
            for copy in &copies {
                self.send_copy(copy);
            }
            return;
        }
        self.stats.delayed.fetch_add(1, Ordering::Relaxed);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((Instant::now() + delay, seq)));
        self.held.insert(
            seq,
            Held {
                queue: packet.queue,
                id: packet.id,
                payload,
                copies,
            },
        );
        self.stats
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// Releases every packet whose deadline has passed (all of them with `all`).
    fn release(&mut self, all: bool) {
        let now = Instant::now();
        while let Some(Reverse((due, seq))) = self.heap.peek().copied() {
            if !all && due > now {
                break;
            }
            self.heap.pop();
            if let Some(held) = self.held.remove(&seq) {
                self.verdict(
                    held.queue,
                    held.id,
                    Verdict::Accept,
                    held.payload.as_deref(),
                );
                for copy in &held.copies {
                    self.send_copy(copy);
                }
            }
        }
        self.stats
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    fn next_timeout(&self) -> Duration {
        self.heap
            .peek()
            .map(|Reverse((due, _))| due.saturating_duration_since(Instant::now()))
            .unwrap_or(TICK)
            .min(TICK)
    }

    fn receive(&mut self) {
        // Drain what is there without blocking.
        for _ in 0..256 {
            let packets = match self.socket.recv_raw(MsgFlags::MSG_DONTWAIT) {
                Ok(datagram) => match split_messages(datagram) {
                    Ok(messages) => messages
                        .into_iter()
                        .filter(|(h, _)| h.message_type == PACKET_MESSAGE_TYPE)
                        .filter_map(|(_, body)| Packet::parse(body).ok())
                        .collect::<Vec<_>>(),
                    Err(_) => Vec::new(),
                },
                Err(_) => return, // EAGAIN, or ENOBUFS after an overrun: nothing more now
            };
            for packet in packets {
                self.handle(packet);
            }
        }
    }
}

fn open_raw_socket() -> Option<OwnedFd> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Raw,
    )
    .ok()?;
    setsockopt(&fd, sockopt::Mark, &OWN_PACKET_MARK).ok()?;
    Some(fd)
}

fn serve(
    pid: u32,
    inode: u64,
    queues: QueueSet,
    commands: mpsc::Receiver<Command>,
    ready: mpsc::Sender<Result<(), String>>,
    stats: Arc<Stats>,
) {
    let setup = || -> Result<Server, String> {
        netns::enter(pid, inode).map_err(|e| e.to_string())?;
        let socket = NetlinkSocket::open(Family::Netfilter).map_err(|e| e.to_string())?;
        socket.set_receive_buffer(8 << 20);
        let mut server = Server {
            socket,
            raw: open_raw_socket(),
            models: BTreeMap::new(),
            heap: BinaryHeap::new(),
            held: BTreeMap::new(),
            next_seq: 0,
            rng: Rng::seeded(seed()),
            stats,
        };
        server.configure(queues)?;
        Ok(server)
    };
    let mut server = match setup() {
        Ok(server) => {
            let _ = ready.send(Ok(()));
            server
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    loop {
        match commands.try_recv() {
            Ok(Command::Update(queues, ack)) => {
                let _ = ack.send(server.configure(queues));
            }
            Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let timeout = server.next_timeout();
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let readable = {
            let mut fds = [PollFd::new(server.socket.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0
        };
        if readable {
            server.receive();
        }
        server.release(false);
    }
    server.release(true);
    let queues: Vec<u16> = server.models.keys().copied().collect();
    for queue in queues {
        let _ = server.socket.request(nfqueue::unbind(queue));
    }
}
