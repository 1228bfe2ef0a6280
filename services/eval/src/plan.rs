//! Which questions are asked and what is ingested, with which ACL groups.
//!
//! Every asked question `i` owns the group `q<i>` on its own passages; hard
//! negatives (passages on the topic without the answer) carry `neg`, and
//! passages of questions not asked (distractors) carry `pool`. A reader with
//! every group answers the questions; a reader with every group but `q<i>`
//! asks question `i` again without its own passages in reach: the
//! negative-rejection case. So one index serves both, through the gateway's
//! own permission filter.

use sha2::{Digest, Sha256};

use crate::EvalError;
use crate::score::holds_for;
use crate::sets::{Case, Expected, Passage, Set};

/// The most questions one run asks: a reader carries a group per question
/// (the gateway's `auth.max_groups` is 256).
pub const MAX_ASKED: usize = 250;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Questions asked with their passages in reach.
    pub limit: usize,
    /// Of those, questions asked again without them.
    pub negatives: usize,
    /// Passages of other questions ingested as distractors.
    pub distractors: usize,
}

/// A document to ingest and the groups that may read it.
#[derive(Debug, Clone)]
pub struct Document<'a> {
    pub passage: &'a Passage,
    pub groups: Vec<String>,
}

#[derive(Debug)]
pub struct Plan<'a> {
    pub documents: Vec<Document<'a>>,
    pub asked: Vec<&'a Case>,
    /// Indices into `asked` of the questions also asked without their passages.
    pub negatives: Vec<usize>,
}

pub fn question_group(i: usize) -> String {
    format!("q{i}")
}

impl Plan<'_> {
    /// Every group: a reader who may see all documents.
    pub fn all_groups(&self) -> Vec<String> {
        let mut g: Vec<String> = (0..self.asked.len()).map(question_group).collect();
        g.push("neg".into());
        g.push("pool".into());
        g
    }

    /// Every group but question `i`'s own.
    pub fn groups_without(&self, i: usize) -> Vec<String> {
        let own = question_group(i);
        self.all_groups()
            .into_iter()
            .filter(|g| *g != own)
            .collect()
    }

    /// Whether a passage still in reach of held-out question `i` (one of
    /// another group) is about the question (`about(question, text)`: the
    /// caller's relevance measure) and holds its reference answer, as
    /// accuracy counts a reference found: another report of the same event,
    /// say. Such a question is not unanswerable, and answering it from that
    /// passage is right; negative rejection is also counted without such
    /// questions. Always false for a yes/no/maybe decision.
    pub fn reference_in_reach(&self, i: usize, about: impl Fn(&str, &str) -> bool) -> bool {
        let Some(case) = self.asked.get(i) else {
            return false;
        };
        let Expected::Parts(parts) = &case.expected else {
            return false;
        };
        let readable = self.groups_without(i);
        self.documents.iter().any(|d| {
            let text = format!("{}\n{}", d.passage.title, d.passage.text);
            d.groups.iter().any(|g| readable.contains(g))
                && holds_for(&text, &case.question, parts)
                && about(&case.question, &text)
        })
    }
}

/// Questions in a fixed order spread over the whole file (by the hash of
/// their ids), so a slice is a sample, not the file's first topic.
fn spread(set: &Set) -> Vec<&Case> {
    let mut cases: Vec<(String, &Case)> = set
        .cases
        .iter()
        .map(|c| (hex::encode(Sha256::digest(c.id.as_bytes())), c))
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases.into_iter().map(|(_, c)| c).collect()
}

