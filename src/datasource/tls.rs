//! TLS to a datasource (PostgreSQL and MySQL/MariaDB; SQLite has no network): the settings an
//! admin registers in `connection.tls`, what `check` reports about a connection, and the parsing
//! both drivers and the API's validation share, so a PEM is judged the same way everywhere.
//!
//! `mode` has libpq's `sslmode` meanings:
//! - `disable`: plain TCP;
//! - `require`: TLS, but the certificate is not checked (it only stops passive eavesdropping);
//! - `verify-ca`: TLS, and the chain must lead to a trusted root (`ca_pem`, or the system's);
//! - `verify-full` (the default): as `verify-ca`, and the certificate must name the host the admin
//!   registered (the connection itself goes to the address the SSRF check resolved).
//!
//! The client key is a [`Secret`]: encrypted at rest like the password, never returned, logged or
//! audited. Parse errors name the field and say what is wrong, never quote the PEM.

use std::fmt;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::Secret;

/// A PEM bundle or key larger than this is refused (a CA bundle is a few hundred KiB at most).
pub const MAX_PEM_BYTES: usize = 1024 * 1024;

/// libpq's `sslmode`, as `connection.tls.mode` spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    Require,
    VerifyCa,
    #[default]
    VerifyFull,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the certificate chain must lead to a trusted root.
    pub fn verifies_chain(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }

    /// Whether the certificate must name the registered host.
    pub fn verifies_host(self) -> bool {
        self == TlsMode::VerifyFull
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A datasource's TLS settings, as the drivers get them (the key decrypted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// PEM bundle of the roots to trust; `None`: the system's trusted roots.
    pub ca_pem: Option<String>,
    /// PEM certificate chain for mutual TLS (with `client_key_pem`).
    pub client_cert_pem: Option<String>,
    /// PEM private key for mutual TLS.
    pub client_key_pem: Option<Secret>,
}

impl TlsSettings {
    /// Plain TCP: what datasources stored before TLS existed were migrated to.
    pub fn disabled() -> Self {
        TlsSettings {
            mode: TlsMode::Disable,
            ..TlsSettings::default()
        }
    }
}

/// What `check` says about a connection's TLS (`null` in the answer under `disable`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsReport {
    /// The negotiated protocol, e.g. `TLSv1.3`.
    pub version: String,
    /// Everything the mode asks for was verified (and something was: `false` under `require`).
    pub verified: bool,
    /// The chain led to a trusted root.
    pub chain_verified: bool,
    /// The certificate named the registered host.
    pub host_verified: bool,
}

impl TlsReport {
    /// The report for a connection made under `mode` that negotiated `version`: what the mode
    /// verifies is what was verified, since the handshake fails otherwise.
    pub fn for_mode(mode: TlsMode, version: impl Into<String>) -> TlsReport {
        TlsReport {
            version: version.into(),
            verified: mode.verifies_chain(),
            chain_verified: mode.verifies_chain(),
            host_verified: mode.verifies_host(),
        }
    }
}

