//! Whom outgoing HTTPS trusts: the web PKI roots, the system's store, and the CA
//! certificates of `SSL_CERT_FILE` (PEM), for MinIO, Garage or Ceph behind a private CA
//! or a corporate TLS proxy. A certificate that does not verify is told to the component
//! as such, with the problem, so it fails at once instead of retrying.

use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use spaces_backup::model::CA_FILE_VAR;

/// A CA file that cannot be used: the message names the variable.
#[derive(Debug)]
pub struct TrustError(pub String);

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrustError {}

/// The web PKI roots and the system's store (what cannot be read of it is skipped).
pub fn default_roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let native = rustls_native_certs::load_native_certs();
    // Certificates the store holds but rustls cannot parse are of no use: skipped.
    let _ = roots.add_parsable_certificates(native.certs);
    roots
}

/// [`default_roots`] plus the certificates of `SSL_CERT_FILE` in `vars`, if set.
pub fn roots(vars: &[(String, String)]) -> Result<RootCertStore, TrustError> {
    let mut roots = default_roots();
    let Some(path) = crate::env::get(vars, CA_FILE_VAR).filter(|p| !p.trim().is_empty()) else {
        return Ok(roots);
    };
    for cert in ca_file(Path::new(path.trim()))? {
        roots.add(cert).map_err(|e| {
            TrustError(format!(
                "{CA_FILE_VAR}: a certificate in {path} cannot be used as a CA: {e}"
            ))
        })?;
    }
    Ok(roots)
}

/// The certificates of a PEM file; an error naming the variable if it cannot be read or
/// holds none.
fn ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| TrustError(format!("{CA_FILE_VAR}: cannot read {shown}: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError(format!("{CA_FILE_VAR}: {shown} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TrustError(format!(
            "{CA_FILE_VAR}: {shown} holds no certificate (expected PEM, -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// What went wrong with a server's certificate, in words a user can act on; `None` when
/// the TLS failure was not about the certificate.
pub fn certificate_problem(err: &std::io::Error, server: &str) -> Option<String> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    let rustls::Error::InvalidCertificate(problem) = tls else {
        return None;
    };
    use rustls::CertificateError as C;
    Some(match problem {
        C::UnknownIssuer => format!(
            "unknown issuer: the certificate of {server} is not signed by a CA this host trusts"
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("name mismatch: the certificate is not for {server}")
        }
        C::Expired | C::ExpiredContext { .. } => format!("the certificate of {server} has expired"),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("the certificate of {server} is not valid yet")
        }
        C::Revoked => format!("the certificate of {server} was revoked"),
        other => format!("the certificate of {server} was refused: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let vars = |p: &Path| vec![(CA_FILE_VAR.to_string(), p.display().to_string())];
        let err = roots(&vars(&missing)).unwrap_err().to_string();
        assert!(err.starts_with("SSL_CERT_FILE: cannot read"), "{err}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let err = roots(&vars(&garbage)).unwrap_err().to_string();
        assert!(
            err.contains("SSL_CERT_FILE") && err.contains("no certificate"),
            "{err}"
        );
        assert!(roots(&[]).unwrap().len() >= webpki_roots::TLS_SERVER_ROOTS.len());

        let ca = spaces_backup_testkit::tls::TestCa::new("test CA").unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, &ca.ca_pem).unwrap();
        let with = roots(&vars(&good)).unwrap();
        assert_eq!(with.len(), default_roots().len() + 1);
    }

    #[test]
    fn certificate_problems_in_words() {
        let err = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let p = certificate_problem(&err, "127.0.0.1:9000").unwrap();
        assert!(p.starts_with("unknown issuer"), "{p}");
        let other = std::io::Error::other("connection reset");
        assert!(certificate_problem(&other, "x").is_none());
    }
}