pub fn plan(set: &Set, opts: Options) -> Result<Plan<'_>, EvalError> {
    if opts.limit == 0 || opts.limit > MAX_ASKED {
        return Err(EvalError::Options(format!(
            "--limit must be between 1 and {MAX_ASKED}"
        )));
    }
    let ordered = spread(set);
    let asked: Vec<&Case> = ordered.iter().take(opts.limit).copied().collect();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new(); // passage id -> groups, in order
    let mut add = |id: &str, group: String| match groups.iter_mut().find(|(p, _)| p == id) {
        Some((_, g)) => {
            if !g.contains(&group) {
                g.push(group);
            }
        }
        None => groups.push((id.to_owned(), vec![group])),
    };
    for (i, c) in asked.iter().enumerate() {
        for p in &c.positive {
            add(p, question_group(i));
        }
        for p in &c.negative {
            add(p, "neg".into());
        }
    }
    let mut extra = 0;
    for c in ordered.iter().skip(opts.limit) {
        if extra >= opts.distractors {
            break;
        }
        for p in &c.positive {
            add(p, "pool".into());
            extra += 1;
        }
    }
    let mut documents = Vec::with_capacity(groups.len());
    for (id, g) in groups {
        let passage = set.passages.get(&id).ok_or_else(|| EvalError::Format {
            path: set.name.clone(),
            detail: format!("passage {id} is named by a question but missing"),
        })?;
        documents.push(Document { passage, groups: g });
    }
    // A question can be asked without its passages only when no other group
    // reaches them.
    let negatives = (0..asked.len())
        .filter(|&i| {
            let own = question_group(i);
            asked[i].positive.iter().all(|p| {
                documents
                    .iter()
                    .find(|d| d.passage.id == *p)
                    .is_some_and(|d| d.groups == [own.clone()])
            })
        })
        .take(opts.negatives)
        .collect();
    Ok(Plan {
        documents,
        asked,
        negatives,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sets::{Expected, Passage};

    fn set() -> Set {
        let mut s = Set::default();
        for id in ["a", "b", "c", "shared", "n"] {
            s.passages.insert(
                id.into(),
                Passage {
                    id: id.into(),
                    title: id.into(),
                    text: id.into(),
                },
            );
        }
        let case = |id: &str, pos: &[&str], neg: &[&str]| Case {
            id: id.into(),
            question: id.into(),
            expected: Expected::Parts(vec![]),
            positive: pos.iter().map(|s| s.to_string()).collect(),
            negative: neg.iter().map(|s| s.to_string()).collect(),
        };
        s.cases = vec![
            case("1", &["a"], &["n"]),
            case("2", &["b", "shared"], &[]),
            case("3", &["c", "shared"], &[]),
        ];
        s
    }

    /// Three questions asked, all three held out when they can be.
    fn three_held_out(s: &Set) -> Result<Plan<'_>, EvalError> {
        plan(
            s,
            Options {
                limit: 3,
                negatives: 3,
                distractors: 0,
            },
        )
    }

    #[test]
    fn held_out_questions_lose_only_their_own_passages() -> Result<(), EvalError> {
        let s = set();
        let p = three_held_out(&s)?;
        assert_eq!(p.documents.len(), 5);
        // Questions 2 and 3 share a passage: neither can be held out.
        assert_eq!(p.negatives.len(), 1);
        let i = p.negatives[0];
        assert_eq!(p.asked[i].id, "1");
        let without = p.groups_without(i);
        let own = p.documents.iter().find(|d| d.passage.id == "a");
        assert!(own.is_some_and(|d| d.groups.iter().all(|g| !without.contains(g))));
        let neg = p.documents.iter().find(|d| d.passage.id == "n");
        assert!(neg.is_some_and(|d| d.groups.iter().any(|g| without.contains(g))));
        Ok(())
    }

    #[test]
    fn distractors_come_from_questions_not_asked() -> Result<(), EvalError> {
        let s = set();
        let p = plan(
            &s,
            Options {
                limit: 1,
                negatives: 1,
                distractors: 10,
            },
        )?;
        assert_eq!(p.asked.len(), 1);
        assert!(p.documents.iter().any(|d| d.groups == ["pool"]));
        assert!(
            plan(
                &s,
                Options {
                    limit: 0,
                    negatives: 0,
                    distractors: 0
                }
            )
            .is_err()
        );
        Ok(())
    }

    #[test]
    fn a_reference_another_passage_in_reach_holds_is_found() -> Result<(), EvalError> {
        let mut s = Set::default();
        let mut passage = |id: &str, text: &str| {
            s.passages.insert(
                id.into(),
                Passage {
                    id: id.into(),
                    title: format!("title {id}"),
                    text: text.into(),
                },
            );
        };
        passage("own1", "The bridge opened in 1998.");
        passage("own2", "The mayor is Budi Santoso.");
        passage("other", "Another report: the bridge opened in 1998.");
        let case = |id: &str, q: &str, answer: &str, own: &str| Case {
            id: id.into(),
            question: q.into(),
            expected: Expected::Parts(vec![vec![answer.into()]]),
            positive: vec![own.into()],
            negative: vec![],
        };
        s.cases = vec![
            case("1", "When did the bridge open?", "1998", "own1"),
            case("2", "Who is the mayor?", "Budi Santoso", "own2"),
            case("3", "Which report?", "another report", "other"),
        ];
        let p = three_held_out(&s)?;
        let by_id = |id: &str| p.asked.iter().position(|c| c.id == id);
        let (Some(bridge), Some(mayor)) = (by_id("1"), by_id("2")) else {
            panic!("both questions are asked");
        };
        // Question 3's passage still tells the bridge's year; nothing else
        // names the mayor, and a question's own passage does not count.
        let about_bridges = |q: &str, t: &str| q.contains("bridge") && t.contains("bridge");
        assert!(p.reference_in_reach(bridge, about_bridges));
        assert!(!p.reference_in_reach(mayor, about_bridges));
        assert!(!p.reference_in_reach(99, about_bridges));
        // A passage holding the reference about something else is no answer.
        assert!(!p.reference_in_reach(bridge, |_, _| false));
        Ok(())
    }
}
