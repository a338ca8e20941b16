//! A small HTTP/1.1 server run in a pod's network namespace (a thread of the test process that
//! joined it) and a client to match, for the HTTP chaos stories and benchmarks: what busybox
//! httpd cannot do (chunked answers, 100 MiB of known bytes, one kept-alive connection watched
//! from the server side) and fast enough that a proxy's cost shows.
//!
//! Paths: `/bytes/N` answers N bytes of [`pattern`] with a Content-Length; `/chunked/N` answers
//! N chunks (`chunk I\n`) with `Transfer-Encoding: chunked`; anything else answers `hello\n`.
//! Connections are kept alive unless the client says `Connection: close`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Byte `offset` of the known stream `/bytes/N` answers (not periodic over short spans, so a
/// dropped or repeated block changes the hash).
pub fn pattern(offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x ^ (x >> 29)) >> 24) as u8
}

/// The SHA-256 of the first `len` bytes of [`pattern`].
pub fn pattern_sha256(len: u64) -> String {
    let mut hash = Sha256::new();
    let mut block = vec![0u8; 64 * 1024];
    let mut offset = 0;
    while offset < len {
        let n = block.len().min((len - offset) as usize);
        fill(&mut block[..n], offset);
        hash.update(&block[..n]);
        offset += n as u64;
    }
    hex::encode(hash.finalize())
}

fn fill(block: &mut [u8], offset: u64) {
    for (i, b) in block.iter_mut().enumerate() {
        *b = pattern(offset + i as u64);
    }
}

/// Runs `work` on a new thread that first joins the network namespace of process `pid`.
pub fn in_netns<T: Send + 'static>(
    pid: u32,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<io::Result<T>> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::other)?;
        drop(ns);
        work()
    })
}

/// The server, listening on `0.0.0.0:port` in a pod's network namespace until dropped.
pub struct HttpServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl HttpServer {
    /// Starts it in the network namespace of process `pid`; returns once it listens.
    pub fn start_in_netns(pid: u32, port: u16) -> io::Result<HttpServer> {
        Self::start(Some(pid), port)
    }

    /// Starts it in the caller's network namespace (`pid` None) or that of `pid`; port 0 is
    /// any free port.
    fn start(pid: Option<u32>, port: u16) -> io::Result<HttpServer> {
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (count, halt) = (Arc::clone(&accepted), Arc::clone(&stop));
        let listen = move || -> io::Result<()> {
            let listener = match TcpListener::bind(("0.0.0.0", port)).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok((l.local_addr()?.port(), l))
            }) {
                Ok((port, listener)) => {
                    let _ = ready_tx.send(Ok(port));
                    listener
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || serve(conn));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        let thread = match pid {
            Some(pid) => in_netns(pid, listen),
            None => std::thread::spawn(listen),
        };
        match ready.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(port)) => Ok(HttpServer {
                port,
                accepted,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the server thread did not start")),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves one connection until the client closes it, says `Connection: close`, or idles 60 s.
fn serve(conn: TcpStream) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = io::BufWriter::with_capacity(64 * 1024, conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        if let Some(n) = path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {n}\r\n\r\n"
            )?;
            let mut block = vec![0u8; 64 * 1024];
            let mut offset = 0;
            while offset < n {
                let len = block.len().min((n - offset) as usize);
                fill(&mut block[..len], offset);
                out.write_all(&block[..len])?;
                offset += len as u64;
            }
        } else if let Some(n) = path
            .strip_prefix("/chunked/")
            .and_then(|n| n.parse::<u32>().ok())
        {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            )?;
            for i in 0..n {
                let chunk = format!("chunk {i}\n");
                write!(out, "{:x}\r\n{chunk}\r\n", chunk.len())?;
                // Each chunk on the wire by itself, as a streaming server sends them.
                out.flush()?;
            }
            write!(out, "0\r\n\r\n")?;
        } else {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nhello\n"
            )?;
        }
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// What the client saw of one answer; the body is hashed as it arrives, not kept, unless it
/// is small.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// Whether the body came chunked on the wire.
    pub chunked: bool,
    pub body_len: u64,
    pub body_sha256: String,
    /// The body when it is at most 64 KiB.
    pub small_body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One kept-alive client connection (opened in whatever network namespace the calling thread
/// is in).
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(to: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::with_capacity(256 * 1024, stream),
        })
    }

    /// A GET on this connection; the connection stays open for the next one.
    pub fn get(&mut self, path: &str) -> io::Result<Answer> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nhost: server\r\n\r\n"
        )?;
        self.read_answer()
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection was closed",
            ));
        }
        Ok(line.trim_end().to_owned())
    }

    fn read_answer(&mut self) -> io::Result<Answer> {
        let status_line = self.line()?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let chunked = find("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let mut body = Body::default();
        if chunked {
            loop {
                let size = self.line()?;
                let size = u64::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size {size:?}")))?;
                if size == 0 {
                    while !self.line()?.is_empty() {}
                    break;
                }
                body.take(&mut self.reader, size)?;
                self.line()?;
            }
        } else {
            let len = find("content-length")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| io::Error::other("neither chunked nor a content-length"))?;
            body.take(&mut self.reader, len)?;
        }
        Ok(Answer {
            status,
            headers,
            chunked,
            body_len: body.len,
            body_sha256: hex::encode(body.hash.finalize()),
            small_body: body.small,
        })
    }
}

#[derive(Default)]
struct Body {
    len: u64,
    hash: Sha256,
    small: Vec<u8>,
}

impl Body {
    fn take(&mut self, from: &mut impl Read, mut n: u64) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while n > 0 {
            let want = buf.len().min(n as usize);
            from.read_exact(&mut buf[..want])?;
            self.hash.update(&buf[..want]);
            if self.len + (want as u64) <= 64 * 1024 {
                self.small.extend_from_slice(&buf[..want]);
            }
            self.len += want as u64;
            n -= want as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server and the client against each other on loopback (the namespace of this test).
    #[test]
    fn known_bytes_chunks_and_keep_alive() {
        let server = HttpServer::start(None, 0).unwrap();
        let mut client =
            Client::connect(SocketAddr::from(([127, 0, 0, 1], server.port()))).unwrap();
        let big = client.get("/bytes/1000003").unwrap();
        assert_eq!(big.status, 200);
        assert!(!big.chunked);
        assert_eq!(big.body_len, 1_000_003);
        assert_eq!(big.body_sha256, pattern_sha256(1_000_003));
        assert_ne!(pattern_sha256(1_000_003), pattern_sha256(1_000_002));
        let chunks = client.get("/chunked/3").unwrap();
        assert!(chunks.chunked);
        assert_eq!(chunks.small_body, b"chunk 0\nchunk 1\nchunk 2\n");
        let hello = client.get("/other").unwrap();
        assert_eq!(hello.small_body, b"hello\n");
        assert_eq!(hello.header("content-length"), Some("6"));
        assert_eq!(server.accepted(), 1, "one kept-alive connection");
    }
}
