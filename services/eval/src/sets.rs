//! Question sets read into one shape: passages (each one document) and
//! cases (a question, what a right answer holds, and which passages are its
//! own). The format follows the file: `facqa*.csv` (IndoNLU FacQA),
//! `rgb*.json` (RGB, one JSON object a line), `pubmedqa*.json` (PubMedQA
//! `ori_pqal.json`), or `*.jsonl` in Sovra's own format:
//!
//! ```json
//! {"id": "q1", "question": "…", "answer": ["part", ["spelling", "other spelling"]],
//!  "passages": [{"id": "doc-1", "title": "…", "text": "…"}], "language": "en"}
//! ```
//!
//! A passage may give `path` (a text file, relative to the JSONL file's
//! folder) instead of `text`.
//!
//! where `passages` are the question's own documents (a passage id used by
//! several questions is one document) and `decision` (`yes`/`no`/`maybe`)
//! may stand in place of `answer`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::EvalError;

/// PubMedQA's yes/no/maybe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Yes,
    No,
    Maybe,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Yes => "yes",
            Decision::No => "no",
            Decision::Maybe => "maybe",
        }
    }
}

/// What a right answer holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// Every part must appear; a part is any one of its spellings.
    Parts(Vec<Vec<String>>),
    /// The answer's yes/no/maybe.
    Decision(Decision),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub id: String,
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub question: String,
    pub expected: Expected,
    /// Ids of the passages that hold the answer.
    pub positive: Vec<String>,
    /// Ids of passages on the topic that do not hold it (RGB).
    pub negative: Vec<String>,
}

/// A question set: its passages by id and its cases in file order.
#[derive(Debug, Clone, Default)]
pub struct Set {
    pub name: String,
    /// ISO 639-1 code of the questions' language.
    pub language: String,
    pub passages: BTreeMap<String, Passage>,
    pub cases: Vec<Case>,
}

impl Set {
    fn new(name: &str, language: &str) -> Self {
        Self {
            name: name.to_owned(),
            language: language.to_owned(),
            ..Self::default()
        }
    }

    /// Adds a passage under an id derived from its text (the same text is
    /// one document however many questions use it); returns the id.
    fn passage(&mut self, text: &str) -> String {
        let text = text.trim();
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        let id = format!("{}-{}", self.name, &digest[..16]);
        let n = self.passages.len() + 1;
        let name = self.name.clone();
        self.passages.entry(id.clone()).or_insert_with(|| Passage {
            id: id.clone(),
            title: format!("{name} {n}"),
            text: text.to_owned(),
        });
        id
    }
}

/// One part of a list answer in the JSON sets: a string, or a list of
/// acceptable spellings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Part {
    One(String),
    Any(Vec<String>),
}

impl Part {
    fn spellings(self) -> Vec<String> {
        match self {
            Part::One(s) => vec![s],
            Part::Any(v) => v,
        }
    }
}

/// Reads a set, choosing the format by the file's name.
pub fn load(path: &Path) -> Result<Set, EvalError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let at = |e: String| EvalError::Format {
        path: path.display().to_string(),
        detail: e,
    };
    if name.ends_with(".jsonl") {
        let stem = path
            .file_stem()
            .map_or("own".into(), |s| s.to_string_lossy().into_owned());
        own_jsonl(&text, &stem, path.parent().unwrap_or(Path::new("."))).map_err(at)
    } else if name.starts_with("facqa") {
        facqa(&text).map_err(at)
    } else if name.starts_with("rgb") {
        rgb(&text).map_err(at)
    } else if name.starts_with("pubmedqa") {
        pubmedqa(&text).map_err(at)
    } else {
        Err(EvalError::UnknownSet(path.display().to_string()))
    }
}

