//! Where a datasource may connect: resolve the host, refuse addresses in internal ranges the
//! operator has not opened, and hand the driver the checked address (so a DNS answer that changes
//! between the check and the connect — rebinding — cannot redirect the connection).

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::ExecError;

/// Whether an address is in a range that needs the operator's explicit permission: loopback,
/// private, link-local (cloud metadata lives at 169.254.169.254), unique-local, unspecified,
/// multicast, broadcast, documentation and shared (CGNAT) ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 can reach IPv4 internals
        }
    }
}

/// May a connection go to `ip`? Public addresses always; internal ones only inside `allow`.
pub fn address_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    !is_internal(ip) || allow.iter().any(|n| n.contains(&ip))
}

/// Resolves `host:port` and returns the first address that is allowed, or `NotAllowed` naming the
/// host when every address is refused (the refused address is not echoed back to the client).
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow: &[IpNet],
) -> Result<SocketAddr, ExecError> {
    if host.is_empty() || host.starts_with('/') || host.contains(['@', '/', '\\', ',']) {
        return Err(ExecError::NotAllowed(format!(
            "host {host:?} is not a plain host name or address"
        )));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| ExecError::Unavailable(format!("host {host:?} could not be resolved")))?
        .collect();
    if addrs.is_empty() {
        return Err(ExecError::Unavailable(format!(
            "host {host:?} could not be resolved"
        )));
    }
    addrs
        .into_iter()
        .find(|a| address_allowed(a.ip(), allow))
        .ok_or_else(|| {
            ExecError::NotAllowed(format!(
                "host {host:?} resolves to a network the operator has not allowed \
                 (see --allow-networks)"
            ))
        })
}

/// A SQLite datasource's file must lie under one of the operator's roots (after resolving `..`
/// and symlinks), so a datasource cannot open the gateway's own store or any other file.
pub fn sqlite_path_allowed(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, ExecError> {
    let refused = || {
        ExecError::NotAllowed(format!(
            "SQLite path {:?} is not under a directory the operator allowed (sqlite_roots)",
            path.display().to_string()
        ))
    };
    let real = path.canonicalize().map_err(|_| {
        ExecError::Unavailable(format!(
            "SQLite file {:?} does not exist or cannot be read",
            path.display().to_string()
        ))
    })?;
    for root in roots {
        if let Ok(root) = root.canonicalize()
            && real.starts_with(&root)
        {
            return Ok(real);
        }
    }
    Err(refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused_without_an_allow_list() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!address_allowed(ip(a), &[]), "{a} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(address_allowed(ip(a), &[]), "{a} must be allowed");
        }
    }

    #[test]
    fn the_allow_list_opens_exactly_its_ranges() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(address_allowed(ip("127.0.0.1"), &allow));
        assert!(address_allowed(ip("::ffff:127.0.0.1"), &allow));
        assert!(!address_allowed(ip("169.254.169.254"), &allow));
        assert!(!address_allowed(ip("10.0.0.1"), &allow));
    }

    #[tokio::test]
    async fn resolution_checks_the_resolved_address_not_the_name() {
        let err = resolve_checked("localhost", 5432, &[]).await.unwrap_err();
        assert!(matches!(err, ExecError::NotAllowed(_)), "{err:?}");
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let addr = resolve_checked("localhost", 5432, &allow).await.unwrap();
        assert!(addr.ip().is_loopback());
    }

    #[tokio::test]
    async fn socket_paths_and_host_lists_are_refused() {
        for h in ["/var/run/postgresql", "a,b", "user@host", ""] {
            let err = resolve_checked(h, 5432, &[]).await.unwrap_err();
            assert!(matches!(err, ExecError::NotAllowed(_)), "{h}: {err:?}");
        }
    }

    #[test]
    fn sqlite_paths_outside_the_roots_are_refused_even_through_dot_dot() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("a.sqlite");
        std::fs::write(&inside, b"").unwrap();
        let other = tempfile::tempdir().unwrap();
        let outside = other.path().join("b.sqlite");
        std::fs::write(&outside, b"").unwrap();
        let roots = vec![root.path().to_path_buf()];
        assert!(sqlite_path_allowed(&inside, &roots).is_ok());
        assert!(matches!(
            sqlite_path_allowed(&outside, &roots),
            Err(ExecError::NotAllowed(_))
        ));
        let sneaky = root.path().join("..").join(
            other
                .path()
                .file_name()
                .map(|n| n.to_owned())
                .unwrap_or_default(),
        );
        assert!(sqlite_path_allowed(&sneaky.join("b.sqlite"), &roots).is_err());
    }
}
