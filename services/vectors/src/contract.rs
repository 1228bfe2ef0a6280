//! One contract, every backend: qdrant-edge always; a Qdrant server when
//! `QDRANT_URL` is set; and, when `QDRANT_BIN` names a `qdrant` binary,
//! nodes started here: a single server through a `kill -9` and restart,
//! and a three-node cluster with one node killed mid-way (each skipped with
//! a notice otherwise).

use std::collections::BTreeMap;

use sovra_auth::{Acl, Principal};

use crate::{ClusterLayout, EdgeStore, ServerStore, VectorPoint, VectorQuery, VectorStore};

const DIM: usize = 8;

fn principal(subject: &str, tenant: &str, groups: &[&str]) -> Principal {
    Principal {
        subject: subject.into(),
        tenant: tenant.into(),
        roles: Default::default(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.01f32; DIM];
    v[i % DIM] = 1.0;
    v
}

fn point(
    chunk: &str,
    doc: &str,
    tenant: &str,
    groups: &[&str],
    users: &[&str],
    v: Vec<f32>,
) -> VectorPoint {
    VectorPoint {
        version: 1,
        chunk_id: chunk.into(),
        document_id: doc.into(),
        tenant: tenant.into(),
        acl: Acl {
            groups: groups.iter().map(|s| s.to_string()).collect(),
            users: users.iter().map(|s| s.to_string()).collect(),
        },
        metadata: BTreeMap::from([(
            "dept".to_string(),
            if doc == "d1" { "risk" } else { "ops" }.to_string(),
        )]),
        vector: v,
    }
}

async fn contract(store: &dyn VectorStore) {
    store
        .upsert(vec![
            point("d1:0", "d1", "bank", &["treasury"], &[], unit(0)),
            point("d1:1", "d1", "bank", &["treasury"], &[], unit(1)),
            point("d2:0", "d2", "bank", &["nursing"], &["alice"], unit(0)),
            point("d3:0", "d3", "clinic", &["treasury"], &[], unit(0)),
        ])
        .await
        .unwrap();
    let ids =
        |hits: Vec<crate::VectorHit>| hits.into_iter().map(|h| h.chunk_id).collect::<Vec<_>>();
    let treasurer = principal("bob", "bank", &["treasury"]);
    let hits = store
        .search(&VectorQuery::new(&treasurer, unit(0), 10))
        .await
        .unwrap();
    assert_eq!(
        ids(hits.clone()),
        vec!["d1:0", "d1:1"],
        "{}: tenant and group filter",
        store.backend()
    );
    assert!(hits[0].score > hits[1].score);
    let alice = principal("alice", "bank", &[]);
    assert_eq!(
        ids(store
            .search(&VectorQuery::new(&alice, unit(0), 10))
            .await
            .unwrap()),
        vec!["d2:0"]
    );
    let stranger = principal("eve", "bank", &["risk"]);
    assert!(
        store
            .search(&VectorQuery::new(&stranger, unit(0), 10))
            .await
            .unwrap()
            .is_empty()
    );
    let clinic = principal("carl", "clinic", &["treasury"]);
    assert_eq!(
        ids(store
            .search(&VectorQuery::new(&clinic, unit(0), 10))
            .await
            .unwrap()),
        vec!["d3:0"]
    );
    let mut q = VectorQuery::new(&treasurer, unit(0), 10);
    q.metadata.insert("dept".into(), "ops".into());
    assert!(store.search(&q).await.unwrap().is_empty());
    store.optimize().await.unwrap();
    assert_eq!(
        ids(store
            .search(&VectorQuery::new(&alice, unit(0), 10))
            .await
            .unwrap()),
        vec!["d2:0"],
        "after optimize"
    );
    // Upsert replaces by chunk id; delete removes a whole document.
    store
        .upsert(vec![point(
            "d1:1",
            "d1",
            "bank",
            &["treasury"],
            &[],
            unit(0),
        )])
        .await
        .unwrap();
    let key = |t: &str, d: &str| (t.to_owned(), d.to_owned());
    // Another tenant's document under the same id is its own document.
    store
        .upsert(vec![point(
            "d1:0",
            "d1",
            "clinic",
            &["treasury"],
            &[],
            unit(0),
        )])
        .await
        .unwrap();
    let state = |chunks, version| Some(crate::DocState { chunks, version });
    let counts = store.document_counts().await.unwrap();
    assert_eq!(counts.get(&key("bank", "d1")).copied(), state(2, Some(1)));
    assert_eq!(counts.get(&key("bank", "d2")).copied(), state(1, Some(1)));
    assert_eq!(counts.get(&key("clinic", "d1")).copied(), state(1, Some(1)));
    // Points of two versions of one document: the version is unknown.
    let mut newer = point("d2:1", "d2", "bank", &["nobody"], &[], unit(1));
    newer.version = 2;
    store.upsert(vec![newer]).await.unwrap();
    let counts = store.document_counts().await.unwrap();
    assert_eq!(counts.get(&key("bank", "d2")).copied(), state(2, None));
    store.delete_document("bank", "d1").await.unwrap();
    assert!(
        store
            .search(&VectorQuery::new(&treasurer, unit(0), 10))
            .await
            .unwrap()
            .is_empty()
    );
    let counts = store.document_counts().await.unwrap();
    assert_eq!(counts.get(&key("bank", "d1")), None);
    assert_eq!(
        counts.get(&key("clinic", "d1")).copied(),
        state(1, Some(1)),
        "the other tenant's d1 stays"
    );
    let nurse = principal("nina", "clinic", &["treasury"]);
    assert!(
        ids(store
            .search(&VectorQuery::new(&nurse, unit(0), 10))
            .await
            .unwrap())
        .contains(&"d1:0".to_owned())
    );
    store.delete_document("clinic", "d1").await.unwrap();
    assert_eq!(
        store
            .document_counts()
            .await
            .unwrap()
            .get(&key("clinic", "d1")),
        None
    );
}

#[tokio::test]
async fn edge_backend_meets_the_contract_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EdgeStore::open(dir.path(), DIM).unwrap();
        contract(&store).await;
    }
    let store = EdgeStore::open(dir.path(), DIM).unwrap();
    let alice = principal("alice", "bank", &[]);
    let hits = store
        .search(&VectorQuery::new(&alice, unit(0), 10))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1, "points survive a reopen");
}

