//! TLS to a MySQL/MariaDB datasource: `connection.tls` (libpq's modes, `datasource::tls`) as
//! mysql_async's `SslOpts`, what `check` reports, and each way a handshake (or a login refused
//! for want of one) fails, as a message that names the cause and quotes nothing secret.

use mysql_async::{ClientIdentity, DriverError, IoError, SslOpts, TlsError};
use rustls::pki_types::ServerName;

use crate::datasource::ExecError;
use crate::datasource::tls::{self as shared, HandshakeContext, TlsMode, TlsReport, TlsSettings};

/// The name rustls is asked to verify under `verify-ca` (module notes in `mysql/mod.rs`): it
/// contains the text by which mysql_async 0.37.1 recognises a name mismatch, so the mismatch it
/// always causes is skipped, and only that one. `.invalid` can name no real host (RFC 6761).
pub(super) const VERIFY_CA_NAME: &str = "NotValidForName.verify-ca.invalid";

/// MySQL's ER_SECURE_TRANSPORT_REQUIRED. MariaDB has no such code: under
/// `require_secure_transport=ON` it refuses a plain connection with 1045, as a wrong password.
const SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// ER_ACCESS_DENIED_ERROR.
const ACCESS_DENIED: u16 = 1045;

/// How one datasource's connections do TLS, built once per pool from `connection.tls`.
pub(super) struct TlsPlan {
    /// The mode as the admin registered it (what messages name).
    registered: TlsMode,
    /// The mode as it acts: `require` with a `ca_pem` checks the chain, as libpq does.
    acting: TlsMode,
    /// The host the admin registered: what `verify-full` checks the certificate against.
    host: String,
    ca_given: bool,
    client_cert: bool,
    /// `None` under `disable`.
    ssl: Option<SslOpts>,
}

