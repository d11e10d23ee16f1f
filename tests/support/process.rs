//! Processes started by the tests that go through the real binary (or a
//! real Prometheus or etcd): a guard that kills its process by PID when
//! dropped, a failing assertion included, and free loopback ports.

// Each test binary uses a part of this file.
#![allow(dead_code)]

use std::process::Child;

/// Kills the process when dropped (SIGKILL through `Child`, then reaps it).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds 127.0.0.1:0");
    listener.local_addr().expect("has an address").port()
}