/// A PEM field that cannot be used: which field and why (never its contents).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection.tls.{field}: {reason}")]
pub struct TlsSettingsError {
    /// `ca_pem`, `client_cert_pem` or `client_key_pem`.
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TlsSettingsError {
    TlsSettingsError {
        field,
        reason: reason.into(),
    }
}

/// The certificates of a PEM bundle, refusing an empty or malformed one.
pub fn parse_certs(
    field: &'static str,
    pem_text: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsSettingsError> {
    if pem_text.len() > MAX_PEM_BYTES {
        return Err(invalid(field, format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    // The parser's messages may quote the input: they are not passed on.
    let certs = CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid(field, "not a valid PEM certificate bundle"))?;
    if certs.is_empty() {
        return Err(invalid(
            field,
            "no certificate (-----BEGIN CERTIFICATE-----) in it",
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        if x509_parser::parse_x509_certificate(cert.as_ref()).is_err() {
            return Err(invalid(
                field,
                format!(
                    "certificate {} of the bundle is not a valid X.509 certificate",
                    i + 1
                ),
            ));
        }
    }
    Ok(certs)
}

/// The roots to trust under `verify-ca` and `verify-full` (and under `require`, where they are
/// not used): `ca_pem`'s certificates, or the system's trusted roots when it is absent.
pub fn root_store(settings: &TlsSettings) -> Result<rustls::RootCertStore, TlsSettingsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_pem {
        Some(pem_text) => {
            for cert in parse_certs("ca_pem", pem_text)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid("ca_pem", format!("not usable as a root: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 && settings.mode.verifies_chain() {
                return Err(invalid(
                    "ca_pem",
                    "not set, and the system has no trusted roots (install ca-certificates, \
                     or give the server's CA in ca_pem)",
                ));
            }
        }
    }
    Ok(roots)
}

/// The key of a PEM (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(
    field: &'static str,
    pem_text: &str,
) -> Result<PrivateKeyDer<'static>, TlsSettingsError> {
    if pem_text.len() > MAX_PEM_BYTES {
        return Err(invalid(field, format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    PrivateKeyDer::from_pem_slice(pem_text.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => invalid(
            field,
            "no private key (PKCS#8, PKCS#1 or SEC1 PEM section) in it",
        ),
        _ => invalid(field, "not a valid PEM private key"),
    })
}

/// The client identity for mutual TLS: `None` without one, an error when only half is given,
/// when either half does not parse, or when the key does not belong to the certificate.
#[allow(clippy::type_complexity)]
pub fn client_identity(
    settings: &TlsSettings,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsSettingsError> {
    let (cert, key) = match (&settings.client_cert_pem, &settings.client_key_pem) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(invalid(
                "client_key_pem",
                "missing: client_cert_pem needs its key",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "client_cert_pem",
                "missing: client_key_pem needs its certificate",
            ));
        }
        (Some(c), Some(k)) => (c, k),
    };
    let chain = parse_certs("client_cert_pem", cert)?;
    let key = parse_key("client_key_pem", key.expose())?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| invalid("client_key_pem", "not a key rustls can sign with"))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(invalid(
            "client_key_pem",
            "does not belong to the first certificate of client_cert_pem",
        ));
    }
    Ok(Some((chain, key)))
}

/// Everything about `settings` that can be judged without a server: the PEM fields parse, and a
/// client certificate comes with its key. The API calls this at registration (400 naming the
/// field); the drivers meet the same errors when they build a connection.
pub fn validate(settings: &TlsSettings) -> Result<(), TlsSettingsError> {
    if let Some(ca) = &settings.ca_pem {
        parse_certs("ca_pem", ca)?;
    }
    client_identity(settings)?;
    Ok(())
}

/// What a message about a failed TLS handshake needs to know of the datasource (both network
/// drivers word the same failures the same way through [`handshake_failure`]).
#[derive(Clone, Copy, Debug)]
pub struct HandshakeContext<'a> {
    /// The mode as the admin registered it (what messages name).
    pub mode: TlsMode,
    /// The registered host: what `verify-full` checks the certificate against.
    pub host: &'a str,
    /// `ca_pem` was given (otherwise the system's roots were used).
    pub ca_given: bool,
    /// A client certificate was offered.
    pub client_cert: bool,
    /// The server's setting that names the CAs it trusts for client certificates
    /// (`ssl_ca_file` for PostgreSQL, `ssl_ca` for MySQL).
    pub server_client_ca: &'static str,
}

/// A failed TLS handshake (or the first read after it: under TLS 1.3 a server judges our client
/// certificate after our side of the handshake is done) as a message naming the cause: an
/// untrusted chain, an expired certificate, a host name mismatch, a refused or missing client
/// certificate. rustls' errors carry no secret; nothing of a PEM is quoted.
pub fn handshake_failure(e: &rustls::Error, ctx: &HandshakeContext<'_>) -> String {
    use rustls::CertificateError as C;
    let mode = ctx.mode;
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => format!(
                "the server's TLS certificate is not trusted: its chain does not lead to {} \
                 (connection.tls.mode {mode})",
                if ctx.ca_given {
                    "a certificate of connection.tls.ca_pem"
                } else {
                    "the system's trusted roots (give the server's CA in connection.tls.ca_pem)"
                }
            ),
            C::Expired => {
                format!("the server's TLS certificate has expired (connection.tls.mode {mode})")
            }
            C::ExpiredContext { not_after, .. } => format!(
                "the server's TLS certificate has expired: it was valid until {} \
                 (connection.tls.mode {mode})",
                certificate_time(not_after)
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!(
                    "the server's TLS certificate is not valid yet (connection.tls.mode {mode})"
                )
            }
            C::NotValidForName => wrong_name(ctx.host, &[]),
            C::NotValidForNameContext { presented, .. } => wrong_name(ctx.host, presented),
            C::Revoked => "the server's TLS certificate has been revoked".to_owned(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "the server's TLS certificate is not meant for a server (extended key usage)"
                    .to_owned()
            }
            other => format!(
                "the server's TLS certificate was refused (connection.tls.mode {mode}): {other}"
            ),
        },
        rustls::Error::AlertReceived(alert) => alert_message(*alert, ctx),
        rustls::Error::NoCertificatesPresented => "the server sent no TLS certificate".to_owned(),
        rustls::Error::PeerIncompatible(why) => format!(
            "the server and the gateway have no TLS version or algorithm in common ({why:?}); \
             the gateway speaks TLS 1.2 and 1.3"
        ),
        other => format!("the TLS handshake with the server failed: {other}"),
    }
}

