//! `sovra eval --answers SET`: ingests a question set's passages through a
//! running gateway (tenant `eval-<set>`, one ACL group per question, see
//! `sovra_eval::plan`), asks every question through `POST /v1/query` as a
//! reader who may see everything, then asks the held-out questions again as
//! a reader without their own passages, and prints accuracy, citation
//! precision, retrieval hit rate, negative rejection, latency and the
//! distributions of the relevance gate's scores. `--search` measures
//! retrieval alone; `--oracle` the model alone, each question with its own
//! passages in an answer's prompt.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use sovra_answer::Source;
use sovra_auth::DevTokenRequest;
use sovra_config::Settings;
use sovra_eval::plan::{Options, Plan, plan};
use sovra_eval::score::{
    Outcome, ReplayRow, Summary, correct, gate_sweep, margin_sweep, quantile, summarize,
};
use sovra_eval::sets::{Case, Set, load};

use super::eval::ChunkHit;
use super::eval::score;
use super::{EvalArgs, api_token, api_url, search_chunks, search_documents};

#[derive(clap::Args)]
pub struct AnswerEvalArgs {
    /// Questions asked with their passages in reach.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Of those, questions asked again without their passages (negative rejection).
    #[arg(long, default_value_t = 20)]
    pub negatives: usize,
    /// Passages of questions not asked, ingested as distractors.
    #[arg(long, default_value_t = 300)]
    pub distractors: usize,
    /// Concurrent bulk writes (of 16 documents) while ingesting.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Retrieval only: ask POST /v1/search in each mode instead of
    /// /v1/query, and print nDCG, recall and MRR of the questions' own
    /// passages at --search-k, next to a plain-BM25 reference index of the
    /// same documents (no model is run).
    #[arg(long)]
    pub search: bool,
    #[arg(long, default_value_t = 6)]
    pub search_k: usize,
    /// With --search: also fuse the two legs' rankings (100 chunks each)
    /// over a grid of RRF constants and dense-leg weights, as the gateway's
    /// hybrid search would, and print nDCG for each (for choosing
    /// search.rrf_k, search.lexical_weight and search.dense_weight).
    #[arg(long, requires = "search")]
    pub fusion_grid: bool,
    /// The model alone, retrieval taken as perfect: each question is asked
    /// with its own passages in the prompt, worded as an answer's prompt is
    /// (`sovra_answer::user_turn`), through POST /v1/chat/completions
    /// without retrieval (no relevance gate, attribution or check). The
    /// held-out questions get the set's on-topic negatives alone, where it
    /// has them (RGB). Nothing is ingested. The figures are the ceiling of
    /// the end-to-end ones: what is lost between the two is lost to
    /// retrieval, the gate, attribution and the check.
    #[arg(long, conflicts_with = "search")]
    pub oracle: bool,
    /// Write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write every question's answer, citations and verdict as JSONL here.
    #[arg(long, value_name = "FILE")]
    pub details: Option<PathBuf>,
}

struct Client {
    http: reqwest::Client,
    query_url: String,
}

/// What one `/v1/query` call gave.
struct Asked {
    answer: String,
    cited_documents: Vec<String>,
    /// Documents of the chunks given to the model as sources.
    source_documents: Vec<String>,
    retrieved_documents: Vec<String>,
    best_dense: Option<f32>,
    best_lexical: Option<f32>,
    best_coverage: Option<f32>,
    /// The answer's check: `Some(false)` when it refused the answer.
    confirmed: Option<bool>,
    /// The check's margin, when it ran.
    check_margin: Option<f32>,
    latency_ms: f64,
}

impl Client {
    async fn ask(&self, token: &str, question: &str) -> anyhow::Result<Asked> {
        let started = Instant::now();
        let body = post_json(
            &self.http,
            &self.query_url,
            token,
            &json!({"question": question}),
            "/v1/query",
        )
        .await?;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let strings = |v: &Value, key: &str| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x[key].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let results = &body["retrieval"]["results"];
        let best = |key: &str| -> Option<f32> {
            results.as_array().and_then(|a| {
                a.iter()
                    .filter_map(|r| r[key].as_f64())
                    .map(|x| x as f32)
                    .reduce(f32::max)
            })
        };
        Ok(Asked {
            answer: body["answer"].as_str().unwrap_or_default().to_owned(),
            cited_documents: strings(&body["citations"], "document_id"),
            source_documents: strings(&body["sources"], "document_id"),
            retrieved_documents: strings(results, "document_id"),
            best_dense: best("dense_score"),
            best_lexical: best("lexical_score"),
            best_coverage: best("question_coverage"),
            confirmed: body["confirmed"].as_bool(),
            check_margin: body["check_margin"].as_f64().map(|m| m as f32),
            latency_ms,
        })
    }
}

