//! Ingestion throughput and permission-filtered search latency.
//!
//! `bench/ingest-search` runs this (release build). It prints, in one run:
//! * documents/s, MB/s and chunks/s through the whole write path (parse,
//!   chunk with the embedding tokenizer, catalog transaction in SQLite,
//!   Tantivy commit per document so each is searchable on return);
//! * search p50/p99 at 10,000 and 100,000 chunks with the ACL filter on,
//!   for a narrow principal (2 of 20 groups) and a broad one (all 20), side
//!   by side, so the cost of the filter shows as a ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sovra_auth::{Acl, Principal};
use sovra_catalog::Catalog;
use sovra_index::{ChunkEntry, LexicalIndex, SearchRequest};
use sovra_ingest::{Chunker, ChunkerConfig, DocumentService, Format, Limits, NewDocument};

const WORDS: &[&str] = &[
    "policy",
    "procedure",
    "limit",
    "approval",
    "treasury",
    "liquidity",
    "ratio",
    "capital",
    "customer",
    "account",
    "deposit",
    "payment",
    "sanctions",
    "screening",
    "report",
    "patient",
    "nurse",
    "medication",
    "dose",
    "infusion",
    "ward",
    "triage",
    "sepsis",
    "antibiotic",
    "hygiene",
    "escalation",
    "incident",
    "audit",
    "record",
    "retention",
    "employee",
    "leave",
    "request",
    "manager",
    "review",
    "quarter",
    "annual",
    "risk",
    "control",
    "register",
    "cuti",
    "karyawan",
    "pasien",
    "年假",
    "员工",
    "客户",
    "报告",
    "审批",
    "风险",
    "药物",
];
const GROUPS: usize = 20;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn paragraph(rng: &mut Rng, words: usize) -> String {
    let mut s: Vec<&str> = (0..words).map(|_| rng.pick(WORDS)).collect();
    s.push("POL-");
    let mut p = s.join(" ");
    p.push_str(&format!("{:04}.", rng.next() % 10_000));
    p
}

fn document(rng: &mut Rng, paragraphs: usize) -> String {
    (0..paragraphs)
        .map(|_| {
            let words = 40 + (rng.next() % 40) as usize;
            paragraph(rng, words)
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn acl(rng: &mut Rng) -> Acl {
    Acl {
        groups: vec![format!("g{}", rng.next() % GROUPS as u64)],
        users: vec![],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn principal(groups: Vec<String>) -> Principal {
    Principal {
        subject: "bench".into(),
        tenant: "bank".into(),
        roles: Default::default(),
        groups,
    }
}

fn search_latency(
    index: &LexicalIndex,
    principal: &Principal,
    rng: &mut Rng,
    n: usize,
) -> (f64, f64, f64) {
    let mut times = Vec::with_capacity(n);
    let mut hits = 0usize;
    for _ in 0..n {
        let q = format!(
            "{} {} {}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.pick(WORDS)
        );
        let started = Instant::now();
        hits += index
            .search(&SearchRequest::new(principal, &q, 10))
            .unwrap()
            .len();
        times.push(started.elapsed());
    }
    times.sort();
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        hits as f64 / n as f64,
    )
}

fn models_dir() -> std::path::PathBuf {
    std::env::var("SOVRA_MODELS_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sovra/models")
        })
}

#[tokio::main]
async fn main() {
    let docs: usize = std::env::var("BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tokenizer = models_dir().join("all-minilm-l6-v2/tokenizer.json");
    let chunker = Arc::new(
        Chunker::from_file(&tokenizer, ChunkerConfig::default()).expect("run scripts/setup-models"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);

    // ---- Ingestion through the whole write path ----
    let url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    let store = sovra_audit::SqlStore::connect(&url, 4, Duration::from_secs(5))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let index = Arc::new(LexicalIndex::open(&dir.path().join("tantivy")).unwrap());
    let service = DocumentService::new(
        Catalog::new(store.pool().clone(), false),
        index.clone(),
        chunker.clone(),
        Limits::default(),
    );
    let bodies: Vec<String> = (0..docs)
        .map(|_| {
            let paragraphs = 3 + (rng.next() % 6) as usize;
            document(&mut rng, paragraphs)
        })
        .collect();
    let bytes: usize = bodies.iter().map(String::len).sum();
    let started = Instant::now();
    let mut chunks = 0i64;
    for (i, body) in bodies.into_iter().enumerate() {
        let out = service
            .ingest(NewDocument {
                id: format!("doc-{i}"),
                tenant: "bank".into(),
                title: format!("Policy {i}"),
                source: "bench".into(),
                format: Format::Markdown,
                bytes: body.into_bytes(),
                acl: acl(&mut rng),
                metadata: BTreeMap::new(),
                created_by: "bench".into(),
            })
            .await
            .unwrap();
        chunks += out.document.chunk_count;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "Sovra ingestion and search benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!(
        "ingestion, {docs} documents ({:.1} MB, {chunks} chunks), parse + chunk + SQLite catalog + Tantivy commit per document:",
        bytes as f64 / 1e6
    );
    println!(
        "  {:.1} documents/s   {:.2} MB/s   {:.0} chunks/s",
        docs as f64 / secs,
        bytes as f64 / 1e6 / secs,
        chunks as f64 / secs
    );
    drop(service);

    // ---- Search latency at 10k and 100k chunks, ACL filter on ----
    let search_index = LexicalIndex::open(&dir.path().join("search")).unwrap();
    let narrow = principal(vec!["g3".into(), "g7".into()]);
    let broad = principal((0..GROUPS).map(|g| format!("g{g}")).collect());
    println!();
    println!(
        "search, top 10, 500 random 3-word queries each (BM25, tenant + ACL clauses inside the query):"
    );
    println!(
        "  {:>8}  {:>24}  {:>24}  {:>10}",
        "chunks", "narrow (2/20 groups) p50/p99 ms", "broad (20/20) p50/p99 ms", "p50 ratio"
    );
    let mut indexed = 0usize;
    for target in [10_000usize, 100_000] {
        let load = Instant::now();
        while indexed < target {
            let batch: Vec<(String, Vec<ChunkEntry>)> = (indexed..(indexed + 5_000).min(target))
                .map(|i| {
                    let id = format!("s{i}");
                    let entry = ChunkEntry {
                        document_id: id.clone(),
                        chunk_id: format!("{id}:0"),
                        ordinal: 0,
                        tenant: "bank".into(),
                        title: format!("Policy {i}"),
                        text: paragraph(&mut rng, 60),
                        acl: acl(&mut rng),
                        metadata: BTreeMap::new(),
                    };
                    (id, vec![entry])
                })
                .collect();
            let refs: Vec<(&str, &[ChunkEntry])> = batch
                .iter()
                .map(|(id, c)| (id.as_str(), c.as_slice()))
                .collect();
            search_index.replace_documents(&refs).unwrap();
            indexed += batch.len();
        }
        let load_secs = load.elapsed().as_secs_f64();
        let (n50, n99, nh) = search_latency(&search_index, &narrow, &mut rng, 500);
        let (b50, b99, bh) = search_latency(&search_index, &broad, &mut rng, 500);
        println!(
            "  {:>8}  {:>15.2} / {:<7.2}  {:>15.2} / {:<7.2}  {:>9.2}x   (hits/query {nh:.1} vs {bh:.1}; bulk-indexed in {load_secs:.1}s)",
            search_index.num_chunks(),
            n50,
            n99,
            b50,
            b99,
            n50 / b50
        );
    }
}
