//! Identity key and webrtc certificate files: created once, then read back on every start.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use libp2p::identity::Keypair;
use libp2p_webrtc::tokio::Certificate;

/// Most bytes a key or certificate file may hold; both are a few hundred bytes.
const MAX_FILE: u64 = 16 * 1024;

/// Reads the protobuf-encoded keypair at `path`, or creates a new ed25519 one there (mode 0600).
pub fn load_or_create_keypair(path: &Path) -> anyhow::Result<Keypair> {
    if let Some(bytes) = read_small(path)? {
        return Keypair::from_protobuf_encoding(&bytes).with_context(|| {
            format!(
                "{} is not a libp2p identity key; move it away to create a new identity",
                path.display()
            )
        });
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .context("encoding a new identity key")?;
    write_private(path, &bytes)?;
    Ok(key)
}

/// Reads the webrtc certificate (PEM) at `path`, or creates one there (mode 0600).
pub fn load_or_create_certificate(path: &Path) -> anyhow::Result<Certificate> {
    if let Some(bytes) = read_small(path)? {
        let pem = String::from_utf8(bytes)
            .with_context(|| format!("{} is not a PEM file", path.display()))?;
        return Certificate::from_pem(&pem).with_context(|| {
            format!(
                "{} is not a webrtc certificate; move it away to create a new one (the /certhash in our addresses will change)",
                path.display()
            )
        });
    }
    let cert =
        Certificate::generate(&mut rand010::rng()).context("generating a webrtc certificate")?;
    write_private(path, cert.serialize_pem().as_bytes())?;
    Ok(cert)
}

fn read_small(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_FILE => bail!(
            "{} is {} bytes, more than a key file can be ({MAX_FILE})",
            path.display(),
            meta.len()
        ),
        Ok(_) => fs::read(path)
            .map(Some)
            .with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes to a temporary file, syncs it and renames it over `path`, so a crash never leaves a
/// half-written key behind.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_certificate_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = load_or_create_keypair(&dir.path().join("id.key")).unwrap();
        let k2 = load_or_create_keypair(&dir.path().join("id.key")).unwrap();
        assert_eq!(k1.public(), k2.public());
        let c1 = load_or_create_certificate(&dir.path().join("webrtc.pem")).unwrap();
        let c2 = load_or_create_certificate(&dir.path().join("webrtc.pem")).unwrap();
        assert_eq!(c1.fingerprint(), c2.fingerprint());
    }

    #[test]
    fn damaged_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        fs::write(&path, b"not a key").unwrap();
        let err = load_or_create_keypair(&path).unwrap_err().to_string();
        assert!(err.contains("not a libp2p identity key"), "{err}");
        fs::write(&path, vec![0u8; 20_000]).unwrap();
        let err = load_or_create_keypair(&path).unwrap_err().to_string();
        assert!(err.contains("more than a key file"), "{err}");
    }
}
