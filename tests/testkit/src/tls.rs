//! A private certificate authority made by the test, and a server certificate it signs
//! for `127.0.0.1` and `localhost`: what a MinIO or Ceph behind a private CA presents.

use anyhow::{Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject as _;

/// A CA and a server certificate signed by it, as PEM.
pub struct TestCa {
    /// The CA's certificate: what a client must trust (e.g. through SSL_CERT_FILE).
    pub ca_pem: String,
    /// The server's certificate chain and key.
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl TestCa {
    /// A CA named `name`, and a certificate for `127.0.0.1` and `localhost` from it.
    pub fn new(name: &str) -> Result<Self> {
        Self::for_names(name, &["127.0.0.1", "localhost"])
    }

    /// A CA named `name`, and a certificate for exactly `names` (IP addresses or DNS
    /// names) from it.
    pub fn for_names(name: &str, names: &[&str]) -> Result<Self> {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        let ca_cert = ca.clone().self_signed(&ca_key).context("CA certificate")?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().context("server key")?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).context("server parameters")?;
        params
            .distinguished_name
            .push(DnType::CommonName, "spaces-backup test server");
        for n in names {
            params
                .subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*n).try_into().context("DNS name")?),
                });
        }
        let cert = params
            .signed_by(&key, &issuer)
            .context("server certificate")?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        })
    }

    /// The server side: rustls with this certificate.
    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig> {
        let certs = rustls_pemfile_certs(&self.server_cert_pem)?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .context("server key PEM")?;
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server certificate")
    }
}

fn rustls_pemfile_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("certificate PEM")
}
