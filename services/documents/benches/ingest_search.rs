//! Ingestion throughput, embedding throughput against Python onnxruntime,
//! and permission-filtered search latency (lexical and hybrid) with memory.
//!
//! `bench/ingest-search` runs this (release build). It prints, in one run:
//! * chunks/s of the embedder alone on the chunks of the bench's documents,
//!   and documents/s and chunks/s through the whole write path (parse,
//!   chunk, embed, SQLite catalog transaction, qdrant-edge write, Tantivy
//!   commit; searchable on return) one document per call and in bulk, each
//!   as a ratio to the embedder alone;
//! * the latency (p50/p99) of writing a one-chunk document, with one writer
//!   and with eight concurrent writers (committed together), and each step
//!   of such a write alone (embedding, Tantivy commit, qdrant-edge write,
//!   catalog transaction);
//! * embedding chunks/s of Sovra's embedder and of Python onnxruntime on the
//!   same model, batch size and thread count, and the ratio;
//! * lexical and hybrid search p50/p99 at 10,000 and 100,000 chunks with the
//!   ACL filter on, narrow (2 of 20 groups) and broad (20 of 20) principals
//!   side by side, and the process's resident memory at each size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sovra_auth::{Acl, Principal};
use sovra_catalog::{Catalog, ChunkRow, Document};
use sovra_documents::{DocumentService, NewDocument};
use sovra_index::{ChunkEntry, LexicalIndex, SearchRequest};
use sovra_inference::{Embedder, EmbeddingModel, OnnxEmbedder, TextKind};
use sovra_ingest::{Chunker, ChunkerConfig, Format, Limits};
use sovra_retrieval::{Mode, Retriever};
use sovra_vectors::{EdgeStore, VectorPoint, VectorStore};

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
const BATCH: usize = 32;
const THREADS: usize = 2;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A random three-word search query.
    fn query(&mut self) -> String {
        format!(
            "{} {} {}",
            self.pick(WORDS),
            self.pick(WORDS),
            self.pick(WORDS)
        )
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim)
            .map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.into_iter().map(|x| x / n).collect()
    }
}

