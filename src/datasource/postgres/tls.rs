//! TLS to a PostgreSQL server, per datasource (`connection.tls`): the rustls `ClientConfig`
//! built once per pool, the certificate check each mode asks for, the connector that reads the
//! decrypted stream through the message watch, cancel requests over the same TLS, and the
//! handshake failures told apart in messages that name the cause.
//!
//! `disable` sends no SSLRequest. Every other mode sends one and needs the server's yes
//! (tokio-postgres's `SslMode::Require`): a server without TLS is refused, never used in clear.
//! What is checked of the server's certificate follows libpq's `sslmode`:
//! - `require`: nothing (the handshake's signatures still are, so the server holds the key of
//!   the certificate it sent) — except that, as in libpq, a `ca_pem` makes it `verify-ca`;
//! - `verify-ca`: the chain leads to `ca_pem`'s roots (the system's without one);
//! - `verify-full`: that too, and the certificate names the host the admin registered. The TCP
//!   connection goes to the address the SSRF check resolved (session.rs), the name checked is
//!   the registered one.
//!
//! Messages never quote a PEM, a key or the password; the server's own words are scrubbed.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::CancelToken;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, error::SqlState};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::bounded::{Bounded, Watch};
use crate::datasource::tls::{
    HandshakeContext, TlsMode, TlsReport, TlsSettings, TlsSettingsError, client_identity,
    find_rustls_error, handshake_failure, root_store,
};
use crate::datasource::{ExecError, Secret, scrub};

/// The encrypted stream tokio-postgres-rustls makes over `S`.
type RustlsStream<S> = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;

/// A pool's TLS: what every connection of the pool (and its cancel requests) is made with.
pub(super) struct PgTls {
    mode: TlsMode,
    /// What is verified: `mode`, except `require` with a `ca_pem`, which is `verify-ca`.
    verifies: TlsMode,
    /// The registered host: the name the certificate must carry under `verify-full`, and the
    /// SNI sent.
    host: String,
    /// `None` under `disable`.
    connector: Option<MakeRustlsConnect>,
    /// The roots are `ca_pem`'s, not the system's.
    own_roots: bool,
    /// A client certificate is offered.
    client_cert: bool,
}

impl PgTls {
    /// Builds the pool's `ClientConfig`. A setting that cannot be used is `Unavailable` naming
    /// the field (the API refuses such settings at registration; this is the backstop).
    pub(super) fn new(host: &str, settings: &TlsSettings) -> Result<PgTls, ExecError> {
        let mode = settings.mode;
        let verifies = match mode {
            TlsMode::Require if settings.ca_pem.is_some() => TlsMode::VerifyCa,
            m => m,
        };
        let connector = match mode {
            TlsMode::Disable => None,
            _ => {
                if ServerName::try_from(host).is_err() {
                    return Err(ExecError::Unavailable(format!(
                        "connection.host {host:?} is not a name or address TLS can use"
                    )));
                }
                Some(MakeRustlsConnect::new(client_config(settings, verifies)?))
            }
        };
        Ok(PgTls {
            mode,
            verifies,
            host: host.to_owned(),
            connector,
            own_roots: settings.ca_pem.is_some(),
            client_cert: settings.client_cert_pem.is_some(),
        })
    }

    /// Whether connections are encrypted (any mode but `disable`).
    pub(super) fn enabled(&self) -> bool {
        self.connector.is_some()
    }

    /// What the startup tells tokio-postgres: ask for TLS and insist on it, or do not ask.
    pub(super) fn ssl_mode(&self) -> SslMode {
        match self.connector {
            Some(_) => SslMode::Require,
            None => SslMode::Disable,
        }
    }

    /// The connector for one new connection, whose decrypted stream is read through `watch`
    /// (see [`super::bounded`]); `None` under `disable`.
    pub(super) fn watched(&self, limit: usize, watch: Arc<Watch>) -> Option<WatchedTls> {
        self.connector.as_ref().map(|c| WatchedTls {
            connector: c.clone(),
            host: self.host.clone(),
            limit,
            watch,
        })
    }

