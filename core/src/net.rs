//! Name resolution with a deadline, and the addresses a request made on a table's say-so must
//! never reach. The system resolver has no timeout of its own: a lookup runs on a thread of its
//! own and is given up (the thread left to finish) when the deadline passes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

/// Whether `ip` is link-local or a cloud metadata service: where a notification target written
/// into a table could read the host's cloud credentials from.
pub fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_link_local_or_metadata(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_is_link_local_or_metadata(v4),
            None => {
                (v6.segments()[0] & 0xffc0) == 0xfe80
                    // AWS's instance metadata service over IPv6.
                    || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

fn v4_is_link_local_or_metadata(v4: Ipv4Addr) -> bool {
    // 169.254.0.0/16 holds AWS's, GCP's and Azure's metadata services; 100.100.100.200 is
    // Alibaba Cloud's.
    v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200)
}

/// Which addresses a connection may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Anywhere,
    /// Not link-local, not a metadata service.
    NotLinkLocal,
}

/// Resolves `host:port` within `deadline`, keeping only the addresses `reach` allows. An
/// answer with none left is an error naming the host, never the whole URL.
pub fn resolve(netloc: &str, deadline: Duration, reach: Reach) -> io::Result<Vec<SocketAddr>> {
    let Some(port) = loopback_name_port(netloc) else {
        return allowed(netloc, system_resolve(netloc, deadline)?, reach);
    };
    // A name under localhost: what /etc/hosts says of it (a container's name, say), else the
    // loopback interface. Not worth a long wait for DNS, which should not answer for it.
    match system_resolve(netloc, deadline.min(Duration::from_secs(2))) {
        Ok(found) if !found.is_empty() => allowed(netloc, found, reach),
        _ => Ok(vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ]),
    }
}

/// The system resolver's answer for `netloc`, given up after `deadline`.
fn system_resolve(netloc: &str, deadline: Duration) -> io::Result<Vec<SocketAddr>> {
    let (sender, receiver) = mpsc::channel();
    let name = netloc.to_string();
    crate::threads::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let answer = name.to_socket_addrs().map(Iterator::collect::<Vec<_>>);
                let _caller_gave_up = sender.send(answer);
            })
    })?;
    match receiver.recv_timeout(deadline) {
        Ok(answer) => answer,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "resolving \"{}\" took longer than {} s",
                host_of(netloc),
                deadline.as_secs_f64()
            ),
        )),
    }
}

/// The addresses of `found` that `reach` allows; none left is an error naming the host.
fn allowed(netloc: &str, found: Vec<SocketAddr>, reach: Reach) -> io::Result<Vec<SocketAddr>> {
    let allowed: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| reach == Reach::Anywhere || !is_link_local_or_metadata(a.ip()))
        .collect();
    if allowed.is_empty() && !found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "\"{}\" is a link-local or cloud metadata address, refused (admin_toolkit.notification_allow_link_local allows it)",
                host_of(netloc)
            ),
        ));
    }
    Ok(allowed)
}

/// The port of `name.localhost:port`: names under `localhost.` are the loopback interface
/// (RFC 6761 6.3) unless the system says otherwise (glibc's `files dns` knows only `localhost`
/// itself). What a virtual-host-style S3 endpoint on this machine needs: `bucket.localhost`.
fn loopback_name_port(netloc: &str) -> Option<u16> {
    let (host, port) = netloc.rsplit_once(':')?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let under_localhost = host == "localhost" || host.ends_with(".localhost");
    under_localhost.then(|| port.parse().ok()).flatten()
}

fn host_of(netloc: &str) -> &str {
    netloc.rsplit_once(':').map_or(netloc, |(host, _port)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_localhost_are_the_loopback_interface() {
        for name in [
            "bucket.localhost:9000",
            "localhost:9000",
            "A.B.LocalHost.:9000",
        ] {
            let found = resolve(name, Duration::from_secs(1), Reach::NotLinkLocal).unwrap();
            assert!(!found.is_empty(), "{name}");
            assert!(
                found
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 9000),
                "{name}: {found:?}"
            );
        }
        assert_eq!(loopback_name_port("localhost.example.com:80"), None);
        assert_eq!(loopback_name_port("notlocalhost:80"), None);
    }

    #[test]
    fn metadata_and_link_local_addresses_are_recognised() {
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_link_local_or_metadata(bad.parse().unwrap()), "{bad}");
        }
        for good in ["127.0.0.1", "10.0.0.1", "8.8.8.8", "::1", "2001:db8::1"] {
            assert!(!is_link_local_or_metadata(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn resolution_filters_what_is_refused() {
        let d = Duration::from_secs(5);
        let refused = resolve("169.254.169.254:80", d, Reach::NotLinkLocal).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert!(refused.to_string().contains("\"169.254.169.254\""));
        assert_eq!(
            resolve("169.254.169.254:80", d, Reach::Anywhere)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            resolve("127.0.0.1:25", d, Reach::NotLinkLocal).unwrap(),
            vec!["127.0.0.1:25".parse().unwrap()]
        );
    }
}
