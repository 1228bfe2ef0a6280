//! Scoring one answer and summing a run up.

use crate::sets::{Decision, Expected};

/// Lower case, letters and digits only (CJK included): "Hezb-ul Mujahedeen"
/// and "hezb ul mujahedeen" compare equal, and so do "1月3日" and "1 月 3 日".
pub fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether an answer holds every part (any one spelling of each), as the
/// RGB authors score: the reference appears in the generated text.
pub fn holds(answer: &str, parts: &[Vec<String>]) -> bool {
    holds_for(answer, "", parts)
}

/// [`holds`], where a reference may leave out the words it shares with the
/// question: FacQA tags "pangkalan Karshi - Khanabad" for "Apa nama
/// pangkalan militer AS di Uzbekistan?", and "Karshi-Khanabad" answers it.
pub fn holds_for(answer: &str, question: &str, parts: &[Vec<String>]) -> bool {
    let a = normalize(answer);
    let asked: Vec<String> = question
        .split(|c: char| !c.is_alphanumeric())
        .map(normalize)
        .filter(|w| !w.is_empty())
        .collect();
    let found = |s: &str| {
        let s = normalize(s);
        !s.is_empty() && a.contains(&s)
    };
    let without_question_words = |s: &str| -> String {
        s.split_whitespace()
            .filter(|w| !asked.contains(&normalize(w)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    !parts.is_empty()
        && parts.iter().all(|spellings| {
            spellings
                .iter()
                .any(|s| found(s) || found(&without_question_words(s)))
        })
}

/// The yes/no/maybe an answer gives: its first word when that is one, else
/// hedging words for maybe, a negation for no, and yes otherwise.
pub fn decision(answer: &str) -> Decision {
    let lower = answer.to_lowercase();
    let first: String = lower
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect();
    match first.as_str() {
        "yes" => return Decision::Yes,
        "no" => return Decision::No,
        "maybe" => return Decision::Maybe,
        _ => {}
    }
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    if has("maybe") || has("unclear") || has("uncertain") || has("inconclusive") {
        Decision::Maybe
    } else if has("not") || has("no") || has("neither") || has("cannot") {
        Decision::No
    } else {
        Decision::Yes
    }
}

/// Whether an answer to `question` is right.
pub fn correct(answer: &str, question: &str, expected: &Expected) -> bool {
    match expected {
        Expected::Parts(parts) => holds_for(answer, question, parts),
        Expected::Decision(d) => decision(answer) == *d,
    }
}

/// One question's result.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub correct: bool,
    pub refused: bool,
    /// The answer is in the question's language.
    pub same_language: bool,
    /// Documents of the cited chunks (one entry per cited chunk).
    pub cited_documents: Vec<String>,
    /// How many of those are the question's own passages.
    pub cited_own: usize,
    /// One of the question's own passages was retrieved.
    pub retrieved_own: bool,
    pub latency_ms: f64,
    /// Highest dense cosine and BM25 score among the hits (the gate's inputs).
    pub best_dense: Option<f32>,
    pub best_lexical: Option<f32>,
    /// Highest share of the question's terms a hit holds.
    pub best_coverage: Option<f32>,
    /// The question's language as the gateway detects it (ISO 639-1), which
    /// decides whether the dense gate reads it.
    pub language: String,
    /// The answer's check (answer.verify) did not confirm the answer, so it
    /// was returned as the refusal.
    pub not_confirmed: bool,
    /// The check's margin (ln p(yes)/p(no) of its reply's first token), when
    /// it ran.
    pub check_margin: Option<f32>,
    /// A held-out question whose reference a passage still in its reach,
    /// about the question, holds ([`crate::plan::Plan::reference_in_reach`]).
    pub reference_in_reach: bool,
}

/// Figures of one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub questions: usize,
    pub accuracy: f64,
    pub refused_answerable: f64,
    pub citation_precision: f64,
    /// Answers (not refusals) in the question's language.
    pub same_language: f64,
    /// Answered questions (not refused) whose citations include an own passage.
    pub cites_own: f64,
    pub retrieval_hit: f64,
    pub negatives: usize,
    pub negative_rejection: f64,
    /// Held-out questions whose reference a passage in their reach holds,
    /// and negative rejection over the others (the truly unanswerable; 0
    /// when there are none).
    pub negatives_in_reach: usize,
    pub negative_rejection_out_of_reach: f64,
    /// Answerable and held-out questions whose answer the answer's check
    /// turned into the refusal (counts).
    pub not_confirmed_answerable: usize,
    pub not_confirmed_negatives: usize,
    pub p50_latency_ms: f64,
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

/// The `q`-quantile (0..=1) of values, by nearest rank; 0 for none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn summarize(answerable: &[Outcome], negatives: &[Outcome]) -> Summary {
    let cited: usize = answerable.iter().map(|o| o.cited_documents.len()).sum();
    let cited_own: usize = answerable.iter().map(|o| o.cited_own).sum();
    let answered: Vec<&Outcome> = answerable.iter().filter(|o| !o.refused).collect();
    let latencies: Vec<f64> = answerable
        .iter()
        .chain(negatives)
        .map(|o| o.latency_ms)
        .collect();
    Summary {
        questions: answerable.len(),
        accuracy: ratio(
            answerable.iter().filter(|o| o.correct).count(),
            answerable.len(),
        ),
        refused_answerable: ratio(
            answerable.iter().filter(|o| o.refused).count(),
            answerable.len(),
        ),
        citation_precision: ratio(cited_own, cited),
        same_language: ratio(
            answered.iter().filter(|o| o.same_language).count(),
            answered.len(),
        ),
        cites_own: ratio(
            answered.iter().filter(|o| o.cited_own > 0).count(),
            answered.len(),
        ),
        retrieval_hit: ratio(
            answerable.iter().filter(|o| o.retrieved_own).count(),
            answerable.len(),
        ),
        negatives: negatives.len(),
        negative_rejection: ratio(
            negatives.iter().filter(|o| o.refused).count(),
            negatives.len(),
        ),
        negatives_in_reach: negatives.iter().filter(|o| o.reference_in_reach).count(),
        negative_rejection_out_of_reach: ratio(
            negatives
                .iter()
                .filter(|o| !o.reference_in_reach && o.refused)
                .count(),
            negatives.iter().filter(|o| !o.reference_in_reach).count(),
        ),
        not_confirmed_answerable: answerable.iter().filter(|o| o.not_confirmed).count(),
        not_confirmed_negatives: negatives.iter().filter(|o| o.not_confirmed).count(),
        p50_latency_ms: quantile(&latencies, 0.5),
    }
}

/// What a run would have scored with a setting at another bar (the
/// answer's check, [`margin_sweep`]; the relevance gate, [`gate_sweep`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReplayRow {
    pub bar: f32,
    pub accuracy: f64,
    pub refused_answerable: f64,
    pub negative_rejection: f64,
    /// Over the held-out questions whose reference no passage in reach
    /// holds ([`Summary::negative_rejection_out_of_reach`]).
    pub negative_rejection_out_of_reach: f64,
}

