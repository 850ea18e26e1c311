//! HTTPS on the listener: the certificate and key from `tls.cert_file` / `tls.key_file`, served
//! with rustls (HTTP/2 and HTTP/1.1 offered through ALPN). The rustls `ServerConfig` holding the
//! certificate sits behind an `ArcSwap` that every new handshake reads, so
//! [`TlsListener::reload`] (SIGHUP) swaps it without touching open connections; a reload that
//! fails keeps the certificate being served. A reload builds a whole new `ServerConfig`, not only
//! a new certificate: its session cache starts empty, so a client cannot resume a session made
//! under the old certificate (which would keep that certificate's identity) and gets a full
//! handshake with the new one.
//!
//! Errors name the configuration field and the file, never the key's contents.

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

use crate::config::Tls;

/// A certificate or key file larger than this is refused (a chain is a few KiB; this keeps a
/// path such as `/dev/zero` from filling memory).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A TLS file that cannot be used: which field, which file, why (never the file's contents).
#[derive(Debug, thiserror::Error)]
#[error("{field} ({}): {reason}", path.display())]
pub struct TlsFileError {
    pub field: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

/// What the logs say about a certificate: the first (end-entity) one of the chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CertInfo {
    /// `CN=…, O=…` (the attributes with a short name; empty when the subject is empty).
    pub subject: String,
    /// The DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// The serial number, in lowercase hex.
    pub serial: String,
    pub not_after: Option<DateTime<Utc>>,
}

/// What every new handshake uses; swapped whole on reload.
struct Current {
    server: Arc<ServerConfig>,
    info: CertInfo,
}

/// The one certificate of a `ServerConfig`, for any server name the client asks for.
struct OneCert(Arc<CertifiedKey>);

impl std::fmt::Debug for OneCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of any debug output.
        f.debug_struct("OneCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The TLS side of the listener: accepts handshakes (bounded in time) with the current
/// certificate, and reloads it from the configured files.
pub struct TlsListener {
    current: ArcSwap<Current>,
    provider: Arc<CryptoProvider>,
    cert_file: PathBuf,
    key_file: PathBuf,
    handshake_timeout: Duration,
}

impl TlsListener {
    /// `None` when the listener is plain HTTP (neither file set; the configuration's validation
    /// refuses one without the other). Reads and checks both files now, so a bad file fails
    /// startup.
    pub fn from_config(config: &Tls) -> Result<Option<TlsListener>, TlsFileError> {
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        // Chosen explicitly rather than through the process default, so another crate enabling
        // a second rustls provider cannot make the choice ambiguous.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = load(cert_file, key_file, &provider)?;
        Ok(Some(TlsListener {
            current: ArcSwap::from_pointee(current),
            provider,
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
        }))
    }

    /// Reads both files again; on success new handshakes get the new certificate (open
    /// connections keep theirs), on failure nothing changes.
    pub fn reload(&self) -> Result<CertInfo, TlsFileError> {
        let current = load(&self.cert_file, &self.key_file, &self.provider)?;
        let info = current.info.clone();
        self.current.store(Arc::new(current));
        Ok(info)
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> CertInfo {
        self.current.load().info.clone()
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The TLS handshake on an accepted connection, given at most `tls.handshake_timeout_ms`.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load().server.clone());
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the TLS handshake did not finish in time",
            )),
        }
    }
}

fn read_capped(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let err = |reason: String| TlsFileError {
        field,
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot read the file: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// Reads and checks the chain and the key (both parse, the key is one rustls can sign with, and
/// it belongs to the first certificate), and makes the `ServerConfig` that serves them.
fn load(
    cert_file: &Path,
    key_file: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Current, TlsFileError> {
    let cert_err = |reason: String| TlsFileError {
        field: "tls.cert_file",
        path: cert_file.to_owned(),
        reason,
    };
    let key_err = |reason: String| TlsFileError {
        field: "tls.key_file",
        path: key_file.to_owned(),
        reason,
    };
    let cert_pem = read_capped("tls.cert_file", cert_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err(
            "no certificate (-----BEGIN CERTIFICATE-----) in the file".to_owned(),
        ));
    }
    let key_pem = read_capped("tls.key_file", key_file)?;
    // The parser's own messages may quote a line of the file: they are not passed on.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            key_err("no private key (PKCS#8, PKCS#1 or SEC1 PEM section) in the file".to_owned())
        }
        _ => key_err("not a valid PEM file".to_owned()),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| key_err("the private key is not one rustls can use".to_owned()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(key_err(format!(
                "the private key does not belong to the first certificate of tls.cert_file ({})",
                cert_file.display()
            )));
        }
        Err(e) => return Err(cert_err(format!("the first certificate is invalid: {e}"))),
    }
    let info = certified
        .end_entity_cert()
        .ok()
        .and_then(|c| cert_info(c.as_ref()))
        .unwrap_or_default();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(format!("no usable TLS protocol version: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Current {
        server: Arc::new(server),
        info,
    })
}