impl TlsPlan {
    /// Judges the settings (every error names its field) and builds the `SslOpts` all the pool's
    /// connections, the killer connection included, use.
    pub(super) fn new(settings: &TlsSettings, host: &str) -> Result<TlsPlan, ExecError> {
        let unusable = |e: shared::TlsSettingsError| ExecError::Unavailable(e.to_string());
        shared::validate(settings).map_err(unusable)?;
        let acting = match settings.mode {
            TlsMode::Require if settings.ca_pem.is_some() => TlsMode::VerifyCa,
            mode => mode,
        };
        let mut plan = TlsPlan {
            registered: settings.mode,
            acting,
            host: host.to_owned(),
            ca_given: settings.ca_pem.is_some(),
            client_cert: settings.client_cert_pem.is_some(),
            ssl: None,
        };
        if acting == TlsMode::Disable {
            return Ok(plan);
        }
        ensure_crypto_provider();
        let host_is_nameable = ServerName::try_from(host).is_ok();
        let name_to_verify = match acting {
            TlsMode::VerifyFull if !host_is_nameable => {
                return Err(ExecError::Unavailable(format!(
                    "connection.tls.mode verify-full checks the certificate against the host, \
                     but {host:?} is not a DNS name or IP address a certificate can name"
                )));
            }
            TlsMode::VerifyCa => VERIFY_CA_NAME.to_owned(),
            // `require` checks no name; the registered one still goes out as SNI when it can.
            _ if host_is_nameable => host.to_owned(),
            _ => VERIFY_CA_NAME.to_owned(),
        };
        let mut ssl = SslOpts::default()
            .with_danger_tls_hostname_override(Some(name_to_verify))
            .with_danger_accept_invalid_certs(acting == TlsMode::Require)
            .with_danger_skip_domain_validation(acting == TlsMode::VerifyCa);
        if let Some(ca) = &settings.ca_pem {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into_bytes().into()])
                .with_disable_built_in_roots(true);
        } else if acting.verifies_chain() {
            // The same judgement (and error) as every driver's: the system has roots to trust.
            shared::root_store(settings).map_err(unusable)?;
            ssl = ssl
                .with_root_certs(system_roots())
                .with_disable_built_in_roots(true);
        }
        // `require` without `ca_pem` consults no root; mysql_async's built-in ones stay only
        // because its verifier cannot be built over an empty store.
        if let (Some(cert), Some(key)) = (&settings.client_cert_pem, &settings.client_key_pem) {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(
                cert.clone().into_bytes().into(),
                key.expose().as_bytes().to_vec().into(),
            )));
        }
        plan.ssl = Some(ssl);
        Ok(plan)
    }

    /// mysql_async's options (`None`: plain TCP).
    pub(super) fn ssl_opts(&self) -> Option<SslOpts> {
        self.ssl.clone()
    }

    pub(super) fn is_on(&self) -> bool {
        self.ssl.is_some()
    }

    /// What `check` reports for a connection that negotiated `version` (`None` under disable).
    /// A handshake that got this far verified everything the acting mode asks for.
    pub(super) fn report(&self, version: String) -> Option<TlsReport> {
        self.is_on()
            .then(|| TlsReport::for_mode(self.acting, version))
    }

    /// The message for a connection that could not be opened: which TLS check failed, or what
    /// the lack of TLS may have caused; otherwise `said` (the driver's text, already scrubbed).
    /// A handshake failure is worded by `datasource::tls::handshake_failure`, as for PostgreSQL.
    pub(super) fn explain(&self, e: &mysql_async::Error, said: String) -> String {
        if let Some(r) = shared::find_rustls_error(e) {
            let ctx = HandshakeContext {
                mode: self.registered,
                host: &self.host,
                ca_given: self.ca_given,
                client_cert: self.client_cert,
                server_client_ca: "ssl_ca",
            };
            return shared::handshake_failure(r, &ctx);
        }
        let mode = self.registered;
        match e {
            mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => format!(
                "the server does not offer TLS (it has no ssl_cert and ssl_key), and \
                 connection.tls.mode {mode} does not connect without it; turn TLS on in the \
                 server (or, on a trusted network only, set the mode to disable)"
            ),
            mysql_async::Error::Io(IoError::Tls(TlsError::InvalidDnsName(_))) => format!(
                "the host {:?} is not a DNS name or IP address a TLS certificate can name",
                self.host
            ),
            mysql_async::Error::Server(se) if se.code == SECURE_TRANSPORT_REQUIRED => format!(
                "the server accepts only TLS connections (require_secure_transport=ON) and \
                 connection.tls.mode is disable; set the mode to verify-full, verify-ca or \
                 require (server: {said})"
            ),
            mysql_async::Error::Server(se) if se.code == ACCESS_DENIED && !self.is_on() => {
                format!(
                    "the server refused the connection: {said}; if the user and password are \
                     right, the server may accept only TLS connections (MariaDB refuses a plain \
                     one this way under require_secure_transport=ON): set connection.tls.mode to \
                     verify-full, verify-ca or require"
                )
            }
            mysql_async::Error::Server(se) if se.code == ACCESS_DENIED && !self.client_cert => {
                format!(
                    "the server refused the connection: {said}; if the account requires a client \
                     certificate (REQUIRE X509, SUBJECT or ISSUER), set \
                     connection.tls.client_cert_pem and client_key_pem"
                )
            }
            _ => said,
        }
    }
}

/// The system's trusted roots as mysql_async takes them (one DER buffer each; its buffer type
/// is not exported, hence `From<Vec<u8>>`), leaving out any it could not add: one bad root would
/// otherwise fail every connection.
fn system_roots<T: From<Vec<u8>>>() -> Vec<T> {
    let mut probe = rustls::RootCertStore::empty();
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .filter(|cert| probe.add(cert.clone()).is_ok())
        .map(|cert| T::from(cert.to_vec()))
        .collect()
}

