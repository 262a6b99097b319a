//! The MQTT session's options: broker, credentials, TLS (rustls on ring, as the registry
//! client), the last will, and limits that keep a dead broker from costing memory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_spec::config::{MqttTransport, ReportConfig};
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::document::Topics;
use crate::identity::HostIdentity;

/// Silence on the link this long (twice, in rumqttc) means it is gone.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// A connect (TCP, TLS and CONNACK) or a flush that takes longer has failed.
pub const CONNECTION_TIMEOUT_SECS: u64 = 10;
/// QoS 1 messages unacknowledged at once: what a stalled broker can make the agent hold.
pub const INFLIGHT: u16 = 8;
/// The largest message: a status of some thousand containers; a bigger one is not sent.
pub const MAX_MESSAGE: usize = 4 << 20;

/// Options for a clean session (nothing of an old session is replayed: the reporter
/// publishes the current state on every connect) whose will marks the host offline.
pub fn options(
    report: &ReportConfig,
    id: &HostIdentity,
    topics: &Topics,
) -> Result<MqttOptions, String> {
    let client_id = format!(
        "berth-{}-{}",
        id.host_id.as_deref().unwrap_or("unknown"),
        id.instance
    );
    let mut o = MqttOptions::new(client_id, report.mqtt.host.clone(), report.mqtt.port);
    o.set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_inflight(INFLIGHT)
        .set_max_packet_size(64 << 10, MAX_MESSAGE + (64 << 10))
        .set_last_will(LastWill::new(
            &topics.online,
            "false",
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &report.username {
        let password = match &report.password_file {
            Some(p) => read_password(p)?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if report.mqtt.transport == MqttTransport::Tls {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            tls_config(report)?,
        ))));
    }
    Ok(o)
}

/// The password file's first line (a trailing newline is not part of the password).
fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

fn tls_config(report: &ReportConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &report.ca_file {
        Some(path) => {
            let certs = pem_certs(path, "ca_file")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "ca_file {}: no usable PEM certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading system certificates");
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots);
    match (&report.client_cert, &report.client_key) {
        (Some(cert), Some(key)) => {
            let chain = pem_certs(cert, "client_cert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert {}: {e}", cert.display()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn pem_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(extra: &str) -> ReportConfig {
        berth_spec::Config::from_toml_str(&format!("[report]\n{extra}"))
            .unwrap()
            .report
            .unwrap()
    }

    fn id() -> HostIdentity {
        HostIdentity {
            host_id: Some("h1".into()),
            labels: Default::default(),
            instance: "edge".into(),
        }
    }

    #[test]
    fn plain_with_password_and_will() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\nignored\n").unwrap();
        let r = report(&format!(
            "mqtt = \"mqtt://127.0.0.1:1999\"\nusername = \"edge\"\npassword_file = {pw:?}\n"
        ));
        let topics = Topics::under("berth/h1");
        let o = options(&r, &id(), &topics).unwrap();
        assert_eq!(o.client_id(), "berth-h1-edge");
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 1999));
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("edge", "s3cret")
        );
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "berth/h1/online");
        assert_eq!(&will.message[..], b"false");
        assert!(will.retain);
        assert!(o.clean_session());
    }

    #[test]
    fn file_errors_name_the_file() {
        let r = report("mqtt = \"mqtts://h\"\nca_file = \"/nonexistent/ca.pem\"\n");
        let e = options(&r, &id(), &Topics::under("x")).unwrap_err();
        assert!(e.contains("ca_file /nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let r = report(&format!("mqtt = \"mqtts://h\"\nca_file = {empty:?}\n"));
        let e = options(&r, &id(), &Topics::under("x")).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let r =
            report("mqtt = \"mqtt://h\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n");
        let e = options(&r, &id(), &Topics::under("x")).unwrap_err();
        assert!(e.contains("password_file /nonexistent/pw"), "{e}");
    }
}
