//! Serving DNS over UDP and TCP on one loopback port, answering covered names and relaying the
//! rest to the upstream resolvers from sockets carrying the skip mark (so the redirect that
//! brought the query here lets the relayed query pass).
//!
//! Relayed UDP leaves from one socket, one source port for the responder's whole life
//! ([`UdpRelay`]). Each relayed query leaves a conntrack entry in the pod (pod:port ->
//! resolver:53, not redirected) for the conntrack timeout; sent from a fresh ephemeral port per
//! query, thousands of those entries would hold the pod's ports, and an application query that
//! drew one of those ports would match the entry and skip the redirect (faultline-bench-http
//! hit it: a fresh client socket, right after 2,000 relayed queries, was never redirected).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::answer::{Decision, ThreadRandom, decide};
use crate::spec::ResponderSpec;

/// How long one upstream gets to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest DNS message over TCP (its length prefix is 16 bits).
const MAX_MESSAGE: usize = 65_535;

#[derive(Clone, Debug)]
pub struct Config {
    pub spec: ResponderSpec,
    /// Tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// SO_MARK of the relaying sockets; none in tests run without CAP_NET_ADMIN.
    pub mark: Option<u32>,
}

/// The bound sockets, before serving: the port is known (and reported) first. With IPv6, the
/// same port on `::1` too (where ip6tables' REDIRECT of a locally sent packet leads).
pub struct Listening {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl Listening {
    /// Binds UDP and TCP on the same free port of `address`, and of `::1` when `ipv6`.
    pub async fn bind(address: Ipv4Addr, ipv6: bool) -> io::Result<Self> {
        let mut last = None;
        for _ in 0..16 {
            let udp = UdpSocket::bind(SocketAddrV4::new(address, 0)).await?;
            let port = udp.local_addr()?.port();
            let bound = async {
                let tcp = TcpListener::bind(SocketAddrV4::new(address, port)).await?;
                let mut listening = Self {
                    udp: vec![udp],
                    tcp: vec![tcp],
                };
                if ipv6 {
                    let at = SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0);
                    listening.udp.push(UdpSocket::bind(at).await?);
                    listening.tcp.push(TcpListener::bind(at).await?);
                }
                Ok::<_, io::Error>(listening)
            };
            match bound.await {
                Ok(listening) => return Ok(listening),
                // ::1 missing altogether (IPv6 off in the namespace) is not a busy port.
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port")))
    }

    pub fn port(&self) -> io::Result<u16> {
        match self.udp.first() {
            Some(udp) => Ok(udp.local_addr()?.port()),
            None => Err(io::Error::other("not bound")),
        }
    }

    /// Serves until the process ends.
    pub async fn serve(self, config: Config) -> io::Result<()> {
        let ipv6 = config.upstreams.iter().any(SocketAddr::is_ipv6);
        let relay = UdpRelay::bind(config.mark, ipv6)?;
        let config = Arc::new(config);
        for tcp in self.tcp {
            let tcp_config = Arc::clone(&config);
            let tcp_relay = Arc::clone(&relay);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let config = Arc::clone(&tcp_config);
                    let relay = Arc::clone(&tcp_relay);
                    tokio::spawn(async move {
                        let _ = serve_tcp(stream, &config, &relay).await;
                    });
                }
            });
        }
        let mut served = tokio::task::JoinSet::new();
        for udp in self.udp {
            let config = Arc::clone(&config);
            let relay = Arc::clone(&relay);
            served.spawn(serve_udp(Arc::new(udp), config, relay));
        }
        match served.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(io::Error::other(e)),
            None => Ok(()),
        }
    }
}

async fn serve_udp(
    udp: Arc<UdpSocket>,
    config: Arc<Config>,
    relay: Arc<UdpRelay>,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (len, client) = udp.recv_from(&mut buf).await?;
        let packet = buf[..len].to_vec();
        let udp = Arc::clone(&udp);
        let config = Arc::clone(&config);
        let relay = Arc::clone(&relay);
        tokio::spawn(async move {
            if let Some(reply) = handle(&config, &relay, &packet, Transport::Udp).await {
                let _ = udp.send_to(&reply, client).await;
            }
        });
    }
}

