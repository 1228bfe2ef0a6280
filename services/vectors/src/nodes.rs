//! Qdrant nodes started from a `qdrant` binary, for tests (the feature
//! `test-nodes`, and this crate's own tests). No Qdrant server is in the
//! package registries: a test that needs one names the binary in
//! `QDRANT_BIN` and prints a notice and passes without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node: its ports, storage folder and process.
pub struct QdrantNode {
    child: Option<Child>,
    pub http: u16,
    pub grpc: u16,
    pub p2p: u16,
    dir: PathBuf,
    bin: PathBuf,
    cluster: bool,
    bootstrap: Option<u16>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl QdrantNode {
    /// The binary named by `QDRANT_BIN`, or a notice and `None`.
    pub fn binary() -> Option<PathBuf> {
        let bin = std::env::var_os("QDRANT_BIN").map(PathBuf::from);
        if bin.is_none() {
            eprintln!("NOTICE: QDRANT_BIN is not set; skipping a test that starts Qdrant nodes");
        }
        bin
    }

    /// A node storing under `dir` (its log in `dir/qdrant.log`); in a
    /// cluster, joining the node whose peer-to-peer port is `bootstrap`.
    pub fn start(
        bin: &Path,
        dir: &Path,
        cluster: bool,
        bootstrap: Option<u16>,
    ) -> std::io::Result<Self> {
        let mut node = Self {
            child: None,
            http: free_port()?,
            grpc: free_port()?,
            p2p: free_port()?,
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            cluster,
            bootstrap,
        };
        node.spawn()?;
        Ok(node)
    }

    /// Three nodes on loopback, the second and third joined to the first,
    /// ready when the first knows all three.
    pub async fn cluster(bin: &Path, dir: &Path) -> Result<Vec<Self>, String> {
        let first = Self::start(bin, &dir.join("n1"), true, None).map_err(|e| e.to_string())?;
        first.ready(1).await?;
        let mut nodes = vec![first];
        for i in 2..=3 {
            let p2p = nodes[0].p2p;
            let node = Self::start(bin, &dir.join(format!("n{i}")), true, Some(p2p))
                .map_err(|e| e.to_string())?;
            node.ready(i).await?;
            nodes.push(node);
        }
        nodes[0].ready(3).await?;
        Ok(nodes)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("qdrant.log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .env("QDRANT__SERVICE__HTTP_PORT", self.http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", self.dir.join("storage"))
            .env(
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                self.dir.join("snapshots"),
            )
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if self.cluster {
            cmd.env("QDRANT__CLUSTER__ENABLED", "true")
                .env("QDRANT__CLUSTER__P2P__PORT", self.p2p.to_string())
                .arg("--uri")
                .arg(format!("http://127.0.0.1:{}", self.p2p));
            if let Some(b) = self.bootstrap {
                cmd.arg("--bootstrap").arg(format!("http://127.0.0.1:{b}"));
            }
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// The gRPC address (what `ServerStore` and `vectors.url` take).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same storage and ports.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Waits (at most 90 s) until the node answers over REST and, in a
    /// cluster, knows `peers` peers.
    pub async fn ready(&self, peers: usize) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        let path = if self.cluster { "cluster" } else { "readyz" };
        loop {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{}/{path}", self.http))
                .send()
                .await
                && r.status().is_success()
            {
                if !self.cluster {
                    return Ok(());
                }
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    let n = v["result"]["peers"].as_object().map_or(0, |p| p.len());
                    if n >= peers {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "qdrant on port {} not ready; see {}",
                    self.http,
                    self.dir.join("qdrant.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for QdrantNode {
    fn drop(&mut self) {
        self.kill();
    }
}
