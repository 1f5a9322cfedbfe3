//! What buildlogs' tests and benchmark start for themselves: a real `redis-server` on a free
//! loopback port ([`RedisServer`]), or a local Redis Cluster of 3 masters and 3 replicas
//! ([`RedisCluster`]) that a test can fail over and reshard; never the machine's 6379, each
//! with a scratch directory of its own, killed when dropped.
#![forbid(unsafe_code)]

pub mod cluster;
mod redis_server;
pub mod slot;

pub use cluster::{ClusterConfig, RedisCluster};
pub use redis_server::RedisServer;

/// A free loopback port, never Redis's default 6379.
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind port 0")
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if port != 6379 {
            return port;
        }
    }
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