/// A Python list of strings as written by `repr` (`['a', "b's"]`).
pub fn python_strings(literal: &str) -> Result<Vec<String>, String> {
    let s = literal.trim();
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("not a list: {}", short(s)))?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(quote) = chars.next() else { break };
        if quote != '\'' && quote != '"' {
            return Err(format!("expected a quoted string in {}", short(s)));
        }
        let mut item = String::new();
        let mut closed = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => item.push('\n'),
                    Some('t') => item.push('\t'),
                    Some(other) => item.push(other),
                    None => break,
                },
                c if c == quote => {
                    closed = true;
                    break;
                }
                c => item.push(c),
            }
        }
        if !closed {
            return Err(format!("unterminated string in {}", short(s)));
        }
        out.push(item);
    }
    Ok(out)
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Tokens back to text: no space before closing punctuation or after an
/// opening bracket.
pub fn detokenize(tokens: &[String]) -> String {
    let mut out = String::new();
    for t in tokens {
        let closing = matches!(
            t.as_str(),
            "," | "." | "?" | "!" | ":" | ";" | ")" | "]" | "%" | "'s"
        );
        if !out.is_empty() && !closing && !out.ends_with(['(', '[']) {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

fn facqa(text: &str) -> Result<Set, String> {
    #[derive(Deserialize)]
    struct Row {
        question: String,
        passage: String,
        seq_label: String,
    }
    let mut set = Set::new("facqa", "id");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        let row = row.map_err(|e| format!("row {}: {e}", i + 1))?;
        let question = python_strings(&row.question).map_err(|e| format!("row {}: {e}", i + 1))?;
        let passage = python_strings(&row.passage).map_err(|e| format!("row {}: {e}", i + 1))?;
        let labels = python_strings(&row.seq_label).map_err(|e| format!("row {}: {e}", i + 1))?;
        if labels.len() != passage.len() {
            return Err(format!("row {}: labels and tokens differ in number", i + 1));
        }
        // Each B(-I…) run is one acceptable spelling of the answer.
        let mut spans: Vec<Vec<String>> = Vec::new();
        for (tok, label) in passage.iter().zip(&labels) {
            match label.as_str() {
                "B" => spans.push(vec![tok.clone()]),
                "I" => match spans.last_mut() {
                    Some(span) => span.push(tok.clone()),
                    None => spans.push(vec![tok.clone()]),
                },
                _ => {}
            }
        }
        if spans.is_empty() {
            continue;
        }
        let spellings = spans.iter().map(|s| detokenize(s)).collect();
        let id = set.passage(&detokenize(&passage));
        set.cases.push(Case {
            id: format!("facqa-{}", i + 1),
            question: detokenize(&question),
            expected: Expected::Parts(vec![spellings]),
            positive: vec![id],
            negative: Vec::new(),
        });
    }
    Ok(set)
}

/// Positive passages kept per answer part, and negative passages per
/// question: the RGB authors give a model five passages a question.
const RGB_POSITIVE_PER_PART: usize = 2;
const RGB_NEGATIVE: usize = 3;

fn rgb(text: &str) -> Result<Set, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Positive {
        Grouped(Vec<Vec<String>>),
        Flat(Vec<String>),
    }
    #[derive(Deserialize)]
    struct Row {
        id: serde_json::Value,
        query: String,
        answer: Vec<Part>,
        positive: Positive,
        #[serde(default)]
        negative: Vec<String>,
    }
    let mut set = Set::new("rgb", "zh");
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let parts = row.answer.into_iter().map(Part::spellings).collect();
        let groups = match row.positive {
            Positive::Grouped(g) => g,
            Positive::Flat(f) => vec![f],
        };
        let mut positive = Vec::new();
        for group in &groups {
            for p in group.iter().take(RGB_POSITIVE_PER_PART) {
                let id = set.passage(p);
                if !positive.contains(&id) {
                    positive.push(id);
                }
            }
        }
        let mut negative = Vec::new();
        for p in row.negative.iter().take(RGB_NEGATIVE) {
            let id = set.passage(p);
            if !positive.contains(&id) && !negative.contains(&id) {
                negative.push(id);
            }
        }
        let id = match row.id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        set.cases.push(Case {
            id: format!("rgb-{id}"),
            question: row.query,
            expected: Expected::Parts(parts),
            positive,
            negative,
        });
    }
    Ok(set)
}

fn pubmedqa(text: &str) -> Result<Set, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    struct Entry {
        question: String,
        contexts: Vec<String>,
        #[serde(rename = "final_decision")]
        final_decision: Decision,
    }
    let entries: BTreeMap<String, Entry> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut set = Set::new("pubmedqa", "en");
    for (pmid, e) in entries {
        // The abstract (without its conclusion, as PubMedQA poses it) is one document.
        let id = set.passage(&e.contexts.join("\n\n"));
        set.cases.push(Case {
            id: format!("pubmedqa-{pmid}"),
            question: e.question,
            expected: Expected::Decision(e.final_decision),
            positive: vec![id],
            negative: Vec::new(),
        });
    }
    Ok(set)
}

