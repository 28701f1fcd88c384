//! QUIC plumbing for the relay: the origin's certificate (loaded, or
//! generated self-signed), its SHA-256 fingerprint, the server endpoint, and
//! client configs that pin an origin's certificate by fingerprint instead of
//! trusting a CA (origins are ours; there is no public name to verify).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The ALPN id of the relay protocol; a client speaking anything else is
/// refused in the handshake.
pub const ALPN: &[u8] = b"westream-relay/1";
/// A connection silent this long is dead (keep-alives run at a third of it),
/// so an edge notices a dead origin within a few seconds.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most concurrent channels one edge may pull over one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Why the QUIC side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// A certificate or key file could not be read or written.
    #[error("relay certificate file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A certificate or key file is not valid PEM of the right kind.
    #[error("relay certificate file {path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate and key are missing and generation is off.
    #[error("relay certificate {path} does not exist and relay.generate_cert is false")]
    Missing {
        /// The certificate path.
        path: PathBuf,
    },
    /// Certificate generation failed.
    #[error("cannot generate the relay certificate: {0}")]
    Generate(String),
    /// TLS configuration was refused (bad key, no usable cipher suite).
    #[error("relay TLS setup: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr} (relay, UDP): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An origin's certificate chain (one self-signed cert) and key.
#[derive(Debug)]
pub struct CertPair {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The private key, DER.
    pub key: PrivateKeyDer<'static>,
}

impl CertPair {
    /// Hex SHA-256 of the certificate, what edges pin.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }
}

/// Hex SHA-256 of a DER certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the certificate and key, or (when both are missing and `generate`)
/// creates a self-signed pair, writes both (the key readable by the owner
/// only) and a `<cert>.sha256` file with the fingerprint.
pub fn load_or_generate(cert_path: &Path, key_path: &Path, generate: bool) -> Result<CertPair, QuicError> {
    if !cert_path.exists() && !key_path.exists() {
        if !generate {
            return Err(QuicError::Missing { path: cert_path.into() });
        }
        let ck = rcgen::generate_simple_self_signed(vec!["westream-origin".to_string(), "localhost".to_string()])
            .map_err(|e| QuicError::Generate(e.to_string()))?;
        for p in [cert_path, key_path] {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| QuicError::Io { path: dir.into(), source })?;
            }
        }
        write_private(key_path, ck.key_pair.serialize_pem().as_bytes())?;
        std::fs::write(cert_path, ck.cert.pem()).map_err(|source| QuicError::Io { path: cert_path.into(), source })?;
        tracing::info!(cert = %cert_path.display(), "generated a self-signed relay certificate");
    }
    let cert = CertificateDer::from_pem_file(cert_path)
        .map_err(|e| QuicError::Pem { path: cert_path.into(), message: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| QuicError::Pem { path: key_path.into(), message: e.to_string() })?;
    let pair = CertPair { cert, key };
    let fp_path = PathBuf::from(format!("{}.sha256", cert_path.display()));
    // Best effort: the fingerprint is also logged.
    let _ = std::fs::write(&fp_path, format!("{}\n", pair.fingerprint()));
    Ok(pair)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), QuicError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|source| QuicError::Io { path: path.into(), source })?;
    f.write_all(data).map_err(|source| QuicError::Io { path: path.into(), source })
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Unwrap-free: 3 s always fits a VarInt of milliseconds.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    t.keep_alive_interval(Some(IDLE_TIMEOUT / 3));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS_PER_CONNECTION));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

/// The origin's endpoint, bound to `addr` (port 0 picks one).
pub fn server_endpoint(addr: SocketAddr, pair: &CertPair) -> Result<quinn::Endpoint, QuicError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![pair.cert.clone()], pair.key.clone_key())
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    quinn::Endpoint::server(config, addr).map_err(|source| QuicError::Bind { addr, source })
}

/// A client endpoint on an ephemeral port of the address family of `peer`.
pub fn client_endpoint(peer: SocketAddr) -> Result<quinn::Endpoint, QuicError> {
    let local: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|_| QuicError::Tls("bad local address".into()))?;
    quinn::Endpoint::client(local).map_err(|source| QuicError::Bind { addr: local, source })
}

/// A client config that accepts only the certificate whose SHA-256 is
/// `cert_sha256` (hex).
pub fn pinned_client_config(cert_sha256: &str) -> Result<quinn::ClientConfig, QuicError> {
    let mut pin = [0u8; 32];
    hex::decode_to_slice(cert_sha256.trim(), &mut pin).map_err(|e| QuicError::Tls(format!("bad fingerprint: {e}")))?;
    let provider = provider();
    let verifier = Arc::new(PinnedCert { pin, provider: Arc::clone(&provider) });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The server name edges send; the pinned fingerprint, not the name, is
/// what is verified.
pub const SERVER_NAME: &str = "westream-origin";

#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_reloaded_with_the_same_fingerprint() {
        let dir = std::env::temp_dir().join(format!("westream-edge-cert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        let first = load_or_generate(&c, &k, true).unwrap();
        let again = load_or_generate(&c, &k, false).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(first.fingerprint().len(), 64);
        assert!(matches!(load_or_generate(&dir.join("x.pem"), &dir.join("y.pem"), false), Err(QuicError::Missing { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_fingerprint_is_an_error() {
        assert!(pinned_client_config("zz").is_err());
    }
}