#[tokio::test]
async fn server_backend_meets_the_contract() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!(
            "NOTICE: QDRANT_URL is not set; skipping the Qdrant server contract test (qdrant-edge ran it)"
        );
        return;
    };
    let collection = format!("sovra_contract_{}", uuid::Uuid::now_v7().simple());
    let store = ServerStore::connect(
        &url,
        std::env::var("QDRANT_API_KEY").ok(),
        &collection,
        DIM,
        Default::default(),
    )
    .await
    .unwrap();
    contract(&store).await;
}

/// Qdrant nodes run from `QDRANT_BIN` (a `qdrant` binary; none is in the
/// package registries, so these tests print a notice and pass without one).
mod nodes {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct Node {
        child: Option<Child>,
        pub http: u16,
        pub grpc: u16,
        pub p2p: u16,
        pub dir: std::path::PathBuf,
        bin: String,
        cluster: bool,
        bootstrap: Option<u16>,
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub fn bin() -> Option<String> {
        let bin = std::env::var("QDRANT_BIN").ok();
        if bin.is_none() {
            eprintln!("NOTICE: QDRANT_BIN is not set; skipping the tests that start Qdrant nodes");
        }
        bin
    }

    impl Node {
        /// A node storing under `dir`; in a cluster, joining the node whose
        /// peer-to-peer port is `bootstrap`.
        pub fn start(
            bin: &str,
            dir: &std::path::Path,
            cluster: bool,
            bootstrap: Option<u16>,
        ) -> Self {
            let mut node = Node {
                child: None,
                http: free_port(),
                grpc: free_port(),
                p2p: free_port(),
                dir: dir.to_owned(),
                bin: bin.to_owned(),
                cluster,
                bootstrap,
            };
            node.spawn();
            node
        }

        fn spawn(&mut self) {
            std::fs::create_dir_all(&self.dir).unwrap();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("qdrant.log"))
                .unwrap();
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
                .stdout(Stdio::from(log.try_clone().unwrap()))
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
            self.child = Some(cmd.spawn().unwrap());
        }

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
        pub fn restart(&mut self) {
            self.kill();
            self.spawn();
        }