/// The one socket relayed UDP queries leave from. Queries in flight are told apart by their
/// DNS id: each gets an id no other in flight has (the client's is put back in the answer),
/// and an answer counts only from the upstream its query went to.
pub struct UdpRelay {
    socket: UdpSocket,
    /// For IPv6 upstreams, when there are any.
    socket6: Option<UdpSocket>,
    in_flight: Mutex<InFlight>,
}

#[derive(Default)]
struct InFlight {
    next_id: u16,
    waiting: HashMap<u16, Waiter>,
}

struct Waiter {
    upstream: SocketAddr,
    client_id: [u8; 2],
    answer: oneshot::Sender<Vec<u8>>,
}

impl UdpRelay {
    /// Binds the relay socket (IPv4, any address, a port of the kernel's choosing) with `mark`,
    /// and one for IPv6 when `ipv6`, and starts reading answers.
    pub fn bind(mark: Option<u32>, ipv6: bool) -> io::Result<Arc<Self>> {
        let open = |socket: std::net::UdpSocket| -> io::Result<UdpSocket> {
            set_mark(&socket, mark)?;
            socket.set_nonblocking(true)?;
            UdpSocket::from_std(socket)
        };
        let socket = open(std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?)?;
        let socket6 = if ipv6 {
            Some(open(std::net::UdpSocket::bind((
                Ipv6Addr::UNSPECIFIED,
                0,
            ))?)?)
        } else {
            None
        };
        let relay = Arc::new(Self {
            socket,
            socket6,
            in_flight: Mutex::default(),
        });
        Self::read_answers(Arc::downgrade(&relay), false);
        if relay.socket6.is_some() {
            Self::read_answers(Arc::downgrade(&relay), true);
        }
        Ok(relay)
    }

    /// The reader holds the relay only weakly: it ends once the server is gone.
    fn read_answers(weak: std::sync::Weak<Self>, ipv6: bool) {
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_MESSAGE];
            while let Some(relay) = weak.upgrade() {
                let socket = match (ipv6, &relay.socket6) {
                    (true, Some(socket6)) => socket6,
                    (true, None) => return,
                    (false, _) => &relay.socket,
                };
                let Ok(Ok((len, from))) =
                    tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await
                else {
                    continue;
                };
                relay.deliver(&mut buf[..len], from);
            }
        });
    }

    /// The local address relayed queries leave from.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn deliver(&self, answer: &mut [u8], from: SocketAddr) {
        if answer.len() < 12 {
            return;
        }
        let id = u16::from_be_bytes([answer[0], answer[1]]);
        let Ok(mut in_flight) = self.in_flight.lock() else {
            return;
        };
        if in_flight
            .waiting
            .get(&id)
            .is_some_and(|w| w.upstream == from)
            && let Some(waiter) = in_flight.waiting.remove(&id)
        {
            answer[..2].copy_from_slice(&waiter.client_id);
            let _ = waiter.answer.send(answer.to_vec());
        }
    }

    /// Sends `query` to `upstream` and waits for its answer (the client's id restored).
    pub async fn exchange(&self, upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
        if query.len() < 12 {
            return Err(io::Error::other("not a DNS message"));
        }
        let (id, answer) = {
            let mut in_flight = self
                .in_flight
                .lock()
                .map_err(|_| io::Error::other("relay state poisoned"))?;
            if in_flight.waiting.len() > usize::from(u16::MAX) / 2 {
                return Err(io::Error::other("too many queries in flight"));
            }
            let mut id = in_flight.next_id;
            while in_flight.waiting.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            in_flight.next_id = id.wrapping_add(1);
            let (tx, rx) = oneshot::channel();
            in_flight.waiting.insert(
                id,
                Waiter {
                    upstream,
                    client_id: [query[0], query[1]],
                    answer: tx,
                },
            );
            (id, rx)
        };
        let mut relayed = query.to_vec();
        relayed[..2].copy_from_slice(&id.to_be_bytes());
        let outcome = async {
            let socket = match (upstream, &self.socket6) {
                (SocketAddr::V4(_), _) => &self.socket,
                (SocketAddr::V6(_), Some(socket6)) => socket6,
                (SocketAddr::V6(_), None) => {
                    return Err(io::Error::other("no IPv6 relay socket"));
                }
            };
            socket.send_to(&relayed, upstream).await?;
            answer
                .await
                .map_err(|_| io::Error::other("the relay stopped"))
        };
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, outcome)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))
            .and_then(|r| r);
        if result.is_err()
            && let Ok(mut in_flight) = self.in_flight.lock()
        {
            in_flight.waiting.remove(&id);
        }
        result
    }
}