fn own_jsonl(text: &str, name: &str, base: &Path) -> Result<Set, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct OwnPassage {
        id: String,
        #[serde(default)]
        title: String,
        text: Option<String>,
        path: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Row {
        id: String,
        question: String,
        #[serde(default)]
        answer: Vec<Part>,
        decision: Option<Decision>,
        passages: Vec<OwnPassage>,
        #[serde(default)]
        negative: Vec<OwnPassage>,
        #[serde(default)]
        language: Option<String>,
    }
    let mut set = Set::new(name, "en");
    let mut languages: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if let Some(l) = row.language
            && !languages.contains(&l)
        {
            languages.push(l);
        }
        let expected = match (row.decision, row.answer.is_empty()) {
            (Some(d), true) => Expected::Decision(d),
            (None, false) => Expected::Parts(row.answer.into_iter().map(Part::spellings).collect()),
            _ => {
                return Err(format!(
                    "line {}: give either `answer` or `decision`",
                    i + 1
                ));
            }
        };
        let ids = |ps: Vec<OwnPassage>, set: &mut Set| -> Result<Vec<String>, String> {
            let mut out = Vec::with_capacity(ps.len());
            for p in ps {
                let text = match (p.text, p.path) {
                    (Some(t), None) => t,
                    (None, Some(f)) => std::fs::read_to_string(base.join(&f))
                        .map_err(|e| format!("line {}: {f}: {e}", i + 1))?,
                    _ => return Err(format!("line {}: a passage needs `text` or `path`", i + 1)),
                };
                let title = if p.title.is_empty() {
                    p.id.clone()
                } else {
                    p.title
                };
                set.passages.insert(
                    p.id.clone(),
                    Passage {
                        id: p.id.clone(),
                        title,
                        text,
                    },
                );
                out.push(p.id);
            }
            Ok(out)
        };
        let positive = ids(row.passages, &mut set)?;
        let negative = ids(row.negative, &mut set)?;
        set.language = match languages.as_slice() {
            [] => "en".into(),
            [one] => one.clone(),
            _ => "mixed".into(),
        };
        set.cases.push(Case {
            id: row.id,
            question: row.question,
            expected,
            positive,
            negative,
        });
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_lists_with_both_quotes_and_escapes() {
        assert_eq!(
            python_strings(r#"['a', "it's", 'x\'y', 'b\\c']"#).ok(),
            Some(vec![
                "a".to_owned(),
                "it's".to_owned(),
                "x'y".to_owned(),
                "b\\c".to_owned()
            ])
        );
        assert!(python_strings("['open").is_err());
        assert!(python_strings("not a list").is_err());
    }

    #[test]
    fn tokens_become_readable_text() {
        let t: Vec<String> = [
            "Hezb-ul",
            "Mujahedeen",
            ",",
            "kelompok",
            "(",
            "besar",
            ")",
            ".",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(detokenize(&t), "Hezb-ul Mujahedeen, kelompok (besar).");
    }

    #[test]
    fn facqa_rows_give_the_tagged_span() -> Result<(), String> {
        let csv = "question,passage,seq_label\n\"['Siapa', 'dia', '?']\",\"['Dia', 'adalah', 'Budi', 'Santoso', '.']\",\"['O', 'O', 'B', 'I', 'O']\"\n";
        let set = facqa(csv)?;
        assert_eq!(set.cases.len(), 1);
        assert_eq!(set.cases[0].question, "Siapa dia?");
        assert_eq!(
            set.cases[0].expected,
            Expected::Parts(vec![vec!["Budi Santoso".into()]])
        );
        assert_eq!(set.passages.len(), 1);
        Ok(())
    }

    #[test]
    fn pubmedqa_entries_are_a_decision_and_one_abstract() -> Result<(), String> {
        let json = r#"{"1": {"QUESTION": "Does it?", "CONTEXTS": ["a", "b"], "LONG_ANSWER": "x", "final_decision": "maybe"}}"#;
        let set = pubmedqa(json)?;
        assert_eq!(set.cases[0].expected, Expected::Decision(Decision::Maybe));
        assert_eq!(set.passages.len(), 1);
        Ok(())
    }

    #[test]
    fn own_jsonl_with_passages_inline_or_from_files() -> Result<(), String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = concat!(
            r#"{"id": "a", "question": "q1", "answer": ["x"], "passages": [{"id": "p1", "text": "x y"}], "language": "en"}"#,
            "\n",
            r#"{"id": "b", "question": "q2", "decision": "yes", "passages": [{"id": "p2", "title": "Manifest", "path": "Cargo.toml"}], "language": "id"}"#,
        );
        let set = own_jsonl(text, "demo", dir)?;
        assert_eq!(
            (set.name.as_str(), set.language.as_str()),
            ("demo", "mixed")
        );
        assert_eq!(set.cases[1].expected, Expected::Decision(Decision::Yes));
        assert!(set.passages["p2"].text.contains("sovra-eval"));
        assert_eq!(set.passages["p1"].title, "p1");
        assert!(own_jsonl(r#"{"id": "c", "question": "q", "passages": []}"#, "d", dir).is_err());
        Ok(())
    }

    #[test]
    fn rgb_parts_and_passages() -> Result<(), String> {
        let line = r#"{"id": 7, "query": "q", "answer": ["a", ["b", "B2"]], "positive": [["p1", "p2", "p3"], ["p4"]], "negative": ["n1", "n2", "n3", "n4"]}"#;
        let set = rgb(line)?;
        let c = &set.cases[0];
        assert_eq!(c.id, "rgb-7");
        assert_eq!(
            c.expected,
            Expected::Parts(vec![vec!["a".into()], vec!["b".into(), "B2".into()]])
        );
        assert_eq!(c.positive.len(), 3, "two per part");
        assert_eq!(c.negative.len(), 3);
        Ok(())
    }
}
