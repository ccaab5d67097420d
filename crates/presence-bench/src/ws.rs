//! Minimal WebSocket client pieces shared by the benchmarks.

use anyhow::Context;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects with a bearer token and waits for the `ready` frame.
pub async fn connect(url: &str, token: &str) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    loop {
        let frame = socket
            .next()
            .await
            .context("socket closed before ready")??;
        if let Ok(text) = frame.to_text()
            && text.contains("\"type\":\"ready\"")
        {
            return Ok(socket);
        }
    }
}

/// The value of a string field `"name":"value"` in a JSON text, without a
/// full parse (the bench must not be slower than the server).
pub fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = json.find(&key)? + key.len();
    let end = json[start..].find('"')? + start;
    Some(&json[start..end])
}
