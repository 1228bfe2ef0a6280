//! `sovra eval`: nDCG, recall and MRR of lexical, dense and hybrid search
//! on a judged query set, through a running gateway (`--answers` hands over
//! to the answer evaluation in `answers.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use sovra_auth::DevTokenRequest;
use sovra_config::Settings;

use super::{answers, api_token, api_url};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("set").required(true).args(["queries", "answers"])))]
pub struct EvalArgs {
    /// Retrieval: JSONL, one {"query": "...", "relevant": ["document id", ...], "kind": "..."} per line.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Answers: a question set (facqa*.csv, rgb*.json, pubmedqa*.json, or
    /// Sovra's own *.jsonl); its passages are ingested into the tenant
    /// `eval-<set>` and every question is asked through POST /v1/query.
    #[arg(long)]
    pub answers: Option<PathBuf>,
    #[command(flatten)]
    pub answer: answers::AnswerEvalArgs,
    /// Gateway URL (default: http://<server.listen>).
    #[arg(long)]
    pub server: Option<String>,
    /// Bearer token with the reader role (default: a development token for
    /// --tenant and --groups).
    #[arg(long, env = "SOVRA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "staff,treasury,compliance,management,nursing,pharmacy"
    )]
    pub groups: Vec<String>,
    /// Cut-off for nDCG and recall.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
}

#[derive(serde::Deserialize)]
struct Judged {
    query: String,
    relevant: Vec<String>,
    #[serde(default)]
    kind: String,
}

/// The document ids `POST /v1/search` ranks for `query` in `mode`, in rank
/// order (a document once per chunk).
pub(crate) async fn search_documents(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    mode: &str,
    top_k: usize,
) -> anyhow::Result<Vec<String>> {
    Ok(search_chunks(client, url, token, query, mode, top_k)
        .await?
        .into_iter()
        .map(|h| h.document)
        .collect())
}

/// One hit of `POST /v1/search`.
pub(crate) struct ChunkHit {
    pub chunk: String,
    pub document: String,
    /// The leg's own score: BM25 in lexical mode, cosine in dense mode.
    pub score: f32,
}

/// The hits `POST /v1/search` ranks for `query` in `mode`, in rank order.
pub(crate) async fn search_chunks(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    mode: &str,
    top_k: usize,
) -> anyhow::Result<Vec<ChunkHit>> {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({"query": query, "mode": mode, "top_k": top_k}))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("a /v1/search answer")?;
    if !status.is_success() {
        bail!(
            "search `{query}` ({mode}) failed: HTTP {}: {}",
            status.as_u16(),
            body["detail"]
        );
    }
    Ok(body["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    let score = match mode {
                        "lexical" => r["lexical_score"].as_f64(),
                        "dense" => r["dense_score"].as_f64(),
                        _ => r["score"].as_f64(),
                    };
                    Some(ChunkHit {
                        chunk: r["chunk_id"].as_str()?.to_owned(),
                        document: r["document_id"].as_str()?.to_owned(),
                        score: score? as f32,
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

/// nDCG@k, recall@k and reciprocal rank of one ranked list of document ids
/// (binary relevance; each document counted once, at its best rank).
pub fn score(ranked: &[String], relevant: &[String], k: usize) -> (f64, f64, f64) {
    let docs = sovra_retrieval::distinct(ranked.iter().map(String::as_str));
    let rel = |d: &String| relevant.contains(d);
    let dcg: f64 = docs
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, d)| rel(d))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(k))
        .map(|i| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let found = docs.iter().take(k).filter(|d| rel(d)).count();
    let rr = docs
        .iter()
        .position(rel)
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0));
    let ndcg = if ideal > 0.0 { dcg / ideal } else { 0.0 };
    let recall = if relevant.is_empty() {
        0.0
    } else {
        found as f64 / relevant.len() as f64
    };
    (ndcg, recall, rr)
}

pub async fn eval(settings: &Settings, args: EvalArgs) -> anyhow::Result<ExitCode> {
    let queries = match (&args.queries, &args.answers) {
        (_, Some(set)) => return answers::eval(settings, &args, set).await,
        (Some(q), None) => q.clone(),
        (None, None) => bail!("give --queries or --answers"),
    };
    let text = std::fs::read_to_string(&queries)
        .with_context(|| format!("reading {}", queries.display()))?;
    let judged: Vec<Judged> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a judged query", queries.display(), i + 1))
        })
        .collect::<Result<_, _>>()?;
    let token = api_token(
        settings,
        &args.token,
        DevTokenRequest {
            subject: "sovra-eval".into(),
            tenant: args.tenant.clone(),
            roles: vec!["reader".into()],
            groups: args.groups.clone(),
            ttl_secs: 3600,
        },
    )?;
    let url = api_url(settings, &args.server, "/v1/search");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let modes = ["lexical", "dense", "hybrid"];
    // (mode, kind) -> (sum ndcg, sum recall, sum rr, n)
    let mut totals: std::collections::BTreeMap<(usize, String), (f64, f64, f64, usize)> =
        Default::default();
    for q in &judged {
        for (m, mode) in modes.iter().enumerate() {
            let ranked =
                search_documents(&client, &url, &token, &q.query, mode, (args.k * 3).min(100))
                    .await?;
            let (n, r, rr) = score(&ranked, &q.relevant, args.k);
            for kind in ["all".to_owned(), q.kind.clone()] {
                let t = totals.entry((m, kind)).or_default();
                t.0 += n;
                t.1 += r;
                t.2 += rr;
                t.3 += 1;
            }
        }
    }
    let k = args.k;
    println!(
        "{} queries from {}; k = {k}",
        judged.len(),
        queries.display()
    );
    println!(
        "{:<16} {:<8} {:>9} {:>10} {:>7}",
        "queries",
        "mode",
        format!("nDCG@{k}"),
        format!("recall@{k}"),
        "MRR"
    );
    let kinds: std::collections::BTreeSet<String> =
        totals.keys().map(|(_, kind)| kind.clone()).collect();
    let ordered = std::iter::once("all".to_owned()).chain(kinds.into_iter().filter(|x| x != "all"));
    for kind in ordered {
        for (m, mode) in modes.iter().enumerate() {
            if let Some((n, r, rr, c)) = totals.get(&(m, kind.clone())) {
                let c = *c as f64;
                println!(
                    "{:<16} {:<8} {:>9.3} {:>10.3} {:>7.3}",
                    format!("{kind} ({c})"),
                    mode,
                    n / c,
                    r / c,
                    rr / c
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod eval_tests {
    use super::score;

    #[test]
    fn metrics() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (n, r, rr) = score(&s(&["a", "b", "c"]), &s(&["a"]), 10);
        assert_eq!((n, r, rr), (1.0, 1.0, 1.0));
        let (n, r, rr) = score(&s(&["x", "x", "a"]), &s(&["a", "b"]), 10);
        assert!((rr - 0.5).abs() < 1e-9, "documents counted once");
        assert!((r - 0.5).abs() < 1e-9);
        assert!((n - (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2())).abs() < 1e-9);
        assert_eq!(score(&s(&["x"]), &s(&["a"]), 10), (0.0, 0.0, 0.0));
    }
}
