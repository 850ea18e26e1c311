//! Certificates for the TLS tests, made on the spot with rcgen: a CA, server certificates for
//! given names signed by it (and one that has expired), client certificates for a given common
//! name, and as many unrelated CAs as a test needs. Everything comes out as PEM text, ready for
//! a server's files or a datasource's `connection.tls`.
//!
//! ```ignore
//! let ca = TestCa::new("sluice test CA");
//! let server = ca.server_cert(&["localhost", "127.0.0.1"]); // names or IP addresses
//! let client = ca.client_cert("cert_user");                 // CN = the database user
//! let stranger = TestCa::new("someone else's CA");         // signs nothing the server trusts
//! ```

#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority that signs server and client certificates.
pub struct TestCa {
    /// The CA's own (self-signed) certificate: what a client or server is told to trust.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA whose subject's common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses, as subject alternative
    /// names), valid from 1975 to far in the future.
    pub fn server_cert(&self, names: &[&str]) -> CertKey {
        self.leaf(
            names,
            names.first().copied().unwrap_or("server"),
            false,
            true,
        )
    }

    /// A server certificate for `names` whose validity ended in 2001.
    pub fn expired_server_cert(&self, names: &[&str]) -> CertKey {
        self.leaf(
            names,
            names.first().copied().unwrap_or("server"),
            true,
            true,
        )
    }

    /// A client certificate whose common name is `cn` (PostgreSQL's `cert` authentication and
    /// MySQL's `REQUIRE SUBJECT` read the user from it).
    pub fn client_cert(&self, cn: &str) -> CertKey {
        self.leaf(&[], cn, false, false)
    }

    fn leaf(&self, names: &[&str], cn: &str, expired: bool, server: bool) -> CertKey {
        let key = KeyPair::generate().expect("generate a key");
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the certificate");
        CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