/// The run's figures at each bar, a question counting as refused where
/// `refused_at` says so.
fn replay(
    answerable: &[Outcome],
    negatives: &[Outcome],
    bars: &[f32],
    refused_at: impl Fn(&Outcome, f32) -> bool,
) -> Vec<ReplayRow> {
    bars.iter()
        .map(|&bar| ReplayRow {
            bar,
            accuracy: ratio(
                answerable
                    .iter()
                    .filter(|o| o.correct && !refused_at(o, bar))
                    .count(),
                answerable.len(),
            ),
            refused_answerable: ratio(
                answerable.iter().filter(|o| refused_at(o, bar)).count(),
                answerable.len(),
            ),
            negative_rejection: ratio(
                negatives.iter().filter(|o| refused_at(o, bar)).count(),
                negatives.len(),
            ),
            negative_rejection_out_of_reach: ratio(
                negatives
                    .iter()
                    .filter(|o| !o.reference_in_reach && refused_at(o, bar))
                    .count(),
                negatives.iter().filter(|o| !o.reference_in_reach).count(),
            ),
        })
        .collect()
}

/// The answer's check replayed at other bars. An answer the check confirmed
/// whose margin is at or below `bar` becomes a refusal; one it refused
/// (its margin below the run's own bar) stays one, so bars under the run's
/// own bar are not replayed faithfully: run with a low
/// `answer.verify_min_margin` to sweep the whole range.
pub fn margin_sweep(answerable: &[Outcome], negatives: &[Outcome], bars: &[f32]) -> Vec<ReplayRow> {
    replay(answerable, negatives, bars, |o, bar| {
        o.refused || o.check_margin.is_some_and(|m| m <= bar)
    })
}