#[derive(Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

async fn handle(
    config: &Config,
    relay: &UdpRelay,
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    match decide(&config.spec, packet, &mut ThreadRandom) {
        Decision::Answer(bytes) => Some(bytes),
        Decision::Forward => {
            for upstream in &config.upstreams {
                let relayed = match transport {
                    Transport::Udp => relay.exchange(*upstream, packet).await,
                    Transport::Tcp => relay_tcp(*upstream, config.mark, packet).await,
                };
                if let Ok(reply) = relayed {
                    return Some(reply);
                }
            }
            // No upstream answered: the client times out and retries, as it would have.
            None
        }
    }
}

fn set_mark(socket: &impl AsFd, mark: Option<u32>) -> io::Result<()> {
    if let Some(mark) = mark {
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Mark, &mark)
            .map_err(io::Error::from)?;
    }
    Ok(())
}

async fn relay_tcp(upstream: SocketAddr, mark: Option<u32>, packet: &[u8]) -> io::Result<Vec<u8>> {
    let exchange = async {
        let socket = match upstream {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        set_mark(&socket, mark)?;
        let mut stream = socket.connect(upstream).await?;
        write_frame(&mut stream, packet).await?;
        read_frame(&mut stream)
            .await?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

async fn serve_tcp(mut stream: TcpStream, config: &Config, relay: &UdpRelay) -> io::Result<()> {
    while let Some(packet) = read_frame(&mut stream).await? {
        match handle(config, relay, &packet, Transport::Tcp).await {
            Some(reply) => write_frame(&mut stream, &reply).await?,
            None => return Ok(()),
        }
    }
    Ok(())
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut packet).await?;
    Ok(Some(packet))
}

async fn write_frame(stream: &mut TcpStream, packet: &[u8]) -> io::Result<()> {
    let len = u16::try_from(packet.len()).map_err(|_| io::Error::other("message too long"))?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    /// A one-record upstream on loopback: answers `known.test.` with 192.0.2.1, NXDOMAIN else.
    async fn upstream() -> SocketAddr {
        recording_upstream().await.0
    }

    /// The same, keeping where each query came from.
    async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
        recording_upstream_at("127.0.0.1:0").await
    }

    async fn recording_upstream_at(at: &str) -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
        let socket = UdpSocket::bind(at).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let sources = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sources);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, from) = socket.recv_from(&mut buf).await.unwrap();
                seen.lock().unwrap().push(from);
                let query = Message::from_vec(&buf[..len]).unwrap();
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                let q = query.queries[0].clone();
                if q.name().to_ascii() == "known.test." {
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
                    ));
                } else {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                }
                reply.add_query(q);
                socket
                    .send_to(&reply.to_vec().unwrap(), from)
                    .await
                    .unwrap();
            }
        });
        (addr, sources)
    }

    async fn ask(server: SocketAddr, name: &str) -> Message {
        let local = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let socket = UdpSocket::bind(local).await.unwrap();
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        socket.send_to(&m.to_vec().unwrap(), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let reply = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(reply.metadata.id, m.metadata.id);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        reply
    }

    #[tokio::test]
    async fn covered_names_fail_and_the_rest_is_relayed_over_udp_and_tcp() {
        let upstream = upstream().await;
        let listening = Listening::bind(Ipv4Addr::LOCALHOST, false).await.unwrap();
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, listening.port().unwrap()));
        let config = Config {
            spec: ResponderSpec::parse("error", &["*.example.com"]).unwrap(),
            upstreams: vec![upstream],
            mark: None,
        };
        tokio::spawn(listening.serve(config));
        let failed = ask(server, "db.example.com.").await;
        assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
        let relayed = ask(server, "known.test.").await;
        assert_eq!(relayed.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            relayed.answers[0].data,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            ask(server, "other.test.").await.metadata.response_code,
            ResponseCode::NXDomain
        );
        // TCP: a covered name is answered by us (the upstream above speaks only UDP).
        let mut stream = TcpStream::connect(server).await.unwrap();
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_str("x.example.com.").unwrap(),
            RecordType::A,
        ));
        write_frame(&mut stream, &m.to_vec().unwrap())
            .await
            .unwrap();
        let reply = read_frame(&mut stream).await.unwrap().unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }

    /// IPv6 nameservers: the responder also listens on the same port of ::1 (where ip6tables'
    /// REDIRECT leads) and relays to an IPv6 upstream from its own IPv6 socket, over UDP and TCP,
    /// IPv4 upstreams beside it still reached.
    #[tokio::test]
    async fn ipv6_nameservers_are_served_on_loopback_and_relayed_to() {
        let (upstream6, seen6) = recording_upstream_at("[::1]:0").await;
        let listening = Listening::bind(Ipv4Addr::LOCALHOST, true).await.unwrap();
        let port = listening.port().unwrap();
        let config = Config {
            spec: ResponderSpec::parse("error", &["*.example.com"]).unwrap(),
            upstreams: vec![upstream6],
            mark: None,
        };
        tokio::spawn(listening.serve(config));
        for server in [
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ] {
            assert_eq!(
                ask(server, "db.example.com.").await.metadata.response_code,
                ResponseCode::ServFail
            );
            let relayed = ask(server, "known.test.").await;
            assert_eq!(
                relayed.answers[0].data,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))
            );
        }
        assert!(seen6.lock().unwrap().iter().all(SocketAddr::is_ipv6));
        assert_eq!(seen6.lock().unwrap().len(), 2);
        // TCP on ::1, answered by us.
        let mut stream = TcpStream::connect((Ipv6Addr::LOCALHOST, port))
            .await
            .unwrap();
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_str("x.example.com.").unwrap(),
            RecordType::A,
        ));
        write_frame(&mut stream, &m.to_vec().unwrap())
            .await
            .unwrap();
        let reply = Message::from_vec(&read_frame(&mut stream).await.unwrap().unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }

    /// Relayed UDP queries, many in flight at once, all leave from the relay's one port (so
    /// they pin one conntrack tuple in the pod, not one per query), each client gets the
    /// answer to its own query under its own id, and an answer from elsewhere is ignored.
    #[tokio::test]
    async fn relayed_udp_leaves_from_one_port_and_answers_find_their_clients() {
        let (upstream, sources) = recording_upstream().await;
        let listening = Listening::bind(Ipv4Addr::LOCALHOST, false).await.unwrap();
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, listening.port().unwrap()));
        let config = Config {
            spec: ResponderSpec::parse("error", &["*.example.com"]).unwrap(),
            upstreams: vec![upstream],
            mark: None,
        };
        tokio::spawn(listening.serve(config));
        let asked: Vec<_> = (0..64)
            .map(|i| {
                tokio::spawn(async move {
                    let name = if i % 2 == 0 {
                        "known.test."
                    } else {
                        "other.test."
                    };
                    (i, ask(server, name).await)
                })
            })
            .collect();
        for handle in asked {
            let (i, reply) = handle.await.unwrap();
            let want = if i % 2 == 0 {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            assert_eq!(reply.metadata.response_code, want, "query {i}");
        }
        let sources = sources.lock().unwrap().clone();
        assert_eq!(sources.len(), 64);
        assert!(
            sources.iter().all(|s| *s == sources[0]),
            "relayed from several ports: {sources:?}"
        );

        // An answer with a waiting id from another address is not taken.
        let relay = UdpRelay::bind(None, false).unwrap();
        let (elsewhere, _) = recording_upstream().await;
        let impostor = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_port = relay.local_addr().unwrap().port();
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_str("known.test.").unwrap(),
            RecordType::A,
        ));
        let query = m.to_vec().unwrap();
        let waiting = {
            let relay = Arc::clone(&relay);
            let query = query.clone();
            tokio::spawn(async move { relay.exchange(elsewhere, &query).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut forged = Message::response(0, m.metadata.op_code);
        forged.metadata.response_code = ResponseCode::Refused;
        impostor
            .send_to(
                &forged.to_vec().unwrap(),
                SocketAddr::from((Ipv4Addr::LOCALHOST, relay_port)),
            )
            .await
            .unwrap();
        let answer = Message::from_vec(&waiting.await.unwrap().unwrap()).unwrap();
        assert_eq!(answer.metadata.id, m.metadata.id);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    }
}
