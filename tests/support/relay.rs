//! A TCP relay between a driver and a database server that records every byte, each way, and the
//! first 8 bytes each connection sends (PostgreSQL's startup, SSL or cancel request: length and
//! code), so a test can show what crosses the wire in clear.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub struct Relay {
    pub port: u16,
    to_server: Arc<Mutex<Vec<u8>>>,
    to_client: Arc<Mutex<Vec<u8>>>,
    openings: Arc<Mutex<Vec<[u8; 8]>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on a loopback port and forwards each connection to `server_port`.
    pub async fn start(server_port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let to_server: Arc<Mutex<Vec<u8>>> = Arc::default();
        let to_client: Arc<Mutex<Vec<u8>>> = Arc::default();
        let openings: Arc<Mutex<Vec<[u8; 8]>>> = Arc::default();
        let (up, down, opened) = (to_server.clone(), to_client.clone(), openings.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (up, down, opened) = (up.clone(), down.clone(), opened.clone());
                tokio::spawn(async move {
                    let Ok(server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", server_port)).await
                    else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pipe(client_read, server_write, up, Some(opened)),
                        pipe(server_read, client_write, down, None)
                    );
                });
            }
        });
        Relay {
            port,
            to_server,
            to_client,
            openings,
            task,
        }
    }

    /// Everything recorded so far (each way, and the connections' openings); the record starts
    /// again empty.
    pub fn take(&self) -> (Vec<u8>, Vec<u8>, Vec<[u8; 8]>) {
        (
            std::mem::take(&mut *self.to_server.lock().unwrap()),
            std::mem::take(&mut *self.to_client.lock().unwrap()),
            std::mem::take(&mut *self.openings.lock().unwrap()),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, recording the bytes; with `openings`, also the first 8 bytes.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    record: Arc<Mutex<Vec<u8>>>,
    openings: Option<Arc<Mutex<Vec<[u8; 8]>>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut first, mut seen) = ([0u8; 8], 0usize);
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(openings) = &openings
            && seen < first.len()
        {
            let take = n.min(first.len() - seen);
            first[seen..seen + take].copy_from_slice(&buf[..take]);
            seen += take;
            if seen == first.len() {
                openings.lock().unwrap().push(first);
            }
        }
        record.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Whether `needle` appears anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
