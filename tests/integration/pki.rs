//! Throwaway certificate authorities for the TLS tests, written as PEM files
//! into a temp dir: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, a client certificate, and a second CA nobody trusts with its
//! own server and client certificates.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its key, as files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA and what it signed.
pub struct Authority {
    pub ca: PathBuf,
    pub server: Leaf,
    pub client: Leaf,
}

/// The trusted authority and an untrusted one.
pub struct Pki {
    pub dir: TempDir,
    pub trusted: Authority,
    pub untrusted: Authority,
}

impl Pki {
    pub fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let trusted = authority(&dir, "trusted");
        let untrusted = authority(&dir, "untrusted");
        Self {
            dir,
            trusted,
            untrusted,
        }
    }
}

fn authority(dir: &TempDir, name: &str) -> Authority {
    let write = |file: &str, text: String| {
        let path = dir.path().join(format!("{name}-{file}"));
        std::fs::write(&path, text).expect("PEM file");
        path
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        DnType::CommonName,
        format!("llm-cache-exporter test CA ({name})"),
    );
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let leaf = |file: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &ca).expect("leaf certificate");
        Leaf {
            cert: write(&format!("{file}.crt"), cert.pem()),
            key: write(&format!("{file}.key"), key.serialize_pem()),
        }
    };
    let server = leaf(
        "server",
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = leaf(
        "client",
        vec!["prometheus".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Authority {
        ca: write("ca.crt", ca.pem()),
        server,
        client,
    }
}