/// POSTs `body` to the gateway's `endpoint` at `url` and returns its JSON
/// reply; a status other than success is an error naming the endpoint, the
/// status and the problem's detail.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    endpoint: &str,
) -> anyhow::Result<Value> {
    let resp = http.post(url).bearer_auth(token).json(body).send().await?;
    let status = resp.status();
    let reply: Value = resp
        .json()
        .await
        .with_context(|| format!("a {endpoint} answer"))?;
    if !status.is_success() {
        bail!(
            "{endpoint} answered HTTP {}: {}",
            status.as_u16(),
            reply["detail"]
        );
    }
    Ok(reply)
}

/// Every tenth question, how far a run has come.
fn progress(set: &str, asked: usize, total: usize) {
    if asked.is_multiple_of(10) {
        eprintln!("{set}: {asked} of {total} questions asked");
    }
}

fn outcome(case: &Case, a: &Asked) -> Outcome {
    let refused = sovra_answer::is_refusal(&a.answer);
    let own = |d: &String| case.positive.contains(d);
    let detect = sovra_answer::language::detect;
    Outcome {
        correct: !refused && correct(&a.answer, &case.question, &case.expected),
        refused,
        same_language: detect(&a.answer) == detect(&case.question),
        cited_own: a.cited_documents.iter().filter(|d| own(d)).count(),
        cited_documents: a.cited_documents.clone(),
        retrieved_own: a.retrieved_documents.iter().any(own),
        latency_ms: a.latency_ms,
        best_dense: a.best_dense,
        best_lexical: a.best_lexical,
        best_coverage: a.best_coverage,
        language: detect(&case.question).code().to_owned(),
        not_confirmed: a.confirmed == Some(false),
        check_margin: a.check_margin,
        reference_in_reach: false,
    }
}

