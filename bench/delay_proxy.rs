//! A TCP proxy on 127.0.0.1 that adds a fixed delay to every byte each
//! way, like a link with that much latency and no bandwidth limit: each
//! piece read is forwarded when its own deadline comes, never after a
//! sleep of the piece before it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::channel;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub struct DelayProxy {
    listener: TcpListener,
    upstream: SocketAddr,
    delay: Duration,
}

impl DelayProxy {
    /// Binds the proxy; nothing is served until `serve`.
    pub fn bind(upstream: SocketAddr, delay: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the delay proxy")?;
        Ok(Self {
            listener,
            upstream,
            delay,
        })
    }

    pub fn addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves from threads of its own until the process ends.
    pub fn serve(self) {
        thread::spawn(move || {
            for client in self.listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(self.upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                forward(client, server2, self.delay);
                forward(server, client2, self.delay);
            }
        });
    }
}

/// Copies `from` to `to`, each piece `delay` after it arrived.
fn forward(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buffer = vec![0; 64 << 10];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer once the queue is drained.
    });
    thread::spawn(move || {
        for (due, piece) in rx {
            thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&piece).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