/// The server ended the handshake with an alert: most are about our client certificate.
fn alert_message(alert: rustls::AlertDescription, ctx: &HandshakeContext<'_>) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::CertificateRequired => "the server requires a client certificate (TLS alert \
             certificate_required); set connection.tls.client_cert_pem and client_key_pem"
            .to_owned(),
        A::UnknownCA
        | A::BadCertificate
        | A::CertificateUnknown
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::AccessDenied
            if ctx.client_cert =>
        {
            format!(
                "the server refused the client certificate (TLS alert {alert:?}): it must be \
                 signed by a CA in the server's {}, current, and meant for client \
                 authentication",
                ctx.server_client_ca
            )
        }
        A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity => format!(
            "the server and the gateway have no TLS version or algorithm in common (TLS alert \
             {alert:?}); the gateway speaks TLS 1.2 and 1.3"
        ),
        other => format!("the server ended the TLS handshake (TLS alert {other:?})"),
    }
}

fn wrong_name(host: &str, presented: &[String]) -> String {
    let names = if presented.is_empty() {
        String::new()
    } else {
        let bare: Vec<&str> = presented.iter().map(|n| bare_name(n)).collect();
        format!("; it names {}", bare.join(", "))
    };
    format!(
        "the server's TLS certificate does not name the host {host:?}{names} (verify-full \
         checks the host the datasource was registered with; register one of the certificate's \
         names, or use verify-ca to check the chain only)"
    )
}

/// rustls prints the names a certificate holds as `DnsName("db")` or `IpAddress(10.0.0.1)`.
fn bare_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|s| s.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

/// A certificate's validity bound as a UTC date and time.
fn certificate_time(t: &rustls::pki_types::UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "an unreadable date".to_owned())
}