async fn ingest(
    settings: &Settings,
    args: &EvalArgs,
    http: &reqwest::Client,
    tenant: &str,
    p: &Plan<'_>,
) -> anyhow::Result<()> {
    let token = eval_token(settings, tenant, "ingester", Vec::new())?;
    let url = api_url(settings, &args.server, "/v1/documents");
    let started = Instant::now();
    // Bulk writes of 16 documents, a few requests at a time: the gateway
    // writes them one batch after another, so the last request waits for
    // those ahead of it; with 64 a request, four writers and long
    // abstracts, that wait passed the request timeout on a slow day (504).
    // Bulk 16 writes at the embedder's speed as bulk 64 does
    // (docs/documents.md, "Throughput").
    futures_util::stream::iter(p.documents.chunks(16).map(|batch| {
        let body: Vec<Value> = batch
            .iter()
            .map(|d| {
                json!({
                    "id": d.passage.id,
                    "title": d.passage.title,
                    "text": d.passage.text,
                    "acl": {"groups": d.groups},
                })
            })
            .collect();
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let resp = http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            let answer: Value = resp.json().await.unwrap_or_default();
            if status.as_u16() != 207 {
                bail!("a bulk write failed: HTTP {status}: {}", answer["detail"]);
            }
            if let Some(bad) = answer["results"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["problem"].is_object()))
            {
                bail!("writing {} failed: {}", bad["id"], bad["problem"]["detail"]);
            }
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(args.answer.writers.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    eprintln!(
        "ingested {} documents in {:.1} s",
        p.documents.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A development token of the evaluation's subject in `tenant`.
fn eval_token(
    settings: &Settings,
    tenant: &str,
    role: &str,
    groups: Vec<String>,
) -> anyhow::Result<String> {
    api_token(
        settings,
        &None,
        DevTokenRequest {
            subject: "sovra-eval".into(),
            tenant: tenant.to_owned(),
            roles: vec![role.to_owned()],
            groups,
            ttl_secs: 24 * 3600,
        },
    )
}

fn reader(settings: &Settings, tenant: &str, groups: Vec<String>) -> anyhow::Result<String> {
    eval_token(settings, tenant, "reader", groups)
}

fn distribution(label: &str, values: &[f64]) {
    let q = |x| quantile(values, x);
    println!(
        "  {label:<34} {:>5} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
        values.len(),
        q(0.0),
        q(0.1),
        q(0.25),
        q(0.5),
        q(0.75),
        q(0.9),
        q(1.0)
    );
}

/// How many of the set's questions the answer's language detection puts in
/// the set's own language (an answer, and a refusal, comes in the detected
/// one), with the first few it does not.
fn detected_languages(set: &Set) {
    let missed: Vec<&Case> = set
        .cases
        .iter()
        .filter(|c| sovra_answer::language::detect(&c.question).code() != set.language)
        .collect();
    println!(
        "{}: {} of {} questions detected as `{}`",
        set.name,
        set.cases.len() - missed.len(),
        set.cases.len(),
        set.language
    );
    for c in missed.iter().take(5) {
        println!("  not detected as `{}`: {}", set.language, c.question);
    }
}

pub async fn eval(settings: &Settings, args: &EvalArgs, path: &Path) -> anyhow::Result<ExitCode> {
    let set = load(path)?;
    detected_languages(&set);
    let opts = &args.answer;
    let p = plan(
        &set,
        Options {
            limit: opts.limit,
            negatives: opts.negatives,
            distractors: opts.distractors,
        },
    )?;
    let tenant = format!("eval-{}", set.name);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    if opts.oracle {
        return oracle(settings, args, &http, &tenant, &set, &p).await;
    }
    ingest(settings, args, &http, &tenant, &p).await?;
    let client = Client {
        http,
        query_url: api_url(settings, &args.server, "/v1/query"),
    };
    let mut details = details_file(opts.details.as_deref())?;
    let mut log = |kind: &str, case: &Case, a: &Asked, o: &Outcome| -> anyhow::Result<()> {
        if let Some(w) = details.as_mut() {
            use std::io::Write;
            let line = json!({
                "kind": kind, "id": case.id, "question": case.question,
                "answer": a.answer, "correct": o.correct, "refused": o.refused,
                "cited": a.cited_documents, "sources": a.source_documents,
                "own": case.positive,
                "retrieved_own": o.retrieved_own, "best_dense": a.best_dense,
                "best_lexical": a.best_lexical, "best_coverage": a.best_coverage,
                "confirmed": a.confirmed, "check_margin": a.check_margin,
                "latency_ms": a.latency_ms, "reference_in_reach": o.reference_in_reach,
            });
            writeln!(w, "{line}")?;
        }
        Ok(())
    };
    let everything = reader(settings, &tenant, p.all_groups())?;
    if opts.search {
        return search(settings, args, &client.http, &everything, &p).await;
    }
    let mut answerable = Vec::with_capacity(p.asked.len());
    for (i, case) in p.asked.iter().enumerate() {
        let a = client.ask(&everything, &case.question).await?;
        let o = outcome(case, &a);
        log("answerable", case, &a, &o)?;
        answerable.push(o);
        progress(&set.name, i + 1, p.asked.len());
    }
    let mut negatives = Vec::with_capacity(p.negatives.len());
    for &i in &p.negatives {
        let case = p.asked[i];
        let token = reader(settings, &tenant, p.groups_without(i))?;
        let a = client.ask(&token, &case.question).await?;
        let o = Outcome {
            reference_in_reach: p.reference_in_reach(i, |q, t| {
                sovra_answer::attribute::question_coverage(q, t)
                    >= settings.answer.min_question_coverage
            }),
            ..outcome(case, &a)
        };
        log("unanswerable", case, &a, &o)?;
        negatives.push(o);
    }
    let s = summarize(&answerable, &negatives);
    print_table(&set.name, &set.language, &s);
    print_reach(&s);
    println!(
        "refused by the answer's check (answer.verify): {} answerable, {} held out",
        s.not_confirmed_answerable, s.not_confirmed_negatives
    );
    println!(
        "relevance gate inputs per question   n     min     p10     p25     p50     p75     p90     max"
    );
    let dense = |os: &[Outcome]| -> Vec<f64> {
        os.iter()
            .filter_map(|o| o.best_dense.map(f64::from))
            .collect()
    };
    let lexical = |os: &[Outcome]| -> Vec<f64> {
        os.iter()
            .filter_map(|o| o.best_lexical.map(f64::from))
            .collect()
    };
    let coverage = |os: &[Outcome]| -> Vec<f64> {
        os.iter()
            .filter_map(|o| o.best_coverage.map(f64::from))
            .collect()
    };
    distribution("best dense cosine, answerable", &dense(&answerable));
    distribution("best dense cosine, unanswerable", &dense(&negatives));
    distribution("best BM25 score, answerable", &lexical(&answerable));
    distribution("best BM25 score, unanswerable", &lexical(&negatives));
    distribution("question coverage, answerable", &coverage(&answerable));
    distribution("question coverage, unanswerable", &coverage(&negatives));
    let sweep = check_margins(&answerable, &negatives);
    let gates = gate_bars(settings, &answerable, &negatives);
    if let Some(f) = &opts.json {
        let doc = json!({
            "set": set.name, "language": set.language, "summary": s,
            "check_margin_sweep": sweep, "gate_sweep": gates,
        });
        std::fs::write(f, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Coverage bars the relevance gate is replayed at
/// (answer.min_question_coverage).
const GATE_BARS: [f32; 9] = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7];

/// Prints the run replayed with the relevance gate at the coverage bars at
/// or above its own (`gate_sweep` with the gateway's own rule, each
/// question in its detected language; none when the run's gate is below the
/// context floor, where a higher bar would change the sources); returns the
/// replay.
fn gate_bars(settings: &Settings, answerable: &[Outcome], negatives: &[Outcome]) -> Vec<ReplayRow> {
    let own = settings.answer.min_question_coverage;
    if own < settings.answer.min_context_coverage {
        return Vec::new();
    }
    let bars: Vec<f32> = GATE_BARS.into_iter().filter(|&b| b >= own).collect();
    let gate = crate::answers::gate(settings);
    let rows = gate_sweep(answerable, negatives, &bars, |o, bar| {
        let at_bar = sovra_answer::Gate {
            min_question_coverage: bar,
            ..gate.clone()
        };
        at_bar.admits(o.best_coverage, o.best_dense, &o.language)
    });
    print_replay("answer.min_question_coverage", &rows);
    rows
}

/// Prints a replay ([`ReplayRow`]) under the setting it varies.
fn print_replay(setting: &str, rows: &[ReplayRow]) {
    println!("{setting:<30}  accuracy  refused (answerable)  negative rejection  (not in reach)");
    for r in rows {
        println!(
            "  {:>6.2}                        {:>6.2}    {:>6.2}                {:>6.2}              {:>6.2}",
            r.bar,
            r.accuracy,
            r.refused_answerable,
            r.negative_rejection,
            r.negative_rejection_out_of_reach
        );
    }
}

/// Bars the answer's check is replayed at (answer.verify_min_margin).
const MARGIN_BARS: [f32; 9] = [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0];

/// Prints the check's margins (right and wrong answers, answerable ones it
/// refused, answers to held-out questions) and the run replayed at other
/// bars; returns the replay.
fn check_margins(answerable: &[Outcome], negatives: &[Outcome]) -> Vec<ReplayRow> {
    let margins = |os: &[Outcome], keep: &dyn Fn(&Outcome) -> bool| -> Vec<f64> {
        os.iter()
            .filter(|o| keep(o))
            .filter_map(|o| o.check_margin.map(f64::from))
            .collect()
    };
    if !answerable
        .iter()
        .chain(negatives)
        .any(|o| o.check_margin.is_some())
    {
        return Vec::new();
    }
    println!(
        "the check's margin, ln p(yes)/p(no)   n     min     p10     p25     p50     p75     p90     max"
    );
    distribution("right answers", &margins(answerable, &|o| o.correct));
    distribution(
        "wrong answers",
        &margins(answerable, &|o| !o.correct && !o.not_confirmed),
    );
    let refused = margins(answerable, &|o| o.not_confirmed);
    if !refused.is_empty() {
        // Right or wrong is not known: the refusal replaced the answer.
        distribution("answers the check refused", &refused);
    }
    distribution(
        "answers to held-out questions",
        &margins(negatives, &|_| true),
    );
    let rows = margin_sweep(answerable, negatives, &MARGIN_BARS);
    print_replay("answer.verify_min_margin", &rows);
    rows
}

/// The `--details` file, when one is asked for.
fn details_file(path: Option<&Path>) -> anyhow::Result<Option<std::io::BufWriter<std::fs::File>>> {
    path.map(|f| {
        std::fs::File::create(f)
            .map(std::io::BufWriter::new)
            .with_context(|| format!("creating {}", f.display()))
    })
    .transpose()
}

/// The question's passages as an answer's prompt numbers them.
fn passages_as_sources(set: &Set, ids: &[String]) -> anyhow::Result<Vec<Source>> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let p = set
                .passages
                .get(id)
                .with_context(|| format!("passage {id} is named by a question but missing"))?;
            Ok(Source {
                number: i + 1,
                document_id: id.clone(),
                chunk_id: id.clone(),
                title: p.title.clone(),
                score: 0.0,
                lexical_rank: None,
                dense_rank: None,
                text: p.text.clone(),
            })
        })
        .collect()
}

/// `--oracle`: every question with its own passages (held out: with its
/// on-topic negatives alone) in an answer's prompt, asked of the model
/// through `/v1/chat/completions` without retrieval.
async fn oracle(
    settings: &Settings,
    args: &EvalArgs,
    http: &reqwest::Client,
    tenant: &str,
    set: &Set,
    p: &Plan<'_>,
) -> anyhow::Result<ExitCode> {
    let token = reader(settings, tenant, Vec::new())?;
    let models: Value = http
        .get(api_url(settings, &args.server, "/v1/models"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let model = models["data"][0]["id"]
        .as_str()
        .context("GET /v1/models named no model")?
        .to_owned();
    let url = api_url(settings, &args.server, "/v1/chat/completions");
    let mut details = details_file(args.answer.details.as_deref())?;
    let mut ask = async |kind: &str, case: &Case, ids: &[String]| -> anyhow::Result<Outcome> {
        let sources = passages_as_sources(set, ids)?;
        let language = sovra_answer::language::detect(&case.question);
        let body = json!({
            "model": model,
            "messages": [
                {"role": "system", "content": sovra_answer::SYSTEM_PROMPT},
                {"role": "user", "content": sovra_answer::user_turn(&sources, &case.question, language)},
            ],
            "temperature": 0,
            "sovra": {"retrieval": false},
        });
        let started = Instant::now();
        let reply = post_json(http, &url, &token, &body, "/v1/chat/completions").await?;
        let answer = reply["choices"][0]["message"]["content"]
            .as_str()
            .context("a chat completion without a message")?
            .to_owned();
        let asked = Asked {
            answer,
            cited_documents: Vec::new(),
            source_documents: ids.to_vec(),
            retrieved_documents: ids.to_vec(),
            best_dense: None,
            best_lexical: None,
            best_coverage: None,
            confirmed: None,
            check_margin: None,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        let o = outcome(case, &asked);
        if let Some(w) = details.as_mut() {
            use std::io::Write;
            let line = json!({
                "kind": kind, "id": case.id, "question": case.question,
                "answer": asked.answer, "correct": o.correct, "refused": o.refused,
                "sources": ids, "latency_ms": asked.latency_ms,
            });
            writeln!(w, "{line}")?;
        }
        Ok(o)
    };
    let mut answerable = Vec::with_capacity(p.asked.len());
    for (i, case) in p.asked.iter().enumerate() {
        answerable.push(ask("answerable", case, &case.positive).await?);
        progress(&set.name, i + 1, p.asked.len());
    }
    let mut negatives = Vec::new();
    for &i in &p.negatives {
        let case = p.asked[i];
        if !case.negative.is_empty() {
            negatives.push(ask("unanswerable", case, &case.negative).await?);
        }
    }
    let s = summarize(&answerable, &negatives);
    println!(
        "oracle: each question with its own passages (held out: its on-topic negatives alone), no retrieval"
    );
    println!(
        "{:<10} {:<4} {:>9} {:>8} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "set",
        "lang",
        "questions",
        "accuracy",
        "same-lang",
        "refused",
        "negatives",
        "neg-reject",
        "p50 ms"
    );
    println!(
        "{:<10} {:<4} {:>9} {:>8.3} {:>9.3} {:>9.3} {:>9} {:>10.3} {:>8.0}",
        set.name,
        set.language,
        s.questions,
        s.accuracy,
        s.same_language,
        s.refused_answerable,
        s.negatives,
        s.negative_rejection,
        s.p50_latency_ms
    );
    if negatives.is_empty() {
        println!("(this set has no on-topic negatives: negative rejection is not measured here)");
    }
    if let Some(f) = &args.answer.json {
        let doc = json!({"set": set.name, "language": set.language, "oracle": true, "summary": s});
        std::fs::write(f, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(name: &str, language: &str, s: &Summary) {
    println!(
        "{:<10} {:<4} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "set",
        "lang",
        "questions",
        "accuracy",
        "same-lang",
        "cite-prec",
        "cites-own",
        "retr-hit",
        "refused",
        "negatives",
        "neg-reject",
        "p50 ms"
    );
    println!(
        "{:<10} {:<4} {:>9} {:>8.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9} {:>10.3} {:>8.0}",
        name,
        language,
        s.questions,
        s.accuracy,
        s.same_language,
        s.citation_precision,
        s.cites_own,
        s.retrieval_hit,
        s.refused_answerable,
        s.negatives,
        s.negative_rejection,
        s.p50_latency_ms
    );
}

/// Held-out questions that another passage in reach still answers, and
/// negative rejection without them.
fn print_reach(s: &Summary) {
    if s.negatives_in_reach > 0 {
        println!(
            "held-out questions whose reference another passage in reach, about the question, holds: {} of {}; negative rejection over the other {}: {:.3}",
            s.negatives_in_reach,
            s.negatives,
            s.negatives - s.negatives_in_reach,
            s.negative_rejection_out_of_reach
        );
    }
}

/// Hit rate, reciprocal rank and nDCG of the questions' own passages in
/// each retrieval mode, next to the plain-BM25 reference
/// (`sovra_eval::reference`) on the same documents, with the ratio of each
/// mode's nDCG to the reference's.
async fn search(
    settings: &Settings,
    args: &EvalArgs,
    http: &reqwest::Client,
    token: &str,
    p: &Plan<'_>,
) -> anyhow::Result<ExitCode> {
    let url = api_url(settings, &args.server, "/v1/search");
    let k = args.answer.search_k;
    let reference = sovra_eval::reference::PlainBm25::build(p.documents.iter().map(|d| {
        (
            d.passage.id.as_str(),
            d.passage.title.as_str(),
            d.passage.text.as_str(),
        )
    }))?;
    println!(
        "{:<8} {:>9} {:>8} {:>10} {:>7} {:>8}",
        "mode",
        "questions",
        format!("nDCG@{k}"),
        format!("recall@{k}"),
        "MRR",
        "vs bm25"
    );
    let mut reference_ndcg = None;
    let mut misses = Vec::new();
    for mode in ["bm25-ref", "lexical", "dense", "hybrid"] {
        let (mut ndcg, mut recall, mut rr) = (0.0, 0.0, 0.0);
        let mut missed = Misses::default();
        for case in &p.asked {
            // Chunks come several to a document: ask for as many as the API
            // gives so that k distinct documents are scored, as the
            // reference's are, and a missed passage's rank is known.
            let ranked = if mode == "bm25-ref" {
                reference.search(&case.question, k)?
            } else {
                search_documents(http, &url, token, &case.question, mode, SEARCH_DEPTH).await?
            };
            let (n, r, x) = score(&ranked, &case.positive, k);
            ndcg += n;
            recall += r;
            rr += x;
            if mode != "bm25-ref" {
                missed.add(&case.positive, &case.negative, &ranked, k);
            }
        }
        if mode != "bm25-ref" {
            misses.push((mode, missed));
        }
        let n = p.asked.len().max(1) as f64;
        let base = *reference_ndcg.get_or_insert(ndcg / n);
        println!(
            "{mode:<8} {:>9} {:>8.3} {:>10.3} {:>7.3} {:>7.3}x",
            p.asked.len(),
            ndcg / n,
            recall / n,
            rr / n,
            if base > 0.0 { ndcg / n / base } else { 0.0 }
        );
    }
    println!();
    println!(
        "own passages outside the top {k}, by their rank among distinct documents; and who held the top {k} of the questions with a miss:"
    );
    println!(
        "{:<8} {:>9} {:>8} {:>7} {:>7} {:>10} {:>8} {:>8} {:>8}",
        "mode", "positives", "missed", "<=20", "<=50", "further", "own-pos", "own-neg", "others"
    );
    for (mode, m) in &misses {
        println!(
            "{mode:<8} {:>9} {:>8} {:>7} {:>7} {:>10} {:>8} {:>8} {:>8}",
            m.positives,
            m.missed,
            m.within_20,
            m.within_50,
            m.further,
            m.own_positive,
            m.own_negative,
            m.others
        );
    }
    if args.answer.fusion_grid {
        fusion_grid(http, &url, token, p, k).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Chunks asked of `/v1/search` per question in the retrieval evaluation:
/// the API's `search.max_top_k`.
const SEARCH_DEPTH: usize = 100;

/// Where a mode's missed positives ranked, and what took the top k of the
/// questions that missed one: the question's own passages (positive or its
/// on-topic negatives) or passages of other questions.
#[derive(Default)]
struct Misses {
    positives: usize,
    missed: usize,
    within_20: usize,
    within_50: usize,
    /// Ranked below 50 or not among the chunks returned.
    further: usize,
    own_positive: usize,
    own_negative: usize,
    others: usize,
}

impl Misses {
    /// Adds one question: its own `positive` and `negative` passages and
    /// the documents a mode ranked for it (a document once per chunk).
    fn add(&mut self, positive: &[String], negative: &[String], ranked: &[String], k: usize) {
        let docs = sovra_retrieval::distinct(ranked.iter().map(String::as_str));
        self.positives += positive.len();
        let before = self.missed;
        for pos in positive {
            match docs.iter().position(|d| d == pos) {
                Some(i) if i < k => continue,
                Some(i) if i < 20 => self.within_20 += 1,
                Some(i) if i < 50 => self.within_50 += 1,
                _ => self.further += 1,
            }
            self.missed += 1;
        }
        if self.missed == before {
            return;
        }
        for d in docs.iter().take(k) {
            if positive.contains(d) {
                self.own_positive += 1;
            } else if negative.contains(d) {
                self.own_negative += 1;
            } else {
                self.others += 1;
            }
        }
    }
}

/// A fusion of a question's two legs into one ranked list of chunk ids.
type FuseFn<'a> = dyn Fn(&[ChunkHit], &[ChunkHit]) -> Vec<(String, f32)> + 'a;

/// nDCG@k of hybrid search over a grid of fusion settings, from each
/// question's two legs fetched once and fused here with the gateway's own
/// [`sovra_retrieval::Fusion`].
async fn fusion_grid(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    p: &Plan<'_>,
    k: usize,
) -> anyhow::Result<()> {
    let mut legs = Vec::with_capacity(p.asked.len());
    for case in &p.asked {
        let lexical = search_chunks(http, url, token, &case.question, "lexical", 100).await?;
        let dense = search_chunks(http, url, token, &case.question, "dense", 100).await?;
        legs.push((case, lexical, dense));
    }
    let ndcg_of = |fuse: &FuseFn| -> f64 {
        let mut ndcg = 0.0;
        for (case, lexical, dense) in &legs {
            let document_of: std::collections::HashMap<&str, &str> = lexical
                .iter()
                .chain(dense)
                .map(|h| (h.chunk.as_str(), h.document.as_str()))
                .collect();
            let ranked: Vec<String> = fuse(lexical, dense)
                .iter()
                .filter_map(|(c, _)| document_of.get(c.as_str()).map(|d| (*d).to_owned()))
                .collect();
            ndcg += score(&ranked, &case.positive, k).0;
        }
        ndcg / legs.len().max(1) as f64
    };
    const KS: [f32; 6] = [5.0, 10.0, 20.0, 40.0, 60.0, 100.0];
    const DENSE_WEIGHTS: [f32; 7] = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0];
    println!();
    println!("hybrid nDCG@{k} by RRF k (rows) and dense weight (columns; lexical weight 1):");
    print!("{:>8}", "k");
    for w in DENSE_WEIGHTS {
        print!(" {w:>7.2}");
    }
    println!();
    let mut best = (f64::MIN, String::new());
    for rrf_k in KS {
        print!("{rrf_k:>8.0}");
        for w in DENSE_WEIGHTS {
            let fusion = sovra_retrieval::Fusion {
                k: rrf_k,
                lexical_weight: 1.0,
                dense_weight: w,
            };
            let ndcg = ndcg_of(&|l, d| {
                let l: Vec<&str> = l.iter().map(|h| h.chunk.as_str()).collect();
                let d: Vec<&str> = d.iter().map(|h| h.chunk.as_str()).collect();
                fusion.fuse(&l, &d)
            });
            if ndcg > best.0 {
                best = (ndcg, format!("RRF k = {rrf_k}, dense weight {w}"));
            }
            print!(" {ndcg:>7.3}");
        }
        println!();
    }
    println!(
        "hybrid nDCG@{k} by a convex combination of min-max normalised scores, by the lexical weight:"
    );
    const ALPHAS: [f32; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
    for a in ALPHAS {
        print!(" {a:>7.1}");
    }
    println!();
    for a in ALPHAS {
        let ndcg = ndcg_of(&|l, d| {
            let l: Vec<(&str, f32)> = l.iter().map(|h| (h.chunk.as_str(), h.score)).collect();
            let d: Vec<(&str, f32)> = d.iter().map(|h| (h.chunk.as_str(), h.score)).collect();
            sovra_retrieval::convex(&l, &d, a)
        });
        if ndcg > best.0 {
            best = (ndcg, format!("convex, lexical weight {a}"));
        }
        print!(" {ndcg:>7.3}");
    }
    println!();
    println!("best: nDCG@{k} {:.3} with {}", best.0, best.1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Misses, passages_as_sources};
    use sovra_eval::sets::{Passage, Set};

    fn ids(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn misses_count_ranks_among_distinct_documents_and_who_held_the_top() {
        let mut m = Misses::default();
        // p1 at rank 1; p2 at rank 3 of distinct documents (n1 twice);
        // p3 never returned. k = 2.
        let ranked = ids(&["p1", "n1", "n1", "p2", "o1"]);
        m.add(&ids(&["p1", "p2", "p3"]), &ids(&["n1"]), &ranked, 2);
        assert_eq!((m.positives, m.missed), (3, 2));
        assert_eq!((m.within_20, m.within_50, m.further), (1, 0, 1));
        assert_eq!((m.own_positive, m.own_negative, m.others), (1, 1, 0));
        // A question with nothing missed adds its positives only.
        m.add(&ids(&["o1"]), &[], &ranked, 10);
        assert_eq!((m.positives, m.missed, m.others), (4, 2, 0));
        // Others' passages in the top k of a question with a miss.
        m.add(&ids(&["x"]), &[], &ids(&["o1", "o2"]), 2);
        assert_eq!((m.missed, m.further, m.others), (3, 2, 2));
    }

    #[test]
    fn the_oracle_numbers_a_questions_passages_as_an_answers_prompt_does() {
        let mut set = Set::default();
        for (id, text) in [("a", "Alpha text."), ("b", "Beta text.")] {
            set.passages.insert(
                id.to_owned(),
                Passage {
                    id: id.to_owned(),
                    title: format!("title {id}"),
                    text: text.to_owned(),
                },
            );
        }
        let sources =
            passages_as_sources(&set, &ids(&["b", "a"])).unwrap_or_else(|e| panic!("sources: {e}"));
        let numbered: Vec<(usize, &str, &str)> = sources
            .iter()
            .map(|s| (s.number, s.document_id.as_str(), s.text.as_str()))
            .collect();
        assert_eq!(numbered, [(1, "b", "Beta text."), (2, "a", "Alpha text.")]);
        let turn =
            sovra_answer::user_turn(&sources, "What is beta?", sovra_answer::Language::English);
        assert!(turn.starts_with("Document 1: title b\n\"\"\"\nBeta text.\n"));
        // A passage a question names but the set lacks is an error, not a
        // shorter prompt.
        let missing = passages_as_sources(&set, &ids(&["a", "zz"]));
        assert!(missing.is_err_and(|e| e.to_string().contains("zz")));
    }
}
