//! One contract, every backend: qdrant-edge always; a Qdrant server when
//! `QDRANT_URL` is set; and, when `QDRANT_BIN` names a `qdrant` binary,
//! nodes started here: a single server through a `kill -9` and restart,
//! and a three-node cluster with one node killed mid-way (each skipped with
//! a notice otherwise).

use std::collections::BTreeMap;

use sovra_auth::{Acl, Principal};

use crate::nodes::QdrantNode;
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
    narrow_readers_get_the_exact_nearest_points(store).await;
}

/// A reader admitted to a tenth of 3,000 points gets exactly the nearest
/// of those it may see, in order (brute force here is the reference).
async fn narrow_readers_get_the_exact_nearest_points(store: &dyn VectorStore) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let groups = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"];
    let points: Vec<VectorPoint> = (0..3000)
        .map(|i| {
            let v: Vec<f32> = (0..DIM).map(|_| next()).collect();
            let (chunk, doc) = (format!("n{i}:0"), format!("n{i}"));
            point(&chunk, &doc, "exact", &[groups[i % 10]], &[], v)
        })
        .collect();
    for batch in points.chunks(500) {
        store.upsert(batch.to_vec()).await.unwrap();
    }
    let query: Vec<f32> = (0..DIM).map(|_| next()).collect();
    let cosine = |v: &[f32]| {
        let dot: f32 = v.iter().zip(&query).map(|(a, b)| a * b).sum();
        let norm = |x: &[f32]| x.iter().map(|a| a * a).sum::<f32>().sqrt();
        dot / (norm(v) * norm(&query))
    };
    let mut expected: Vec<(f32, String)> = points
        .iter()
        .filter(|p| p.acl.groups == ["n3"])
        .map(|p| (cosine(&p.vector), p.chunk_id.clone()))
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));
    let expected: Vec<String> = expected.into_iter().take(20).map(|(_, id)| id).collect();
    let reader = principal("nora", "exact", &["n3"]);
    let hits = store
        .search(&VectorQuery::new(&reader, query.clone(), 20))
        .await
        .unwrap();
    let got: Vec<String> = hits.into_iter().map(|h| h.chunk_id).collect();
    assert_eq!(got, expected);
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

/// A single Qdrant server: the contract, then acknowledged writes survive
/// a `kill -9` and restart, and the payload indexes are there.
#[tokio::test]
async fn server_backend_survives_a_restart_with_its_payload_indexes() {
    let Some(bin) = QdrantNode::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut node = QdrantNode::start(&bin, dir.path(), false, None).unwrap();
    node.ready(1).await.unwrap();
    let store = ServerStore::connect(&node.url(), None, "sovra_restart", DIM, Default::default())
        .await
        .unwrap();
    contract(&store).await;
    store
        .upsert(vec![point("k:0", "k", "bank", &["board"], &[], unit(2))])
        .await
        .unwrap();
    let before = store.document_counts().await.unwrap();
    node.restart().unwrap();
    node.ready(1).await.unwrap();
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

    let Some(bin) = QdrantNode::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = QdrantNode::cluster(&bin, dir.path()).await.unwrap();
    let first = nodes[0].url();
    let layout = ClusterLayout {
        shards: 3,
        replication_factor: 2,
    };

    let store = ServerStore::connect(&first, None, "sovra_cluster", DIM, layout)
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
        ServerStore::connect(&first, None, "sovra_cluster_kill", DIM, layout)
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
            nodes[2].kill();
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
}