/// The rustls error behind a driver's error, searched through its causes and inside the I/O
/// errors that wrap it (`io::Error::source` skips the error it wraps).
pub fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = find_rustls_error(inner)
        {
            return Some(r);
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_and_key(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn modes_spell_like_libpq_and_default_to_verify_full() {
        for (mode, text) in [
            (TlsMode::Disable, "\"disable\""),
            (TlsMode::Require, "\"require\""),
            (TlsMode::VerifyCa, "\"verify-ca\""),
            (TlsMode::VerifyFull, "\"verify-full\""),
        ] {
            assert_eq!(serde_json::to_string(&mode).unwrap(), text);
            assert_eq!(serde_json::from_str::<TlsMode>(text).unwrap(), mode);
            assert_eq!(format!("\"{mode}\""), text);
        }
        assert!(serde_json::from_str::<TlsMode>("\"prefer\"").is_err());
        assert_eq!(TlsSettings::default().mode, TlsMode::VerifyFull);
        assert_eq!(TlsSettings::disabled().mode, TlsMode::Disable);
        let r = TlsReport::for_mode(TlsMode::Require, "TLSv1.3");
        assert!(!r.verified && !r.chain_verified && !r.host_verified);
        let r = TlsReport::for_mode(TlsMode::VerifyCa, "TLSv1.3");
        assert!(r.verified && r.chain_verified && !r.host_verified);
        let r = TlsReport::for_mode(TlsMode::VerifyFull, "TLSv1.2");
        assert!(r.verified && r.chain_verified && r.host_verified);
    }

    #[test]
    fn pem_fields_are_judged_naming_the_field_and_never_quoting_it() {
        let (cert, key) = cert_and_key("db.internal");
        let (_, other_key) = cert_and_key("elsewhere");
        let ok = TlsSettings {
            mode: TlsMode::VerifyFull,
            ca_pem: Some(cert.clone()),
            client_cert_pem: Some(cert.clone()),
            client_key_pem: Some(Secret::new(key.clone())),
        };
        validate(&ok).unwrap();
        assert!(client_identity(&ok).unwrap().is_some());
        assert_eq!(root_store(&ok).unwrap().len(), 1);

        let secret_looking =
            "-----BEGIN CERTIFICATE-----\nTOPSECRETBYTES\n-----END CERTIFICATE-----\n";
        let cases: Vec<(TlsSettings, &str)> = vec![
            (
                TlsSettings {
                    ca_pem: Some("hello".into()),
                    ..ok.clone()
                },
                "ca_pem",
            ),
            (
                TlsSettings {
                    ca_pem: Some(secret_looking.into()),
                    ..ok.clone()
                },
                "ca_pem",
            ),
            (
                TlsSettings {
                    client_key_pem: None,
                    ..ok.clone()
                },
                "client_key_pem",
            ),
            (
                TlsSettings {
                    client_cert_pem: None,
                    ..ok.clone()
                },
                "client_cert_pem",
            ),
            (
                TlsSettings {
                    client_key_pem: Some(Secret::new("TOPSECRET not a key")),
                    ..ok.clone()
                },
                "client_key_pem",
            ),
            (
                TlsSettings {
                    client_key_pem: Some(Secret::new(other_key)),
                    ..ok.clone()
                },
                "client_key_pem",
            ),
            (
                TlsSettings {
                    client_cert_pem: Some(key.clone()),
                    ..ok.clone()
                },
                "client_cert_pem",
            ),
            (
                TlsSettings {
                    ca_pem: Some("x".repeat(MAX_PEM_BYTES + 1)),
                    ..ok.clone()
                },
                "ca_pem",
            ),
        ];
        for (settings, field) in cases {
            let e = validate(&settings).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            let text = format!("{e} {e:?}");
            assert!(
                text.starts_with(&format!("connection.tls.{field}: ")),
                "{text}"
            );
            assert!(
                !text.contains("TOPSECRET") && !text.contains("PRIVATE KEY"),
                "{text}"
            );
        }
    }

    #[test]
    fn handshake_failures_name_their_cause_and_the_names_bare() {
        use rustls::CertificateError as C;
        use rustls::pki_types::UnixTime;
        let ctx = HandshakeContext {
            mode: TlsMode::VerifyFull,
            host: "db.internal",
            ca_given: true,
            client_cert: true,
            server_client_ca: "ssl_ca_file",
        };
        let said = |e: rustls::Error| handshake_failure(&e, &ctx);
        let m = said(C::UnknownIssuer.into());
        assert!(
            m.contains("not trusted") && m.contains("connection.tls.ca_pem"),
            "{m}"
        );
        let m = said(
            C::ExpiredContext {
                time: UnixTime::now(),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(978_307_200)),
            }
            .into(),
        );
        assert!(m.contains("expired") && m.contains("2001-01-01"), "{m}");
        let m = said(
            C::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("db.internal").unwrap(),
                presented: vec![
                    "DnsName(\"localhost\")".into(),
                    "IpAddress(10.0.0.1)".into(),
                ],
            }
            .into(),
        );
        assert!(
            m.contains("\"db.internal\"") && m.contains("it names localhost, 10.0.0.1"),
            "{m}"
        );
        let m = said(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        ));
        assert!(
            m.contains("refused the client certificate") && m.contains("ssl_ca_file"),
            "{m}"
        );
        let m = said(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(m.contains("client_cert_pem"), "{m}");

        // Found inside the I/O error a TLS stream wraps it in, under another error.
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::from(C::Revoked),
        );
        assert_eq!(
            find_rustls_error(&io),
            Some(&rustls::Error::InvalidCertificate(C::Revoked))
        );
        assert_eq!(find_rustls_error(&std::io::Error::other("plain")), None);
    }
}