/// The relevance gate replayed at higher question-coverage bars
/// (`answer.min_question_coverage`). `admits(outcome, bar)` says whether
/// the gate at `bar` lets the question through: the caller passes the
/// gateway's own rule (`sovra_answer::Gate::admits`) applied to the
/// question's best hit scores and language, which is exact because a hit
/// is relevant by either score and one relevant hit lets the question
/// through. A question not admitted becomes a refusal; the others keep
/// their outcome, which is exact for bars at or above the run's own gate
/// when that is at or above the context floor
/// (`answer.min_context_coverage`): the sources of a question that passes
/// are then the same at every such bar.
pub fn gate_sweep(
    answerable: &[Outcome],
    negatives: &[Outcome],
    bars: &[f32],
    admits: impl Fn(&Outcome, f32) -> bool,
) -> Vec<ReplayRow> {
    replay(answerable, negatives, bars, |o, bar| {
        o.refused || !admits(o, bar)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_whatever_the_spacing_and_case() {
        let parts = vec![vec!["Hezb-ul Mujahedeen".to_owned()]];
        assert!(holds("Kelompok hezb ul mujahedeen menyatakan…", &parts));
        assert!(!holds("Kelompok militan Kashmir", &parts));
        let both = vec![
            vec!["1月3日".to_owned()],
            vec!["1月12日".to_owned(), "1月12号".to_owned()],
        ];
        assert!(holds("宣誓仪式在1月3日，首次会议在1月12号。", &both));
        assert!(
            !holds("宣誓仪式在1月3日。", &both),
            "every part must appear"
        );
        assert!(!holds("anything", &[]));
    }

    #[test]
    fn a_reference_need_not_repeat_the_question() {
        let q = "Apa nama pangkalan militer AS di Uzbekistan?";
        let parts = vec![vec!["pangkalan Karshi - Khanabad".to_owned()]];
        assert!(holds_for("Namanya Karshi-Khanabad.", q, &parts));
        assert!(!holds("Namanya Karshi-Khanabad.", &parts));
        assert!(!holds_for("Namanya Termez.", q, &parts));
        let all_asked = vec![vec!["Uzbekistan".to_owned()]];
        assert!(
            !holds_for("Tidak tahu.", q, &all_asked),
            "an empty remainder matches nothing"
        );
    }

    #[test]
    fn decisions_from_free_text() {
        assert_eq!(decision("Yes, mitochondria play a role."), Decision::Yes);
        assert_eq!(decision("No. The trial found nothing."), Decision::No);
        assert_eq!(decision("The drug did not improve survival."), Decision::No);
        assert_eq!(decision("The evidence is unclear."), Decision::Maybe);
        assert_eq!(decision("Mitochondria play a role."), Decision::Yes);
        assert_eq!(
            decision("Nothing suggests harm."),
            Decision::Yes,
            "`no` only as a word"
        );
    }

    #[test]
    fn the_check_is_replayed_at_each_bar() {
        let answer = |correct, m| Outcome {
            correct,
            check_margin: Some(m),
            ..Outcome::default()
        };
        let answerable = [
            answer(true, 3.0),
            answer(true, 0.5),
            answer(false, -0.5),
            Outcome {
                refused: true,
                ..Outcome::default()
            },
        ];
        let negatives = [answer(false, 1.0), answer(false, -2.0)];
        let rows = margin_sweep(&answerable, &negatives, &[-5.0, 0.0, 1.0]);
        let figures = figures(&rows);
        assert_eq!(
            figures,
            vec![(0.5, 0.25, 0.0), (0.5, 0.5, 0.5), (0.25, 0.75, 1.0)]
        );
    }

    /// Accuracy, refused (answerable) and negative rejection of each row.
    fn figures(rows: &[ReplayRow]) -> Vec<(f64, f64, f64)> {
        rows.iter()
            .map(|r| (r.accuracy, r.refused_answerable, r.negative_rejection))
            .collect()
    }

    #[test]
    fn the_gate_replayed_refuses_what_no_hit_lets_through() {
        let answered = |coverage: f32, dense: f32, correct: bool| Outcome {
            correct,
            best_coverage: Some(coverage),
            best_dense: Some(dense),
            ..Outcome::default()
        };
        let answerable = [
            answered(0.9, 0.5, true),
            answered(0.4, 0.5, true),
            answered(0.6, 0.5, false),
            Outcome {
                refused: true,
                best_coverage: Some(0.9),
                ..Outcome::default()
            },
        ];
        let negatives = [
            answered(0.45, 0.9, false),
            answered(0.3, 0.5, false),
            // Held out, and another passage in reach holds its reference.
            Outcome {
                reference_in_reach: true,
                ..answered(0.6, 0.5, true)
            },
        ];
        let coverage = |o: &Outcome, bar: f32| o.best_coverage.is_some_and(|c| c >= bar);
        let rows = gate_sweep(&answerable, &negatives, &[0.3, 0.5, 0.7], coverage);
        let figures = figures(&rows);
        assert_eq!(
            figures,
            [(0.5, 0.25, 0.0), (0.25, 0.5, 2.0 / 3.0), (0.25, 0.75, 1.0)]
        );
        let out_of_reach: Vec<f64> = rows
            .iter()
            .map(|r| r.negative_rejection_out_of_reach)
            .collect();
        assert_eq!(out_of_reach, [0.0, 1.0, 1.0]);
        // A rule that also admits a close hit lets it through at any
        // coverage bar.
        let dense = gate_sweep(&answerable, &negatives, &[0.7], |o, bar| {
            coverage(o, bar) || o.best_dense.is_some_and(|d| d >= 0.8)
        });
        assert_eq!(dense[0].negative_rejection, 2.0 / 3.0);
        assert_eq!(dense[0].negative_rejection_out_of_reach, 0.5);
        assert_eq!(dense[0].accuracy, 0.25);
    }

    #[test]
    fn summary_figures() {
        let right = Outcome {
            correct: true,
            cited_documents: vec!["a".into(), "b".into()],
            cited_own: 1,
            retrieved_own: true,
            latency_ms: 10.0,
            ..Outcome::default()
        };
        let refused = Outcome {
            refused: true,
            latency_ms: 30.0,
            not_confirmed: true,
            ..Outcome::default()
        };
        let answered_from_another_report = Outcome {
            reference_in_reach: true,
            ..right.clone()
        };
        let s = summarize(
            &[right.clone(), refused.clone()],
            &[refused, right, answered_from_another_report],
        );
        assert_eq!(s.negatives, 3);
        assert_eq!(s.negatives_in_reach, 1);
        assert_eq!(s.negative_rejection_out_of_reach, 0.5);
        assert_eq!(s.not_confirmed_answerable, 1);
        assert_eq!(s.not_confirmed_negatives, 1);
        assert_eq!(s.accuracy, 0.5);
        assert_eq!(s.citation_precision, 0.5);
        assert_eq!(s.cites_own, 1.0);
        assert_eq!(s.retrieval_hit, 0.5);
        assert!((s.negative_rejection - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.p50_latency_ms, 10.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
    }
}
