//! Serving DNS over UDP and TCP on one loopback port, answering covered names and relaying the
//! rest to the upstream resolvers from sockets carrying the skip mark (so the redirect that
//! brought the query here lets the relayed query pass).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

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

/// The bound sockets, before serving: the port is known (and reported) first.
pub struct Listening {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Listening {
    /// Binds UDP and TCP on the same free port of `address`.
    pub async fn bind(address: Ipv4Addr) -> io::Result<Self> {
        let mut last = None;
        for _ in 0..16 {
            let udp = UdpSocket::bind(SocketAddrV4::new(address, 0)).await?;
            let port = udp.local_addr()?.port();
            match TcpListener::bind(SocketAddrV4::new(address, port)).await {
                Ok(tcp) => return Ok(Self { udp, tcp }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port")))
    }

    pub fn port(&self) -> io::Result<u16> {
        Ok(self.udp.local_addr()?.port())
    }

    /// Serves until the process ends.
    pub async fn serve(self, config: Config) -> io::Result<()> {
        let config = Arc::new(config);
        let udp = Arc::new(self.udp);
        let tcp = self.tcp;
        let tcp_config = Arc::clone(&config);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let config = Arc::clone(&tcp_config);
                tokio::spawn(async move {
                    let _ = serve_tcp(stream, &config).await;
                });
            }
        });
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (len, client) = udp.recv_from(&mut buf).await?;
            let packet = buf[..len].to_vec();
            let udp = Arc::clone(&udp);
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                if let Some(reply) = handle(&config, &packet, Transport::Udp).await {
                    let _ = udp.send_to(&reply, client).await;
                }
            });
        }
    }
}

#[derive(Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

async fn handle(config: &Config, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
    match decide(&config.spec, packet, &mut ThreadRandom) {
        Decision::Answer(bytes) => Some(bytes),
        Decision::Forward => {
            for upstream in &config.upstreams {
                let relayed = match transport {
                    Transport::Udp => relay_udp(*upstream, config.mark, packet).await,
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

async fn relay_udp(upstream: SocketAddr, mark: Option<u32>, packet: &[u8]) -> io::Result<Vec<u8>> {
    let any: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    set_mark(&socket, mark)?;
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let id = packet.get(..2);
    let exchange = async {
        loop {
            let len = socket.recv(&mut buf).await?;
            // Only the answer to this query (same id) counts.
            if buf.get(..2) == id {
                return Ok::<_, io::Error>(buf[..len].to_vec());
            }
        }
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
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

async fn serve_tcp(mut stream: TcpStream, config: &Config) -> io::Result<()> {
    while let Some(packet) = read_frame(&mut stream).await? {
        match handle(config, &packet, Transport::Tcp).await {
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
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, from) = socket.recv_from(&mut buf).await.unwrap();
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
        addr
    }

    async fn ask(server: SocketAddr, name: &str) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
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
        let listening = Listening::bind(Ipv4Addr::LOCALHOST).await.unwrap();
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
}