        /// Waits until the node answers over REST and, in a cluster, knows
        /// `peers` peers.
        pub async fn ready(&self, peers: usize) {
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let path = if self.cluster { "cluster" } else { "readyz" };
                let got = client
                    .get(format!("http://127.0.0.1:{}/{path}", self.http))
                    .send()
                    .await;
                if let Ok(r) = got
                    && r.status().is_success()
                {
                    if !self.cluster {
                        return;
                    }
                    let v: serde_json::Value = r.json().await.unwrap();
                    let n = v["result"]["peers"].as_object().map_or(0, |p| p.len());
                    if n >= peers {
                        return;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "qdrant on {} not ready; see {}",
                    self.http,
                    self.dir.join("qdrant.log").display()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    impl Drop for Node {
        fn drop(&mut self) {
            self.kill();
        }
    }
}

/// A single Qdrant server: the contract, then acknowledged writes survive
/// a `kill -9` and restart, and the payload indexes are there.
#[tokio::test]
async fn server_backend_survives_a_restart_with_its_payload_indexes() {
    let Some(bin) = nodes::bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut node = nodes::Node::start(&bin, dir.path(), false, None);
    node.ready(1).await;
    let store = ServerStore::connect(&node.url(), None, "sovra_restart", DIM, Default::default())
        .await
        .unwrap();
    contract(&store).await;
    store
        .upsert(vec![point("k:0", "k", "bank", &["board"], &[], unit(2))])
        .await
        .unwrap();
    let before = store.document_counts().await.unwrap();
    node.restart();
    node.ready(1).await;
    let store = ServerStore::connect(&node.url(), None, "sovra_restart", DIM, Default::default())
        .await
        .unwrap();
    assert_eq!(store.document_counts().await.unwrap(), before);
    let info = store
        .client
        .collection_info("sovra_restart")
        .await
        .unwrap()
        .result
        .unwrap();
    for field in crate::KEYWORD_FIELDS {
        assert!(
            info.payload_schema.contains_key(field),
            "no index on {field}"
        );
    }
    let board = principal("bea", "bank", &["board"]);
    assert_eq!(
        store
            .search(&VectorQuery::new(&board, unit(2), 10))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Three Qdrant nodes on loopback: the collection Sovra creates has the
/// configured shards and replication, the contract holds, and with one node
/// killed mid-way (`kill -9`) no search fails and no acknowledged write is
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_meets_the_contract_and_survives_a_killed_node() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let Some(bin) = nodes::bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = nodes::Node::start(&bin, &dir.path().join("n1"), true, None);
    first.ready(1).await;
    let second = nodes::Node::start(&bin, &dir.path().join("n2"), true, Some(first.p2p));
    second.ready(2).await;
    let mut third = nodes::Node::start(&bin, &dir.path().join("n3"), true, Some(first.p2p));
    third.ready(3).await;
    first.ready(3).await;
    let layout = ClusterLayout {
        shards: 3,
        replication_factor: 2,
    };

    let store = ServerStore::connect(&first.url(), None, "sovra_cluster", DIM, layout)
        .await
        .unwrap();
    let params = store
        .client
        .collection_info("sovra_cluster")
        .await
        .unwrap()
        .result
        .and_then(|i| i.config)
        .and_then(|c| c.params)
        .unwrap();
    assert_eq!(params.shard_number, 3);
    assert_eq!(params.replication_factor, Some(2));
    contract(&store).await;

    // Writes and searches through the first node; the third dies mid-way.
    let store = Arc::new(
        ServerStore::connect(&first.url(), None, "sovra_cluster_kill", DIM, layout)
            .await
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (store, stop, searches) = (store.clone(), stop.clone(), searches.clone());
        tokio::spawn(async move {
            let board = principal("bea", "bank", &["board"]);
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match store.search(&VectorQuery::new(&board, unit(0), 5)).await {
                    Ok(_) => {
                        searches.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..120 {
        if i == 40 {
            third.kill();
        }
        let doc = format!("w{i}");
        let p = point(&format!("{doc}:0"), &doc, "bank", &["board"], &[], unit(i));
        match store.upsert(vec![p]).await {
            Ok(()) => acknowledged.push(doc),
            Err(_) => refused += 1,
        }
    }
    stop.store(true, Ordering::SeqCst);
    let failures = reader.await.unwrap();
    assert!(failures.is_empty(), "failed searches: {failures:?}");
    assert!(searches.load(Ordering::SeqCst) > 10);
    let counts = store.document_counts().await.unwrap();
    for doc in &acknowledged {
        assert_eq!(
            counts
                .get(&("bank".to_owned(), doc.clone()))
                .map(|s| s.chunks),
            Some(1),
            "acknowledged write {doc} lost"
        );
    }
    println!(
        "cluster: {} writes acknowledged, {refused} refused, {} searches, none failed, a node killed after 40 writes",
        acknowledged.len(),
        searches.load(Ordering::SeqCst)
    );
    drop(second);
}