/// mysql_async builds its rustls configuration over the process-default provider, installing
/// the one rustls's crate features name when none is set (aws-lc-rs: `ring` is not in the
/// build). Installing aws-lc-rs here first means a second provider feature appearing in the
/// dependency graph cannot turn the first TLS connection into a panic. `install_default` sets
/// the default at most once, atomically: losing a race to another caller is harmless.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasource::Secret;
    use rustls::CertificateError;

    #[test]
    fn verify_ca_name_is_recognised_by_mysql_asyncs_name_mismatch_check() {
        // mysql_async 0.37.1 skips a name mismatch under `skip_domain_validation` only when the
        // error's text contains "NotValidForName"; rustls must still print the expected name.
        let expected = ServerName::try_from(VERIFY_CA_NAME).unwrap().to_owned();
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            presented: vec!["DnsName(\"db.internal\")".into()],
        });
        assert!(e.to_string().contains("NotValidForName"), "{e}");
        // No other certificate error carries the name, so none other is skipped.
        for other in [
            CertificateError::UnknownIssuer,
            CertificateError::Expired,
            CertificateError::BadSignature,
        ] {
            let e = rustls::Error::InvalidCertificate(other);
            assert!(!e.to_string().contains("NotValidForName"), "{e}");
        }
    }

    #[test]
    fn modes_become_ssl_opts_as_libpq_would_act() {
        let ca = rcgen::CertificateParams::new(vec!["db.internal".to_owned()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let plan = |mode, ca_pem: Option<&str>| {
            TlsPlan::new(
                &TlsSettings {
                    mode,
                    ca_pem: ca_pem.map(str::to_owned),
                    ..TlsSettings::default()
                },
                "db.internal",
            )
            .unwrap()
        };

        let off = plan(TlsMode::Disable, Some(&ca));
        assert!(off.ssl_opts().is_none() && off.report("TLSv1.3".into()).is_none());

        let require = plan(TlsMode::Require, None).ssl_opts().unwrap();
        assert!(require.accept_invalid_certs() && !require.skip_domain_validation());
        assert_eq!(require.tls_hostname_override(), Some("db.internal"));

        // libpq: `require` with a root certificate verifies the chain, as verify-ca.
        let require_ca = plan(TlsMode::Require, Some(&ca));
        let opts = require_ca.ssl_opts().unwrap();
        assert!(!opts.accept_invalid_certs() && opts.skip_domain_validation());
        assert!(opts.disable_built_in_roots() && opts.root_certs().len() == 1);
        let r = require_ca.report("TLSv1.3".into()).unwrap();
        assert!(r.chain_verified && !r.host_verified);

        let full = plan(TlsMode::VerifyFull, Some(&ca));
        let opts = full.ssl_opts().unwrap();
        assert!(!opts.accept_invalid_certs() && !opts.skip_domain_validation());
        assert_eq!(opts.tls_hostname_override(), Some("db.internal"));
        assert!(opts.disable_built_in_roots());
        let r = full.report("TLSv1.2".into()).unwrap();
        assert!(r.verified && r.chain_verified && r.host_verified && r.version == "TLSv1.2");
    }

    #[test]
    fn unusable_settings_are_unavailable_naming_the_field_and_never_a_secret() {
        let cases = [
            (
                TlsSettings {
                    ca_pem: Some("TOPSECRET".into()),
                    ..TlsSettings::default()
                },
                "connection.tls.ca_pem",
            ),
            (
                TlsSettings {
                    client_key_pem: Some(Secret::new("TOPSECRET")),
                    ..TlsSettings::default()
                },
                "connection.tls.client_cert_pem",
            ),
        ];
        for (settings, field) in cases {
            let Err(ExecError::Unavailable(m)) = TlsPlan::new(&settings, "db") else {
                panic!("{field}: accepted");
            };
            assert!(m.starts_with(field) && !m.contains("TOPSECRET"), "{m}");
        }
        let Err(ExecError::Unavailable(m)) = TlsPlan::new(&TlsSettings::default(), "db_1/x") else {
            panic!("a host no certificate can name is accepted under verify-full");
        };
        assert!(m.contains("verify-full"), "{m}");
    }
}
