//! The Prometheus endpoint: a background process of its own (started by the launcher when
//! admin_toolkit.metrics_listen is set), connected once to the toolkit's database. It serves
//! GET /metrics over plain HTTP, one request at a time, from that one connection: a scrape needs
//! no client connection slot (it answers with max_connections exhausted) and never waits on the
//! database worker, which does its own work in its own process.

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

/// Longest a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
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
                Ok((stream, _)) => serve(stream, &mut failing),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log!("admin_toolkit metrics endpoint: accept failed: {e}");
                    break;
                }
            }
        }
        if !wait_for_client(listener.as_raw_fd()) {
            break;
        }
    }
    log!("admin_toolkit metrics endpoint stopped");
}

/// Sleeps until a client connects, the latch is set (a signal) or a second passes; false when
/// the postmaster is gone.
fn wait_for_client(fd: i32) -> bool {
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
            1000,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        fired
    };
    fired & pg_sys::WL_POSTMASTER_DEATH as i32 == 0
}

/// Answers one client; errors (a client gone, a timeout) only end that client. `failing`: the
/// sections that failed at the last scrape, so that a lasting failure is logged once.
fn serve(mut stream: TcpStream, failing: &mut Vec<String>) {
    let started = Instant::now();
    let setup = stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_read_timeout(Some(CLIENT_TIMEOUT)))
        .and_then(|_| stream.set_write_timeout(Some(CLIENT_TIMEOUT)));
    if setup.is_err() {
        return;
    }
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head_complete(&head) && head.len() < MAX_HEAD {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
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
