//! TLS on the device side: a device with a client certificate from the configured CA gets its
//! data through; one without is refused at the handshake.

use std::sync::Arc;

use e2e_tests::broker_peer_and_connector;
use e2e_tests::peer::telemetry_entries;
use e2e_tests::pki::{Issued, TestCa};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The device CA, the connector's server certificate and a device's client certificate.
struct Pki {
    ca: TestCa,
    server: Issued,
    client: Issued,
}

fn pki() -> Pki {
    let ca = TestCa::new("device CA");
    Pki {
        server: ca.server(&["localhost", "127.0.0.1"]),
        client: ca.client("meter-17", None, false),
        ca,
    }
}

fn client_config(pki: &Pki, with_certificate: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(if with_certificate {
        builder
            .with_client_auth_cert(vec![pki.client.der.clone()], pki.client.key_der.clone_key())
            .unwrap()
    } else {
        builder.with_no_client_auth()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_device_connections() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let tls = json!({"certFile": write("server.crt", &pki.server.pem), "keyFile": write("server.key", &pki.server.key_pem),
                     "clientCaFile": write("ca.crt", &pki.ca.pem)});
    let config = json!({
        "name": "TLS",
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0, "tls": tls},
        "devices": [{"address": "*:*", "deviceName": "Secure Meter", "telemetry": [{"key": "v"}]}]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let name = ServerName::try_from("localhost").unwrap();

    let tcp = TcpStream::connect(connector.local_addr).await.unwrap();
    let mut device = TlsConnector::from(client_config(&pki, true))
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    device.write_all(b"42").await.unwrap();
    device.flush().await.unwrap();
    let telemetry = peer.next_on("v1/gateway/telemetry").await;
    assert_eq!(telemetry_entries(&telemetry)[0].2, json!({"v": "42"}));

    // No client certificate: the server refuses the handshake (TLS 1.3 reports it on first read).
    let tcp = TcpStream::connect(connector.local_addr).await.unwrap();
    let refused = match TlsConnector::from(client_config(&pki, false))
        .connect(name, tcp)
        .await
    {
        Err(_) => true,
        Ok(mut stream) => {
            let _ = stream.write_all(b"43").await;
            let mut buffer = [0u8; 1];
            !matches!(stream.read(&mut buffer).await, Ok(n) if n > 0)
        }
    };
    assert!(refused);
    connector.wait_for_log("TLS handshake failed");
}

#[test]
fn tls_outside_tcp_server_mode_is_a_config_error() {
    let bad = json!({"socket": {"type": "UDP", "tls": {"certFile": "a", "keyFile": "b"}},
                     "devices": [{"address": "*:*", "deviceName": "d"}]});
    let output = e2e_tests::connector::validate(&bad.to_string());
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("error: socket.tls: TLS applies to TCP server mode only"));
}
