//! The Prometheus endpoint: a background process of its own (started by the launcher when
//! admin_toolkit.metrics_listen is set), connected once to the toolkit's database. It serves
//! GET /metrics over plain HTTP from that one connection: a scrape needs no client connection
//! slot (it answers with max_connections exhausted) and never waits on the database worker,
//! which does its own work in its own process. Clients are read side by side, each with one
//! deadline for its whole request head, so a slow client holds nobody up; the scrapes
//! themselves run one after the other.

use super::exposition;
use crate::settings;
use admin_toolkit_core::prometheus::{
    head_complete, parse_request, render, response, Family, Kind, Request, CONTENT_TYPE,
};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Longest a client may take to send its whole request head, however it trickles it.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Longest one write of the answer may block (an answer fits in the socket's buffer).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients whose request is still arriving; one more is turned away.
const MAX_PENDING: usize = 64;
/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Entry point; started (and restarted) by the launcher once the toolkit's database exists.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_metrics_endpoint_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(address) = settings::metrics_listen() else {
        return;
    };
    let database = settings::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    crate::environment::pin_process();
    // A scrape section never waits long for a lock nor runs long (each is its own transaction).
    for (name, value) in [(c"statement_timeout", c"2s"), (c"lock_timeout", c"200ms")] {
        // SAFETY: sets a setting of this process, outside any transaction.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            )
        };
    }
    let listener = match TcpListener::bind(&address).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            log!("admin_toolkit metrics endpoint: cannot listen on \"{address}\": {e}; retrying in a minute");
            // The launcher starts the endpoint again after its restart delay.
            BackgroundWorker::wait_latch(Some(Duration::from_secs(60)));
            return;
        }
    };
    log!("admin_toolkit metrics endpoint listening on http://{address}/metrics");
    let mut failing: Vec<String> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: between requests, as the postmaster asked.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) if pending.len() < MAX_PENDING => {
                    if stream.set_nonblocking(true).is_ok() {
                        pending.push(Pending {
                            stream,
                            head: Vec::new(),
                            since: Instant::now(),
                        });
                    }
                }
                Ok(_turned_away) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log!("admin_toolkit metrics endpoint: accept failed: {e}");
                    break;
                }
            }
        }
        // Each client's request, read as far as it has arrived; whole ones are answered,
        // those past their deadline dropped.
        let mut still = Vec::with_capacity(pending.len());
        for mut client in pending.drain(..) {
            match client.read_available() {
                Arrival::Complete => serve(client, &mut failing),
                Arrival::Partial if client.since.elapsed() < HEAD_DEADLINE => still.push(client),
                Arrival::Partial | Arrival::Gone => {}
            }
        }
        pending = still;
        // While a client is mid-request, look again soon; otherwise sleep until one comes.
        let wait = if pending.is_empty() { 1000 } else { 20 };
        if !wait_for_client(listener.as_raw_fd(), wait) {
            break;
        }
    }
    log!("admin_toolkit metrics endpoint stopped");
}

/// A client whose request head is arriving.
struct Pending {
    stream: TcpStream,
    head: Vec<u8>,
    since: Instant,
}

enum Arrival {
    Complete,
    Partial,
    Gone,
}

impl Pending {
    /// Reads what the client has sent so far, without waiting.
    fn read_available(&mut self) -> Arrival {
        let mut buffer = [0u8; 2048];
        loop {
            if head_complete(&self.head) || self.head.len() >= MAX_HEAD {
                return Arrival::Complete;
            }
            match self.stream.read(&mut buffer) {
                Ok(0) => {
                    return if self.head.is_empty() {
                        Arrival::Gone
                    } else {
                        Arrival::Complete
                    }
                }
                Ok(n) => self.head.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Arrival::Partial,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Arrival::Gone,
            }
        }
    }
}

/// Sleeps until a client connects, the latch is set (a signal) or `timeout_ms` pass; false
/// when the postmaster is gone.
fn wait_for_client(fd: i32, timeout_ms: i64) -> bool {
    let events = pg_sys::WL_LATCH_SET as i32
        | pg_sys::WL_SOCKET_READABLE as i32
        | pg_sys::WL_TIMEOUT as i32
        | pg_sys::WL_POSTMASTER_DEATH as i32;
    // SAFETY: MyLatch is this process's latch; fd is the listening socket, open while we wait.
    let fired = unsafe {
        let fired = pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            events,
            fd as pg_sys::pgsocket,
            timeout_ms as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        fired
    };
    fired & pg_sys::WL_POSTMASTER_DEATH as i32 == 0
}

/// Answers one client whose request has arrived; errors (a client gone, a timeout) only end
/// that client. `failing`: the sections that failed at the last scrape, so that a lasting
/// failure is logged once.
fn serve(client: Pending, failing: &mut Vec<String>) {
    let started = Instant::now();
    let Pending {
        mut stream, head, ..
    } = client;
    let setup = stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if setup.is_err() {
        return;
    }
    let answer = match parse_request(&head) {
        Request::Get { path, head } if path == "/metrics" => {
            response(200, CONTENT_TYPE, &metrics_text(started, failing), head)
        }
        Request::Get { path, head } if path == "/" => response(
            200,
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">admin_toolkit metrics</a></body></html>\n",
            head,
        ),
        Request::Get { head, .. } => response(404, "text/plain", "not found\n", head),
        Request::OtherMethod => response(405, "text/plain", "only GET\n", false),
        Request::Malformed => response(400, "text/plain", "bad request\n", false),
    };
    let _client_may_be_gone = stream.write_all(&answer).and_then(|_| stream.flush());
}

fn metrics_text(started: Instant, failing: &mut Vec<String>) -> String {
    let (mut families, failed) = exposition::scrape();
    for (section, error) in &failed {
        if !failing.contains(section) {
            log!("admin_toolkit metrics endpoint: section \"{section}\" failed: {error}");
        }
    }
    *failing = failed.into_iter().map(|(section, _)| section).collect();
    families.push(Family::single(
        "admin_toolkit_scrape_duration_seconds",
        Kind::Gauge,
        "How long this scrape took to read",
        started.elapsed().as_secs_f64(),
    ));
    render(&families)
}