fn paragraph(rng: &mut Rng, words: usize) -> String {
    let mut p = (0..words)
        .map(|_| rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ");
    p.push_str(&format!(" POL-{:04}.", rng.next() % 10_000));
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

/// One text's vector.
fn embed_one(embedder: &dyn Embedder, text: &str, kind: TextKind) -> Vec<f32> {
    embedder.embed(&[text], kind).unwrap().pop().unwrap().vector
}

/// Each list of timings as (p50, p99) in ms.
fn p50_p99<const N: usize>(times: [Vec<Duration>; N]) -> [(f64, f64); N] {
    times.map(|mut t| {
        t.sort();
        (percentile(&t, 0.5), percentile(&t, 0.99))
    })
}

/// The vector store's point for `c`.
fn vector_point(c: &ChunkEntry, vector: Vec<f32>) -> VectorPoint {
    VectorPoint {
        chunk_id: c.chunk_id.clone(),
        document_id: c.document_id.clone(),
        version: c.version,
        tenant: c.tenant.clone(),
        acl: c.acl.clone(),
        metadata: c.metadata.clone(),
        vector,
    }
}

/// The catalog's rows for a one-chunk document made of `c` (version 1).
fn catalog_rows(c: &ChunkEntry) -> (Document, ChunkRow) {
    let document = Document {
        id: c.document_id.clone(),
        tenant: c.tenant.clone(),
        title: c.title.clone(),
        source: "bench".into(),
        content_type: "text/markdown".into(),
        content_hash: c.document_id.clone(),
        version: 1,
        acl: c.acl.clone(),
        metadata: BTreeMap::new(),
        created_by: "bench".into(),
        created_us: 0,
        updated_us: 0,
        chunk_count: 1,
        bytes: c.text.len() as i64,
    };
    let row = ChunkRow {
        chunk_id: c.chunk_id.clone(),
        ordinal: 0,
        text: c.text.clone(),
        tokens: 60,
    };
    (document, row)
}

fn principal(groups: Vec<String>) -> Principal {
    Principal {
        subject: "bench".into(),
        tenant: "bank".into(),
        roles: Default::default(),
        groups,
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn models_dir() -> std::path::PathBuf {
    std::env::var("SOVRA_MODELS_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sovra/models")
        })
}

async fn latency(
    retriever: &Retriever,
    index: &LexicalIndex,
    p: &Principal,
    mode: Option<Mode>,
    rng: &mut Rng,
    n: usize,
) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let q = rng.query();
        let started = Instant::now();
        match mode {
            Some(m) => {
                let hits = retriever
                    .retrieve(p, &q, m, 10, &BTreeMap::new())
                    .await
                    .unwrap();
                // Nothing found would time a search that found nothing to
                // serve (every candidate dropped by the catalog check).
                assert_eq!(
                    hits.len(),
                    10,
                    "{m:?} search for `{q}` served {}",
                    hits.len()
                );
            }
            None => {
                index.search(&SearchRequest::new(p, &q, 10)).unwrap();
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// Where a hybrid search's time goes: each of its stages alone, on fresh
/// random queries, p50/p99 in ms: the query embedding, the lexical leg (100
/// candidates, as the retriever asks), the vector leg (100 candidates), the
/// catalog recheck of the first 20 candidates, and the lexical leg as it was
/// before candidates were read from fast fields (stored text and a snippet
/// for each of the 100).
async fn stages(
    embedder: &dyn Embedder,
    index: &LexicalIndex,
    vectors: &dyn VectorStore,
    catalog: &Catalog,
    p: &Principal,
    rng: &mut Rng,
    n: usize,
) -> [(f64, f64); 5] {
    let mut times: [Vec<Duration>; 5] = Default::default();
    for _ in 0..n {
        let q = rng.query();
        let started = Instant::now();
        let vector = embed_one(embedder, &q, TextKind::Query);
        times[0].push(started.elapsed());
        let started = Instant::now();
        index.candidates(&SearchRequest::new(p, &q, 100)).unwrap();
        times[1].push(started.elapsed());
        // The lexical leg as it was: each candidate's stored text read and
        // a snippet made for all 100.
        let started = Instant::now();
        index.search(&SearchRequest::new(p, &q, 100)).unwrap();
        times[4].push(started.elapsed());
        let started = Instant::now();
        let hits = vectors
            .search(&sovra_vectors::VectorQuery::new(p, vector, 100))
            .await
            .unwrap();
        times[2].push(started.elapsed());
        let ids: Vec<String> = hits.iter().take(20).map(|h| h.chunk_id.clone()).collect();
        let started = Instant::now();
        let found = catalog.chunk_texts("bank", &ids).await.unwrap();
        times[3].push(started.elapsed());
        assert_eq!(found.len(), ids.len());
    }
    p50_p99(times)
}

/// Each step of writing a one-chunk document, alone, p50/p99 in ms: the
/// passage embedding, the Tantivy commit (with the reader's reload), the
/// qdrant-edge write (with its flush), and the catalog transaction.
async fn write_stages(
    service: &DocumentService,
    catalog: &Catalog,
    texts: &[String],
) -> [(f64, f64); 4] {
    let mut times: [Vec<Duration>; 4] = Default::default();
    for (i, text) in texts.iter().enumerate() {
        let id = format!("step-{i}");
        let started = Instant::now();
        let vector = embed_one(service.embedder().as_ref(), text, TextKind::Passage);
        times[0].push(started.elapsed());
        let entry = ChunkEntry {
            document_id: id.clone(),
            chunk_id: format!("{id}#0"),
            ordinal: 0,
            tenant: "bank".into(),
            title: format!("Policy {id}"),
            text: text.clone(),
            acl: Acl {
                groups: vec!["g1".into()],
                users: vec![],
            },
            metadata: BTreeMap::new(),
            version: 1,
        };
        let started = Instant::now();
        service
            .index()
            .replace_document("bank", &id, std::slice::from_ref(&entry))
            .unwrap();
        times[1].push(started.elapsed());
        let point = vector_point(&entry, vector);
        let started = Instant::now();
        service
            .vectors()
            .replace_documents(&[("bank".into(), id.clone())], vec![point])
            .await
            .unwrap();
        times[2].push(started.elapsed());
        let (document, row) = catalog_rows(&entry);
        let started = Instant::now();
        let mut staged = catalog.begin_batch().await.unwrap();
        catalog
            .stage_in_batch(&mut staged, document, &[row], |_| true)
            .await
            .unwrap()
            .unwrap();
        staged.commit().await.unwrap();
        times[3].push(started.elapsed());
    }
    p50_p99(times)
}

fn new_document(id: String, body: &str, acl: Acl) -> NewDocument {
    NewDocument {
        title: format!("Policy {id}"),
        id,
        tenant: "bank".into(),
        source: "bench".into(),
        format: Format::Markdown,
        bytes: body.as_bytes().to_vec(),
        acl,
        metadata: BTreeMap::new(),
        created_by: "bench".into(),
    }
}

/// A fresh write path (SQLite catalog, Tantivy, qdrant-edge) under `dir`.
async fn write_path(
    dir: &std::path::Path,
    embedder: Arc<OnnxEmbedder>,
    chunker: Arc<Chunker>,
) -> (Arc<DocumentService>, Catalog) {
    std::fs::create_dir_all(dir).unwrap();
    let url = format!("sqlite://{}/bench.db?mode=rwc", dir.display());
    let database = sovra_storage::Database::connect(&url, 4, Duration::from_secs(5))
        .await
        .unwrap();
    database.migrate().await.unwrap();
    let catalog = Catalog::new(&database);
    let index = Arc::new(LexicalIndex::open(&dir.join("tantivy")).unwrap());
    let vectors = Arc::new(EdgeStore::open(&dir.join("vectors"), 384).unwrap());
    let service = Arc::new(DocumentService::new(
        catalog.clone(),
        index,
        vectors,
        embedder,
        chunker,
        Limits::default(),
    ));
    (service, catalog)
}

#[tokio::main]
async fn main() {
    let docs: usize = std::env::var("BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let model = match std::env::var("BENCH_EMBEDDER").as_deref() {
        Ok("all-minilm-l6-v2") => EmbeddingModel::MiniLm,
        _ => EmbeddingModel::MultilingualE5Small,
    };
    let query_threads: usize = std::env::var("BENCH_QUERY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let models = models_dir();
    let tokenizer = models.join(model.id()).join("tokenizer.json");
    let chunker = Arc::new(
        Chunker::from_file(&tokenizer, ChunkerConfig::default()).expect("run scripts/setup-models"),
    );
    let embedder = Arc::new(
        OnnxEmbedder::load(
            &models.join("onnxruntime/libonnxruntime.so.1.32.0"),
            model,
            &models.join(model.id()).join("model.onnx"),
            &tokenizer,
            THREADS,
            query_threads,
            BATCH,
        )
        .expect("run scripts/setup-models"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    println!(
        "Sovra ingestion, embedding and search benchmark ({} cores, embedder {}, batch {BATCH}, {THREADS} intra-op threads)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        model.id()
    );

    // `BENCH_PART=search`: only the search part (the ingestion and
    // embedding parts take most of the run); `BENCH_PART=ingest`: only those.
    let part = std::env::var("BENCH_PART").unwrap_or_default();
    if part != "search" {
        // ---- Ingestion through the whole write path, against the embedder alone ----
        let bodies: Vec<String> = (0..docs)
            .map(|_| {
                let paragraphs = 3 + (rng.next() % 6) as usize;
                document(&mut rng, paragraphs)
            })
            .collect();
        let acls: Vec<Acl> = (0..docs).map(|_| acl(&mut rng)).collect();
        let bytes: usize = bodies.iter().map(String::len).sum();
        let writer = Principal {
            subject: "bench".into(),
            tenant: "bank".into(),
            roles: [sovra_auth::Role::Ingester].into_iter().collect(),
            groups: Vec::new(),
        };
        // The embedder alone, on exactly the chunks the write path makes.
        let texts: Vec<String> = bodies
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                let blocks =
                    sovra_ingest::parse(b.as_bytes(), Format::Markdown, Limits::default()).unwrap();
                chunker
                    .chunk(&format!("doc-{i}"), &blocks)
                    .unwrap()
                    .into_iter()
                    .map(|c| c.text)
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder
            .embed(&refs[..BATCH.min(refs.len())], TextKind::Passage)
            .unwrap();
        let started = Instant::now();
        embedder.embed(&refs, TextKind::Passage).unwrap();
        let embed_only = texts.len() as f64 / started.elapsed().as_secs_f64();

        let mut rows: Vec<(String, f64, f64)> = Vec::new();
        // One document per call, one after another (each commits alone).
        {
            let (service, _) = write_path(
                &dir.path().join("one-by-one"),
                embedder.clone(),
                chunker.clone(),
            )
            .await;
            let started = Instant::now();
            let mut chunks = 0i64;
            for (i, body) in bodies.iter().enumerate() {
                let out = service
                    .ingest(
                        &writer,
                        new_document(format!("doc-{i}"), body, acls[i].clone()),
                    )
                    .await
                    .unwrap();
                chunks += out.document.chunk_count;
            }
            let secs = started.elapsed().as_secs_f64();
            rows.push((
                "one at a time".into(),
                docs as f64 / secs,
                chunks as f64 / secs,
            ));
        }
        // Bulk writes of 16 and of 64 documents (`sovra ingest` sends 64).
        for per_call in [16usize, 64] {
            let (service, _) = write_path(
                &dir.path().join(format!("bulk-{per_call}")),
                embedder.clone(),
                chunker.clone(),
            )
            .await;
            let started = Instant::now();
            let mut chunks = 0i64;
            let all: Vec<NewDocument> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| new_document(format!("doc-{i}"), b, acls[i].clone()))
                .collect();
            for batch in all.chunks(per_call) {
                for out in service.ingest_many(&writer, batch.to_vec()).await {
                    chunks += out.unwrap().document.chunk_count;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            rows.push((
                format!("bulk, {per_call} per call"),
                docs as f64 / secs,
                chunks as f64 / secs,
            ));
        }
        println!();
        println!(
            "ingestion, {docs} documents ({:.1} MB, {} chunks): parse + chunk + embed + SQLite catalog + qdrant-edge + Tantivy commit, searchable on return",
            bytes as f64 / 1e6,
            texts.len()
        );
        println!(
            "  {:<22} {:>12} {:>10} {:>22}",
            "write", "documents/s", "chunks/s", "vs embedder alone"
        );
        println!(
            "  {:<22} {:>12} {:>10.0} {:>21.2}x",
            "embedder alone", "", embed_only, 1.0
        );
        for (label, d, c) in &rows {
            println!(
                "  {:<22} {:>12.1} {:>10.0} {:>21.2}x",
                label,
                d,
                c,
                c / embed_only
            );
        }

        // One-chunk documents: the latency of a single write, alone and with
        // concurrent writers (whose writes are committed together).
        let short: Vec<String> = (0..200).map(|_| paragraph(&mut rng, 50)).collect();
        println!();
        println!(
            "one-chunk documents (~50 words), latency of a single write, searchable on return:"
        );
        println!(
            "  {:<22} {:>12} {:>9} {:>9}",
            "writers", "documents/s", "p50 ms", "p99 ms"
        );
        for writers in [1usize, 8] {
            let (service, _) = write_path(
                &dir.path().join(format!("short-{writers}")),
                embedder.clone(),
                chunker.clone(),
            )
            .await;
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for w in 0..writers {
                let service = service.clone();
                let writer = writer.clone();
                let mine: Vec<(usize, String)> = short
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % writers == w)
                    .map(|(i, t)| (i, t.clone()))
                    .collect();
                tasks.spawn(async move {
                    let mut times = Vec::new();
                    for (i, text) in mine {
                        let t = Instant::now();
                        let out = service
                            .ingest(
                                &writer,
                                new_document(
                                    format!("short-{i}"),
                                    &text,
                                    Acl {
                                        groups: vec!["g1".into()],
                                        users: vec![],
                                    },
                                ),
                            )
                            .await
                            .unwrap();
                        assert_eq!(out.document.chunk_count, 1);
                        times.push(t.elapsed());
                    }
                    times
                });
            }
            let mut times: Vec<Duration> = Vec::new();
            while let Some(t) = tasks.join_next().await {
                times.extend(t.unwrap());
            }
            let secs = started.elapsed().as_secs_f64();
            times.sort();
            println!(
                "  {:<22} {:>12.1} {:>9.1} {:>9.1}",
                writers,
                short.len() as f64 / secs,
                percentile(&times, 0.5),
                percentile(&times, 0.99)
            );
        }

        // Where a one-chunk write's time goes: each step of the write path
        // alone, on fresh one-chunk documents.
        let (service, catalog) = write_path(
            &dir.path().join("write-stages"),
            embedder.clone(),
            chunker.clone(),
        )
        .await;
        let steps = write_stages(&service, &catalog, &short[..100]).await;
        for (label, (p50, p99)) in [
            "embed the chunk",
            "Tantivy: add, commit, reload the reader",
            "qdrant-edge: delete by filter, upsert, flush",
            "SQLite catalog: begin, stage, commit",
        ]
        .iter()
        .zip(steps)
        {
            println!(
                "  {:<22} {:>12} {:>9.1} {:>9.1}  step: {label}",
                "", "", p50, p99
            );
        }

        // ---- Embedding throughput: Sovra vs Python onnxruntime ----
        let texts: Vec<String> = (0..512).map(|_| paragraph(&mut rng, 60)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed(&refs[..BATCH], TextKind::Passage).unwrap();
        let started = Instant::now();
        embedder.embed(&refs, TextKind::Passage).unwrap();
        let rust = texts.len() as f64 / started.elapsed().as_secs_f64();
        let python = std::env::var("BENCH_PYTHON").ok().and_then(|py| {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../bench/embed_reference.py"
            );
            let mut child = std::process::Command::new(py)
                .args([
                    script,
                    &BATCH.to_string(),
                    &THREADS.to_string(),
                    &texts.len().to_string(),
                    model.id(),
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .ok()?;
            child
                .stdin
                .take()?
                .write_all(texts.join("\n\x1e\n").as_bytes())
                .ok()?;
            let out = child.wait_with_output().ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()?
                .trim()
                .parse::<f64>()
                .ok()
        });
        println!();
        println!(
            "embedding, {} chunks of ~60 words, batch {BATCH}, {THREADS} intra-op threads, same model file:",
            texts.len()
        );
        match python {
            Some(py) => println!(
                "  Sovra (Rust, ort) {rust:.1} chunks/s   Python onnxruntime {py:.1} chunks/s   ratio {:.2}x",
                rust / py
            ),
            None => println!(
                "  Sovra (Rust, ort) {rust:.1} chunks/s   (set BENCH_PYTHON to a Python with onnxruntime and tokenizers for the reference)"
            ),
        }
    }
    if part == "ingest" {
        return;
    }
    let (_, search_catalog) = write_path(
        &dir.path().join("search-catalog"),
        embedder.clone(),
        chunker.clone(),
    )
    .await;

    // ---- Search at 10k and 100k chunks, ACL filter on ----
    let search_index = Arc::new(LexicalIndex::open(&dir.path().join("search")).unwrap());
    let search_vectors =
        Arc::new(EdgeStore::open(&dir.path().join("search-vectors"), 384).unwrap());
    let retriever = Retriever::new(
        search_index.clone(),
        search_vectors.clone(),
        embedder.clone(),
        search_catalog.clone(),
        sovra_retrieval::Fusion {
            // As shipped (`search.rrf_k`); the constant does not move latency.
            k: 5.0,
            lexical_weight: 1.0,
            dense_weight: 1.0,
        },
        100,
    );
    let narrow = principal(vec!["g3".into(), "g7".into()]);
    let broad = principal((0..GROUPS).map(|g| format!("g{g}")).collect());
    println!();
    println!(
        "search, top 10, 200 random 3-word queries per cell; bulk-loaded chunks in catalog and both indexes (random unit vectors: latency, not quality), qdrant-edge HNSW built after loading;"
    );
    println!(
        "dense and hybrid are the retriever's (the results checked against the catalog); hybrid = query embedding + BM25 (100 candidates) and qdrant-edge (100 candidates) concurrently, RRF:"
    );
    // The query embedding alone: a share of every dense and hybrid search.
    let mut times = Vec::new();
    for _ in 0..200 {
        let q = rng.query();
        let started = Instant::now();
        embed_one(embedder.as_ref(), &q, TextKind::Query);
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "query embedding alone ({}, {query_threads} thread(s)): p50 {:.2} ms, p99 {:.2} ms",
        model.id(),
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    println!(
        "  {:>7}  {:>6}  {:>22}  {:>22}  {:>8}  {:>7}",
        "chunks", "mode", "narrow 2/20 p50/p99 ms", "broad 20/20 p50/p99 ms", "p50 n/b", "RSS MB"
    );
    let mut indexed = 0usize;
    for target in [10_000usize, 100_000] {
        while indexed < target {
            let end = (indexed + 5_000).min(target);
            let mut batch = Vec::new();
            let mut points = Vec::new();
            for i in indexed..end {
                let id = format!("s{i}");
                let acl = acl(&mut rng);
                let entry = ChunkEntry {
                    version: 1,
                    document_id: id.clone(),
                    chunk_id: format!("{id}:0"),
                    ordinal: 0,
                    tenant: "bank".into(),
                    title: format!("Policy {i}"),
                    text: paragraph(&mut rng, 60),
                    acl,
                    metadata: BTreeMap::new(),
                };
                points.push(vector_point(&entry, rng.unit_vector(384)));
                batch.push((id, vec![entry]));
            }
            let refs: Vec<(&str, &str, &[ChunkEntry])> = batch
                .iter()
                .map(|(id, c)| (c[0].tenant.as_str(), id.as_str(), c.as_slice()))
                .collect();
            search_index.replace_documents(&refs).unwrap();
            search_vectors.upsert(points).await.unwrap();
            // The catalog holds them too, as after a real write: every
            // candidate a search returns is checked against it.
            let mut staged = search_catalog.begin_batch().await.unwrap();
            for (_, chunks) in &batch {
                let (document, row) = catalog_rows(&chunks[0]);
                search_catalog
                    .stage_in_batch(&mut staged, document, &[row], |_| true)
                    .await
                    .unwrap()
                    .unwrap();
            }
            staged.commit().await.unwrap();
            indexed = end;
        }
        search_vectors.optimize().await.unwrap();
        for (label, mode) in [
            ("bm25", None),
            ("dense", Some(Mode::Dense)),
            ("hybrid", Some(Mode::Hybrid)),
        ] {
            let (n50, n99) = latency(&retriever, &search_index, &narrow, mode, &mut rng, 200).await;
            let (b50, b99) = latency(&retriever, &search_index, &broad, mode, &mut rng, 200).await;
            println!(
                "  {:>7}  {:>6}  {:>10.2} / {:<9.2}  {:>10.2} / {:<9.2}  {:>7.2}x  {:>7.0}",
                search_index.num_chunks(),
                label,
                n50,
                n99,
                b50,
                b99,
                n50 / b50,
                rss_mb()
            );
        }
        let narrow_stages = stages(
            embedder.as_ref(),
            &search_index,
            search_vectors.as_ref(),
            &search_catalog,
            &narrow,
            &mut rng,
            200,
        )
        .await;
        let broad_stages = stages(
            embedder.as_ref(),
            &search_index,
            search_vectors.as_ref(),
            &search_catalog,
            &broad,
            &mut rng,
            200,
        )
        .await;
        for (i, stage) in [
            "query embedding",
            "lexical leg: 100 candidates, ids from fast fields",
            "vector leg: 100 candidates",
            "catalog recheck of 20",
            "lexical leg as before: 100 with stored text and snippets",
        ]
        .iter()
        .enumerate()
        {
            let ((n50, n99), (b50, b99)) = (narrow_stages[i], broad_stages[i]);
            println!(
                "  {:>7}  {:>6}  {:>10.2} / {:<9.2}  {:>10.2} / {:<9.2}  stage: {stage}",
                "", "", n50, n99, b50, b99
            );
        }
    }
}
