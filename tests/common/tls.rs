//! Self-signed certificates generated per test.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed certificate and its private key, in PEM.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes sure one rustls crypto provider is installed in the test process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate for `localhost`, signed by itself.
pub fn self_signed() -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    TestCert {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    }
}

impl TestCert {
    /// Writes `cert.pem` and `key.pem` into `dir`.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }

    /// A rustls server configuration serving this certificate.
    pub fn server_config(&self) -> rustls::ServerConfig {
        install_crypto_provider();
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("parse the certificate");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("parse the key");
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("a usable certificate")
    }

    /// The certificate as a reqwest root.
    pub fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("a PEM certificate")
    }
}