    /// Sends `token`'s cancel request over `stream` (a new connection to the server), with the
    /// same TLS as the connection it cancels, so the cancel key (the backend's pid and secret)
    /// never crosses in clear where the connection does not.
    pub(super) async fn cancel<S>(
        &self,
        token: &CancelToken,
        stream: S,
    ) -> Result<(), tokio_postgres::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match &self.connector {
            None => token.cancel_query_raw(stream, NoTls).await,
            Some(c) => {
                let mut c = c.clone();
                let tls = match MakeTlsConnect::<S>::make_tls_connect(&mut c, &self.host) {
                    Ok(tls) => tls,
                    Err(never) => match never {},
                };
                token.cancel_query_raw(stream, tls).await
            }
        }
    }

    /// What `check` reports, given the protocol the server says the connection uses.
    pub(super) fn report(&self, version: Option<String>) -> Option<TlsReport> {
        self.enabled().then(|| {
            TlsReport::for_mode(
                self.verifies,
                version.unwrap_or_else(|| "unknown".to_owned()),
            )
        })
    }

    /// A connection that could not be opened, as the admin should read it: which TLS check
    /// failed, or what the server refused.
    pub(super) fn connect_error(&self, e: &tokio_postgres::Error, password: &Secret) -> ExecError {
        let secrets = [password.expose()];
        if let Some(db) = e.as_db_error() {
            let said = scrub(db.message(), &secrets);
            return ExecError::Unavailable(self.refusal(db.code(), &said));
        }
        if let Some(cause) = find_rustls_error(e) {
            return ExecError::Unavailable(handshake_failure(cause, &self.context()));
        }
        let text = chain_text(e);
        if text.contains("server does not support TLS") {
            return ExecError::Unavailable(format!(
                "the server does not offer TLS (its ssl setting is off), and connection.tls.mode \
                 {} does not connect without it; turn ssl on in the server (or, on a trusted \
                 network only, set the mode to disable)",
                self.mode
            ));
        }
        ExecError::Unavailable(scrub(&text, &secrets))
    }

    /// The server refused the connection after the handshake (or without one).
    fn refusal(&self, code: &SqlState, said: &str) -> String {
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            // pg_hba.conf's words: "no pg_hba.conf entry for host …, no encryption" (or
            // "rejects connection for …, no encryption"); before PostgreSQL 12, "SSL off".
            if self.connector.is_none()
                && (said.contains("no encryption") || said.contains("SSL off"))
            {
                return format!(
                    "the server accepts this connection only over TLS (its pg_hba.conf refuses \
                     it unencrypted) and connection.tls.mode is disable; set the mode to \
                     verify-full, verify-ca or require (server: {said})"
                );
            }
            if said.contains("requires a valid client certificate") {
                return format!(
                    "the server requires a client certificate for this user; set \
                     connection.tls.client_cert_pem and client_key_pem (server: {said})"
                );
            }
            if said.contains("certificate authentication failed") {
                return format!(
                    "the server refused the client certificate for this user: its common name \
                     must be the user's name (server: {said})"
                );
            }
        }
        format!("the server refused the connection: {said}")
    }

    /// What a handshake failure message needs to know of this datasource.
    fn context(&self) -> HandshakeContext<'_> {
        HandshakeContext {
            mode: self.mode,
            host: &self.host,
            ca_given: self.own_roots,
            client_cert: self.client_cert,
            server_client_ca: "ssl_ca_file",
        }
    }
}

/// The rustls configuration for `verifies` (not `disable`), with the aws-lc-rs provider named
/// explicitly (as the listener's is), and the client identity when one is set.
pub(crate) fn client_config(
    settings: &TlsSettings,
    verifies: TlsMode,
) -> Result<ClientConfig, ExecError> {
    let field_error = |e: TlsSettingsError| ExecError::Unavailable(e.to_string());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match verifies {
        TlsMode::Disable | TlsMode::Require => Arc::new(SignaturesOnly { algorithms }),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let roots = Arc::new(root_store(settings).map_err(field_error)?);
            let webpki =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| {
                        ExecError::Unavailable(format!("connection.tls.ca_pem: not usable: {e}"))
                    })?;
            if verifies == TlsMode::VerifyFull {
                webpki as Arc<dyn ServerCertVerifier>
            } else {
                Arc::new(ChainOnly {
                    webpki,
                    roots,
                    algorithms,
                })
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExecError::Unavailable(format!("TLS configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client_identity(settings).map_err(field_error)? {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|_| {
            ExecError::Unavailable(
                "connection.tls.client_key_pem: not a key rustls can sign with".to_owned(),
            )
        }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// `require` without a `ca_pem`: any certificate, but the handshake must be signed with its
/// key (so the server holds it), checked with the provider's algorithms as the WebPKI verifier
/// does.
#[derive(Debug)]
struct SignaturesOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SignaturesOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain (validity dates included) must lead to a trusted root, as the WebPKI
/// verifier checks it; the names in the certificate are not looked at.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Connects one connection with TLS and hands tokio-postgres the decrypted stream read through
/// the message watch (the watch follows PostgreSQL's framing, so it must sit inside the TLS
/// layer, and outside nothing: the SSLRequest's one-byte answer is not a message).
pub(super) struct WatchedTls {
    connector: MakeRustlsConnect,
    host: String,
    limit: usize,
    watch: Arc<Watch>,
}

impl<S> TlsConnect<S> for WatchedTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Bounded<RustlsStream<S>>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Stream>>;

    fn connect(mut self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = match MakeTlsConnect::<S>::make_tls_connect(&mut self.connector, &self.host) {
                Ok(tls) => tls,
                Err(never) => match never {},
            };
            let stream = tls.connect(stream).await?;
            Ok(Bounded::new(stream, self.limit, self.watch))
        })
    }
}