/// The end-entity certificate's serial, validity end, subject and DNS names, for the logs;
/// `None` when the DER does not parse as a certificate.
pub fn cert_info(cert_der: &[u8]) -> Option<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let serial = cert.raw_serial();
    Some(CertInfo {
        subject: cert.subject().to_string(),
        dns_names,
        serial: hex::encode(serial.strip_prefix(&[0]).unwrap_or(serial)),
        not_after: DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        cert_pem: String,
        key_pem: String,
    }

    fn self_signed(cn: &str, dns: &[&str], serial: &[u8]) -> Pair {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Sluice Test");
        params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn config(dir: &Path, pair: &Pair) -> Tls {
        let cert_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&cert_file, &pair.cert_pem).unwrap();
        std::fs::write(&key_file, &pair.key_pem).unwrap();
        Tls {
            cert_file: Some(cert_file),
            key_file: Some(key_file),
            ..Tls::default()
        }
    }

    fn load_err(config: &Tls) -> TlsFileError {
        match TlsListener::from_config(config) {
            Err(e) => e,
            Ok(_) => panic!("the files were accepted"),
        }
    }

    #[test]
    fn no_files_is_plain_http() {
        assert!(TlsListener::from_config(&Tls::default()).unwrap().is_none());
    }

    #[test]
    fn the_certificate_is_described_for_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let pair = self_signed(
            "gw.example",
            &["gw.example", "localhost"],
            &[0xab, 0xcd, 0xef],
        );
        let tls = TlsListener::from_config(&config(dir.path(), &pair))
            .unwrap()
            .unwrap();
        let info = tls.current();
        assert_eq!(info.subject, "CN=gw.example, O=Sluice Test");
        assert_eq!(info.dns_names, ["gw.example", "localhost"]);
        assert_eq!(info.serial, "abcdef");
        assert_eq!(
            info.not_after.map(|t| t.to_rfc3339()).as_deref(),
            Some("2031-07-09T00:00:00+00:00")
        );
        assert_eq!(tls.handshake_timeout(), Duration::from_millis(10_000));
    }

    #[test]
    fn bad_files_are_refused_naming_the_field_and_never_quoting_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pair = self_signed("a", &["localhost"], &[1]);
        let good = config(dir.path(), &pair);
        let key_body = pair.key_pem.lines().nth(1).unwrap().to_owned();

        let mut missing = good.clone();
        missing.cert_file = Some(dir.path().join("nope.pem"));
        let e = load_err(&missing).to_string();
        assert!(
            e.starts_with("tls.cert_file (") && e.contains("nope.pem"),
            "{e}"
        );

        // The key given as the certificate and the certificate as the key.
        let swapped = Tls {
            cert_file: good.key_file.clone(),
            key_file: good.cert_file.clone(),
            ..good.clone()
        };
        let e = load_err(&swapped).to_string();
        assert!(
            e.starts_with("tls.cert_file") && e.contains("no certificate"),
            "{e}"
        );
        assert!(!e.contains(&key_body), "{e}");

        let cert_as_key = Tls {
            key_file: good.cert_file.clone(),
            ..good.clone()
        };
        let e = load_err(&cert_as_key).to_string();
        assert!(
            e.starts_with("tls.key_file") && e.contains("no private key"),
            "{e}"
        );

        let garbled = dir.path().join("garbled.pem");
        let mut text = pair.key_pem.clone();
        text.insert_str(40, "!!");
        std::fs::write(&garbled, text).unwrap();
        let e = load_err(&Tls {
            key_file: Some(garbled),
            ..good.clone()
        })
        .to_string();
        assert!(e.starts_with("tls.key_file"), "{e}");
        assert!(!e.contains(&key_body[..20]), "{e}");

        let other = self_signed("b", &["localhost"], &[2]);
        let other_key = dir.path().join("other-key.pem");
        std::fs::write(&other_key, &other.key_pem).unwrap();
        let e = load_err(&Tls {
            key_file: Some(other_key),
            ..good.clone()
        })
        .to_string();
        assert!(
            e.starts_with("tls.key_file") && e.contains("does not belong"),
            "{e}"
        );
        assert!(
            !e.contains(&other.key_pem.lines().nth(1).unwrap()[..20]),
            "{e}"
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed("first", &["localhost"], &[1]);
        let cfg = config(dir.path(), &first);
        let tls = TlsListener::from_config(&cfg).unwrap().unwrap();
        assert_eq!(tls.current().serial, "01");

        std::fs::write(cfg.cert_file.as_ref().unwrap(), "not pem").unwrap();
        let e = tls.reload().unwrap_err();
        assert_eq!(e.field, "tls.cert_file");
        assert_eq!(tls.current().serial, "01", "the old certificate stays");

        let second = self_signed("second", &["localhost"], &[2]);
        config(dir.path(), &second);
        assert_eq!(tls.reload().unwrap().serial, "02");
        assert_eq!(tls.current().subject, "CN=second, O=Sluice Test");
    }

    #[test]
    fn truncated_der_is_not_described_and_never_panics() {
        let pair = self_signed("x", &["localhost"], &[7]);
        let der_bytes = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
        assert!(cert_info(der_bytes.as_ref()).is_some());
        for cut in 0..der_bytes.len() {
            assert_eq!(cert_info(&der_bytes[..cut]), None, "cut at {cut}");
        }
    }
}
