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
}