/// An error and its causes, as one line.
pub(crate) fn chain_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(err) = next {
        let part = err.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ca {
        pem: String,
        der: CertificateDer<'static>,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca, name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn chain_only(ca: &Ca) -> ChainOnly {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let roots = Arc::new(roots);
        ChainOnly {
            webpki: WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .unwrap(),
            roots,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn settings(mode: TlsMode, ca_pem: Option<&str>) -> TlsSettings {
        TlsSettings {
            mode,
            ca_pem: ca_pem.map(str::to_owned),
            ..TlsSettings::default()
        }
    }

    #[test]
    fn verify_ca_checks_the_chain_and_not_the_name() {
        let (ours, theirs) = (ca("ours"), ca("theirs"));
        let verifier = chain_only(&ours);
        let other_name = ServerName::try_from("not-the-certificate-name.test").unwrap();
        let now = UnixTime::now();
        verifier
            .verify_server_cert(&leaf(&ours, "db.internal"), &[], &other_name, &[], now)
            .expect("our CA's certificate, whatever its name");
        let err = verifier
            .verify_server_cert(&leaf(&theirs, "db.internal"), &[], &other_name, &[], now)
            .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
    }

    #[test]
    fn modes_choose_plain_or_insisted_tls_and_require_with_a_ca_verifies_the_chain() {
        let ours = ca("ours");
        let off = PgTls::new("db.internal", &settings(TlsMode::Disable, None)).unwrap();
        assert!(!off.enabled() && off.ssl_mode() == SslMode::Disable);
        assert_eq!(off.report(Some("TLSv1.3".into())), None);

        let require = PgTls::new("db.internal", &settings(TlsMode::Require, None)).unwrap();
        assert!(require.enabled() && require.ssl_mode() == SslMode::Require);
        assert_eq!(
            require.report(Some("TLSv1.3".into())),
            Some(TlsReport::for_mode(TlsMode::Require, "TLSv1.3"))
        );
        let require_ca =
            PgTls::new("10.0.0.5", &settings(TlsMode::Require, Some(&ours.pem))).unwrap();
        assert_eq!(
            require_ca.report(Some("TLSv1.2".into())),
            Some(TlsReport::for_mode(TlsMode::VerifyCa, "TLSv1.2"))
        );
        let full = PgTls::new(
            "db.internal",
            &settings(TlsMode::VerifyFull, Some(&ours.pem)),
        );
        assert!(full.is_ok());
    }

    #[test]
    fn unusable_settings_fail_the_pool_naming_the_field() {
        let message = |r: Result<PgTls, ExecError>| match r {
            Err(ExecError::Unavailable(m)) => m,
            Err(e) => panic!("expected Unavailable, got {e:?}"),
            Ok(_) => panic!("expected an error"),
        };
        let m = message(PgTls::new(
            "db.internal",
            &settings(TlsMode::VerifyCa, Some("TOPSECRET")),
        ));
        assert!(
            m.starts_with("connection.tls.ca_pem: ") && !m.contains("TOPSECRET"),
            "{m}"
        );
        let m = message(PgTls::new("db internal", &settings(TlsMode::Require, None)));
        assert!(m.starts_with("connection.host "), "{m}");
        // Under disable the host is never used as a TLS name.
        assert!(PgTls::new("db internal", &settings(TlsMode::Disable, None)).is_ok());
    }

    #[test]
    fn handshake_failures_are_worded_for_this_datasource() {
        let ours = ca("ours");
        let t = PgTls {
            client_cert: true,
            ..PgTls::new(
                "db.internal",
                &settings(TlsMode::VerifyFull, Some(&ours.pem)),
            )
            .unwrap()
        };
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
        let m = handshake_failure(&alert, &t.context());
        assert!(
            m.contains("client certificate") && m.contains("ssl_ca_file"),
            "{m}"
        );
        let name = rustls::Error::from(rustls::CertificateError::NotValidForName);
        let m = handshake_failure(&name, &t.context());
        assert!(m.contains("\"db.internal\""), "{m}");
    }
}
