//! Real receivers on 127.0.0.1 for notification tests: an HTTP server that records every request
//! and answers with a chosen status (or never answers), and an SMTP server (aiosmtpd, from the
//! test virtualenv) that stores mail in a maildir.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// An HTTP receiver on its own port; stopped when dropped.
pub struct HttpReceiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// A port of 127.0.0.1 bound but not listening: a connection to it is refused, as to a
/// receiver that is down, and no other process can take the port meanwhile. [`listen`] turns
/// it into the receiver's listener, on the same port.
///
/// [`listen`]: ReservedPort::listen
pub struct ReservedPort {
    socket: std::os::fd::OwnedFd,
    pub port: u16,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor this function owns; every result checked.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(fd, (&raw const addr).cast(), len);
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            let mut got_len = len;
            let named = libc::getsockname(fd, (&raw mut addr).cast(), &mut got_len);
            assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
            ReservedPort {
                socket,
                port: u16::from_be(addr.sin_port),
            }
        }
    }

    /// Starts listening on the reserved port.
    pub fn listen(self) -> TcpListener {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is a bound TCP socket this value owns.
        let listening = unsafe { libc::listen(self.socket.as_raw_fd(), 128) };
        assert_eq!(listening, 0, "listen: {}", std::io::Error::last_os_error());
        TcpListener::from(self.socket)
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        ReservedPort::new()
    }
}

impl HttpReceiver {
    /// Listens on `port` (0: any free port).
    pub fn start(port: u16) -> HttpReceiver {
        HttpReceiver::start_on(
            TcpListener::bind(("127.0.0.1", port)).expect("bind the HTTP receiver"),
        )
    }

    /// Serves on a listener of the caller's (a [`ReservedPort`] come up).
    pub fn start_on(listener: TcpListener) -> HttpReceiver {
        listener.set_nonblocking(true).unwrap();
        let receiver = HttpReceiver {
            port: listener.local_addr().unwrap().port(),
            requests: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            silent: Arc::default(),
            stop: Arc::default(),
        };
        let (requests, status, silent, stop) = (
            receiver.requests.clone(),
            receiver.status.clone(),
            receiver.silent.clone(),
            receiver.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if silent.load(Ordering::Relaxed) {
                            held.push(stream); // accepted, never answered
                        } else if let Some(r) = serve(stream, status.load(Ordering::Relaxed)) {
                            requests.lock().unwrap().push(r);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        receiver
    }

    /// Accepts connections and never answers (a hung receiver).
    pub fn black_hole() -> HttpReceiver {
        let r = HttpReceiver::start(0);
        r.silent.store(true, Ordering::Relaxed);
        r
    }

    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, status: u16) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _client_may_be_gone = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    Some(Received {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}

/// aiosmtpd storing every message in a maildir; stopped when dropped.
pub struct SmtpSink {
    pub port: u16,
    maildir: PathBuf,
    child: Child,
}

impl SmtpSink {
    pub fn start(maildir: PathBuf) -> SmtpSink {
        // aiosmtpd cannot report a port it picked: a free one is chosen, and the start-up fails
        // at once, with what aiosmtpd said, if it exits (the port taken meanwhile) instead.
        let port = crate::free_port();
        // The virtualenv scripts/prereqs.sh makes (moto's, see s3.rs).
        let mut child = Command::new("/opt/admin_toolkit-test/venv/bin/python")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("aiosmtpd (scripts/prereqs.sh installs it into the test virtualenv)");
        let said = crate::child_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let said: Vec<String> = said.try_iter().collect();
                panic!(
                    "aiosmtpd exited ({status}) before listening:\n{}",
                    said.join("\n")
                );
            }
            // Ours once it greets as an SMTP server does, while our child still runs.
            let greeting = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).ok()?;
                Some(line)
            });
            if greeting.is_some_and(|g| g.starts_with("220")) {
                break;
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        SmtpSink {
            port,
            maildir,
            child,
        }
    }

    /// Every message received, as text.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in entries.flatten() {
                    if let Ok(text) = std::fs::read_to_string(e.path()) {
                        out.push(text);
                    }
                }
            }
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// An SMTP server that offers AUTH but no STARTTLS, as an on-path attacker stripping STARTTLS
/// would look, and records every line a client sends it.
pub struct PlainAuthSmtp {
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PlainAuthSmtp {
    pub fn start() -> PlainAuthSmtp {
        let (port, lines) = serve_each_connection(converse);
        PlainAuthSmtp { port, lines }
    }

    /// Every line received, on every connection.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn converse(stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut out = stream;
    let mut in_data = false;
    if write!(out, "220 localhost ESMTP\r\n").is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        seen.lock().unwrap().push(line.trim_end().to_string());
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let answer = if in_data {
            if line.trim_end() != "." {
                continue;
            }
            in_data = false;
            "250 queued\r\n"
        } else {
            match verb.as_str() {
                "EHLO" => "250-localhost\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
                "AUTH" => "235 accepted\r\n",
                "DATA" => {
                    in_data = true;
                    "354 go on\r\n"
                }
                "QUIT" => {
                    let _ = write!(out, "221 bye\r\n");
                    return;
                }
                _ => "250 ok\r\n",
            }
        };
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// An HTTP server on 127.0.0.1 that answers every request one byte a second, forever: a
/// slow peer that per-read timeouts never catch. Records each request line.
pub struct TricklingServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TricklingServer {
    pub fn start() -> TricklingServer {
        let (port, requests) = serve_each_connection(trickle);
        TricklingServer { port, requests }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines received so far ("GET /bucket/key?… HTTP/1.1").
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn trickle(stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(read) = stream.try_clone() else { return };
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).is_err() {
        return;
    }
    seen.lock().unwrap().push(line.trim_end().to_string());
    let mut out = stream;
    let answer = b"HTTP/1.1 200 OK\r\n"
        .iter()
        .chain(std::iter::repeat(&b'x'));
    for byte in answer {
        if out.write_all(&[*byte]).is_err() {
            return; // the client gave up
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Listens on a free port of 127.0.0.1 and runs `serve` for each connection on a thread of its
/// own, with the lines it records; gives the port and those lines.
fn serve_each_connection(
    serve: fn(TcpStream, &Mutex<Vec<String>>),
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind a test server");
    let port = listener.local_addr().unwrap().port();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = lines.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || serve(stream, &seen));
        }
    });
    (port, lines)
}
