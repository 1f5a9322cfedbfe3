//! One `redis-server` of a test's own.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use crate::{TempDir, free_port};

/// A `redis-server` on a free port with a directory of its own, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    pub port: u16,
    persistent: bool,
    extra: Vec<String>,
    dir: Option<TempDir>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::launch(
            free_port(),
            TempDir::new("buildlogs-redis"),
            false,
            Vec::new(),
        )
    }

    /// With extra `redis-server` arguments (`["--maxclients", "15000"]`).
    pub fn start_with(args: &[&str]) -> Self {
        let extra = args.iter().map(|a| (*a).to_owned()).collect();
        Self::launch(free_port(), TempDir::new("buildlogs-redis"), false, extra)
    }

    /// With an append-only file fsynced on every write, so data survives a restart.
    pub fn start_persistent() -> Self {
        Self::launch(
            free_port(),
            TempDir::new("buildlogs-redis"),
            true,
            Vec::new(),
        )
    }

    /// Kills it and starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        let dir = self
            .dir
            .take()
            .expect("the directory is kept between restarts");
        let fresh = Self::launch(
            self.port,
            dir,
            self.persistent,
            std::mem::take(&mut self.extra),
        );
        *self = fresh;
    }

    fn launch(port: u16, dir: TempDir, persistent: bool, extra: Vec<String>) -> Self {
        assert_ne!(port, 6379, "never the machine's Redis");
        let persistence: &[&str] = if persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(persistence)
            .args(["--dir", dir.path().to_str().expect("a UTF-8 temp path")])
            .args(["--loglevel", "notice", "--daemonize", "no"])
            .args(&extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup installs it)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Ready to accept connections") => break,
                Some(Ok(_)) => continue,
                _ => panic!("redis-server on port {port} exited before it was ready"),
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            port,
            persistent,
            extra,
            dir: Some(dir),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a valid URL")
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test's redis-server")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process without killing it (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (`-STOP`, `-KILL`, …) to a process.
pub(crate) fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill {signal} {pid} failed");
}
