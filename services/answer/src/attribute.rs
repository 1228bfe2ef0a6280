//! Citations by attribution: each sentence of an answer is credited to the
//! source that holds most of what the sentence adds to the question. The
//! model is not asked to write source markers (small models write markers
//! instead of answers); the gateway finds the support itself.
//!
//! Text is compared as units: lower-cased words of letters and digits, and
//! character bigrams of Chinese, Japanese and Korean runs (which have no
//! spaces). A sentence's *new* units are those the question does not
//! already contain; a source supports the sentence when it holds at least
//! half of them. When the best source leaves a good part of the sentence
//! uncovered (an answer that joins facts from two sources), the source that
//! covers most of the rest is credited too.

use std::collections::BTreeSet;

/// Share of a sentence's units a source must hold to be credited.
const MIN_COVERAGE: f32 = 0.5;
/// Share of the rest (what the first source left uncovered, joining words
/// included) a further source must hold.
const MIN_REST_COVERAGE: f32 = 0.35;
/// Most sources credited for one sentence.
const MAX_PER_SENTENCE: usize = 3;

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// How a run of Chinese becomes units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Every bigram of the run, less question words: overlap with the
    /// question's own phrasing (the relevance gate, "is this passage about
    /// this question?").
    Phrases,
    /// Bigrams within the words of a run cut at function characters (an
    /// answer's facts, whatever joins them: attribution).
    Words,
}

/// The comparison units of a text for attribution: words, and Chinese read
/// as words ([`Reading::Words`]).
pub fn units(text: &str) -> BTreeSet<String> {
    units_as(text, Reading::Words)
}

fn units_as(text: &str, reading: Reading) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    // After "document" (or "documents", "dokumen") a number names a
    // source of the prompt ("Document 2"), not a fact: it is not a unit.
    let mut after_reference = false;
    let mut flush_word = |w: &mut String, out: &mut BTreeSet<String>| {
        let number = w.chars().all(|c| c.is_ascii_digit());
        let names_a_source = number && after_reference;
        if DOCUMENT_WORDS.contains(&w.as_str()) {
            after_reference = true;
        } else if !w.is_empty() && !names_a_source {
            after_reference &= STOPWORDS.contains(&w.as_str());
            let long = w.chars().count() >= 2 || number;
            if long && !STOPWORDS.contains(&w.as_str()) {
                out.insert(std::mem::take(w));
            }
        }
        w.clear();
    };
    let flush_cjk = |run: &mut Vec<char>, out: &mut BTreeSet<String>| {
        let segments = match reading {
            Reading::Words => cjk_segments(run),
            Reading::Phrases => vec![run.as_slice()],
        };
        for segment in segments {
            match segment.len() {
                0 => {}
                1 => {
                    out.insert(segment[0].to_string());
                }
                _ => {
                    for pair in segment.windows(2) {
                        let bigram: String = pair.iter().collect();
                        if reading == Reading::Words || !PHRASE_STOPWORDS.contains(&bigram.as_str())
                        {
                            out.insert(bigram);
                        }
                    }
                }
            }
        }
        run.clear();
    };
    for c in text.chars() {
        // Digits next to CJK characters belong to their run ("1月3日").
        if is_cjk(c) || (c.is_ascii_digit() && !cjk.is_empty()) {
            if is_cjk(c) && !word.is_empty() {
                if word.chars().all(|d| d.is_ascii_digit()) {
                    cjk.extend(std::mem::take(&mut word).chars());
                } else {
                    flush_word(&mut word, &mut out);
                }
            }
            cjk.push(c);
        } else if c.is_alphanumeric() {
            flush_cjk(&mut cjk, &mut out);
            word.extend(c.to_lowercase());
        } else {
            flush_word(&mut word, &mut out);
            flush_cjk(&mut cjk, &mut out);
        }
    }
    flush_word(&mut word, &mut out);
    flush_cjk(&mut cjk, &mut out);
    out
}

/// Chinese function characters (particles, conjunctions, the copula,
/// common prepositions): a run of Chinese is cut at them before it is made
/// into bigrams, so "金晨和王安宇" gives 金晨, 王安, 安宇 and not the
/// bigrams across the names ("晨和", "和王") that no source holds.
const CJK_FUNCTION_CHARS: &[char] = &[
    '的', '了', '和', '与', '及', '是', '在', '为', '也', '都', '而', '或', '吗', '呢', '吧', '着',
    '之', '其', '这', '那', '被', '把', '将', '于', '由',
];

/// Splits a run of CJK characters at function characters and at
/// [`STOPWORDS`] and [`DOCUMENT_WORDS`] written in CJK (question words, and
/// what models say about the documents, "根据文档").
fn cjk_segments(run: &[char]) -> Vec<&[char]> {
    let mut segments = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < run.len() {
        let stop_len = if CJK_FUNCTION_CHARS.contains(&run[i]) {
            1
        } else {
            STOPWORDS
                .iter()
                .chain(DOCUMENT_WORDS)
                .filter(|w| w.chars().next().is_some_and(is_cjk))
                .find_map(|w| prefix_len(&run[i..], w))
                .unwrap_or(0)
        };
        if stop_len > 0 {
            segments.push(&run[start..i]);
            // "文档2": the number names a source of the prompt.
            let reference = DOCUMENT_WORDS
                .iter()
                .any(|w| prefix_len(&run[i..], w).is_some());
            i += stop_len;
            while reference && i < run.len() && run[i].is_ascii_digit() {
                i += 1;
            }
            start = i;
        } else {
            i += 1;
        }
    }
    segments.push(&run[start..]);
    segments
}

/// The length in characters of `word` when `run` starts with it.
fn prefix_len(run: &[char], word: &str) -> Option<usize> {
    let mut n = 0;
    for c in word.chars() {
        if run.get(n) != Some(&c) {
            return None;
        }
        n += 1;
    }
    Some(n)
}

/// Sentences that only decide a yes-or-no question (letters only, lower
/// case).
const DECISIONS: &[&str] = &[
    "yes", "no", "maybe", "ya", "tidak", "bukan", "mungkin", "是", "是的", "不", "不是", "对",
    "对的",
];

fn is_decision(sentence: &str) -> bool {
    let bare: String = sentence
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    DECISIONS.contains(&bare.as_str())
}

/// Words by which an answer names a source of its prompt ("Document 2").
const DOCUMENT_WORDS: &[&str] = &["document", "documents", "dokumen", "文档"];

/// Function and question words that say nothing of the topic (English,
/// Indonesian, Chinese), and the words answers use to speak of their
/// sources ("according to the documents"): not units.
const STOPWORDS: &[&str] = &[
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "when",
    "where",
    "why",
    "how",
    "is",
    "are",
    "was",
    "were",
    "do",
    "does",
    "did",
    "the",
    "of",
    "in",
    "on",
    "for",
    "to",
    "and",
    "or",
    "an",
    "by",
    "with",
    "at",
    "many",
    "much",
    "apa",
    "apakah",
    "siapa",
    "siapakah",
    "kapan",
    "kapankah",
    "dimana",
    "manakah",
    "mana",
    "berapa",
    "berapakah",
    "bagaimana",
    "mengapa",
    "yang",
    "di",
    "ke",
    "dari",
    "dan",
    "itu",
    "ini",
    "dengan",
    "untuk",
    "pada",
    "adalah",
    "according",
    "based",
    "provided",
    "mentioned",
    "berdasarkan",
    "menurut",
    "disebutkan",
    "什么",
    "多少",
    "哪个",
    "哪些",
    "哪里",
    "根据",
    "分别",
    "包括",
    "提到",
];

/// Bigrams of question words, and of question words with what joins them
/// ("是什么", "的时间"), that say nothing of a question's topic
/// ([`Reading::Phrases`]).
const PHRASE_STOPWORDS: &[&str] = &["什么", "多少", "哪个", "哪些", "是什", "的时"];

/// A question needs this many topic units matched before a share of them
/// means anything: one common word of a two-word question is not a match.
const MIN_TOPIC_UNITS: usize = 3;

/// Share of a question's topic units that a text holds, out of at least
/// [`MIN_TOPIC_UNITS`]: the relevance gate's measure of whether a passage is
/// about the question, in any of the three languages. Chinese is compared
/// by phrase ([`Reading::Phrases`]): read as words, the on-topic passages
/// of another year or event held as much of RGB's questions as their own
/// passages did, and the gate let three times as many of its held-out
/// questions through (docs/answers.md).
pub fn question_coverage(question: &str, text: &str) -> f32 {
    let asked = units_as(question, Reading::Phrases);
    let held = units_as(text, Reading::Phrases);
    let matched = asked.iter().filter(|u| held.contains(*u)).count();
    matched as f32 / asked.len().max(MIN_TOPIC_UNITS) as f32
}

/// Sentences of an answer (Latin and CJK full stops, question and
/// exclamation marks, line breaks).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end_here = match c {
            '。' | '！' | '？' | '\n' => true,
            '.' | '!' | '?' => chars.peek().is_none_or(|(_, n)| n.is_whitespace()),
            _ => false,
        };
        if end_here {
            let end = i + c.len_utf8();
            if !text[start..end].trim().is_empty() {
                out.push(text[start..end].trim());
            }
            start = end;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(text[start..].trim());
    }
    out
}

fn coverage(want: &BTreeSet<String>, have: &BTreeSet<String>) -> f32 {
    if want.is_empty() {
        return 0.0;
    }
    want.iter().filter(|u| have.contains(*u)).count() as f32 / want.len() as f32
}

/// The 0-based indices of the sources (given as texts, in rank order) that
/// support the answer, in rank order.
pub fn attribute(answer: &str, question: &str, sources: &[&str]) -> Vec<usize> {
    let asked = units(question);
    let held: Vec<BTreeSet<String>> = sources.iter().map(|s| units(s)).collect();
    let mut credited: Vec<usize> = Vec::new();
    for sentence in sentences(answer) {
        // A bare decision ("Yes.", "Tidak.", "是的。") says the question
        // holds: it is supported by the source holding the question.
        let all = if is_decision(sentence) {
            asked.clone()
        } else {
            units(sentence)
        };
        let new: BTreeSet<String> = all.difference(&asked).cloned().collect();
        // What the sentence adds to the question; when no source holds that
        // (a yes/no answer restating the question), the whole sentence.
        let (mut want, mut fallback) = if new.is_empty() {
            (all, None)
        } else {
            (new, Some(all))
        };
        let mut credits = 0;
        while credits < MAX_PER_SENTENCE && !want.is_empty() {
            let best = held
                .iter()
                .enumerate()
                .map(|(i, h)| (i, coverage(&want, h)))
                // Highest coverage; the better-ranked source on a tie.
                .fold(None::<(usize, f32)>, |acc, (i, c)| match acc {
                    Some((_, bc)) if bc >= c => acc,
                    _ => Some((i, c)),
                });
            let Some((i, c)) = best else { break };
            let floor = if credits == 0 {
                MIN_COVERAGE
            } else {
                MIN_REST_COVERAGE
            };
            if c < floor {
                match fallback.take() {
                    Some(all) if credits == 0 => {
                        want = all;
                        continue;
                    }
                    _ => break,
                }
            }
            credits += 1;
            if !credited.contains(&i) {
                credited.push(i);
            }
            let rest: BTreeSet<String> = want.difference(&held[i]).cloned().collect();
            // Credit a further source only for a real remainder.
            if rest.len() < 2 || rest.len() * 4 < want.len() {
                break;
            }
            want = rest;
        }
    }
    credited.sort_unstable();
    credited
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_of_words_and_cjk_bigrams() {
        let u = units("USD 5 million, 香港立法会 a");
        assert!(u.contains("usd") && u.contains("5") && u.contains("million"));
        assert!(u.contains("香港") && u.contains("立法") && u.contains("法会"));
        let d = units("在2022年1月3日");
        assert!(
            d.contains("1月") && d.contains("3日") && !d.contains("3"),
            "{d:?}"
        );
        assert!(!u.contains("a"), "one-letter words carry nothing");
        assert!(
            !units("the cost of it").contains("the"),
            "nor function words"
        );
    }

    #[test]
    fn chinese_runs_are_cut_at_function_characters_and_talk_of_the_documents() {
        let u = units("根据文档1，主演包括金晨和王安宇。");
        for unit in ["金晨", "王安", "安宇", "主演"] {
            assert!(u.contains(unit), "{unit} in {u:?}");
        }
        for junk in ["晨和", "和王", "括金", "文档", "据文", "档1"] {
            assert!(!u.contains(junk), "{junk} in {u:?}");
        }
        assert!(units("According to the documents provided").is_empty());
        let refs = units("According to Document 2 and documents 3 and 4, nurses get 22 days.");
        assert!(
            !refs.contains("2") && !refs.contains("3") && !refs.contains("4"),
            "{refs:?}"
        );
        assert!(refs.contains("22") && refs.contains("nurses"));
    }

    #[test]
    fn two_names_from_two_sources_credit_both_and_invented_ones_nothing() {
        let q = "《星河》的主演";
        let s1 = "电视剧《星河》今日官宣，赵丽颖出演女主角。";
        let s2 = "王安宇将在《星河》中饰演男主角。";
        let a = "根据文档1和文档2，《星河》的主演包括赵丽颖和王安宇。";
        assert_eq!(attribute(a, q, &[s1, s2]), vec![0, 1]);
        let invented = "《星河》的主演包括段宇成和罗娜。";
        assert!(attribute(invented, q, &[s1, s2]).is_empty());
    }

    #[test]
    fn sentences_split_on_latin_and_cjk_stops_but_not_decimals() {
        assert_eq!(
            sentences("Growth was 6.4% in 2021. It fell later!第二句。第三"),
            vec!["Growth was 6.4% in 2021.", "It fell later!第二句。", "第三"]
        );
    }

    #[test]
    fn the_source_holding_the_answer_is_credited_not_the_one_echoing_the_question() {
        let q = "Kelompok apakah yang menyatakan bertanggung jawab atas ledakan di Srinagar?";
        let on_topic = "Ledakan di Srinagar menewaskan tiga orang, kata polisi.";
        let holder = "Hezb-ul Mujahedeen, kelompok militan Kashmir, menyatakan bertanggung jawab atas ledakan di Srinagar.";
        let a = "Kelompok yang menyatakan bertanggung jawab adalah Hezb-ul Mujahedeen.";
        assert_eq!(attribute(a, q, &[on_topic, holder]), vec![1]);
    }

    #[test]
    fn an_answer_joining_two_sources_credits_both() {
        let q = "第七届香港立法会议员宣誓仪式及首次会议的时间";
        let s1 = "宣誓仪式将在2022年1月3日上午11时在立法会会议厅举行。";
        let s2 = "立法会将于1月12日举行首次会议，选举主席。";
        let noise = "天气晴朗。";
        let a = "宣誓仪式在1月3日举行，首次会议在1月12日举行。";
        assert_eq!(attribute(a, q, &[noise, s1, s2]), vec![1, 2]);
    }

    #[test]
    fn a_restated_question_goes_to_the_source_that_shares_it() {
        let q = "Do mitochondria play a role in remodelling lace plant leaves?";
        let own = "Mitochondria play a role in remodelling lace plant leaves during cell death.";
        let other = "Statins reduce cardiovascular events in older adults.";
        assert_eq!(
            attribute("Yes, mitochondria play a role.", q, &[other, own]),
            vec![1]
        );
    }

    #[test]
    fn coverage_counts_topic_words_not_question_words() {
        let q = "Siapakah Kepala Badan Perencanaan Pembangunan Daerah Sumut?";
        let held = "Kepala Badan Perencanaan Pembangunan Daerah Sumut Budi D Sinulingga, di Medan.";
        assert_eq!(question_coverage(q, held), 1.0);
        assert!(question_coverage(q, "Kebakaran hutan di Riau meluas.") < 0.2);
        assert_eq!(question_coverage("what is it", "anything"), 0.0);
        let capital = "What is the capital of Australia?";
        let hotels = "Hotels are reimbursed up to USD 180 per night in capital cities.";
        assert!(
            question_coverage(capital, hotels) < 0.34,
            "one common word of two"
        );
        assert!(question_coverage(capital, "Canberra is the capital of Australia.") > 0.6);
    }

    #[test]
    fn the_gate_reads_chinese_by_phrase() {
        let q = "2022年澳网男单冠军是谁";
        let own = "纳达尔获得2022年澳网男单冠军。";
        let other_year = "2021年澳网男单决赛，德约科维奇夺得冠军，男单奖金翻倍。";
        assert!(question_coverage(q, own) > 0.8);
        let by_phrase = question_coverage(q, other_year);
        let asked = units(q);
        let held = units(other_year);
        let by_word =
            asked.iter().filter(|u| held.contains(*u)).count() as f32 / asked.len() as f32;
        assert!(
            by_phrase < 0.6 && by_word > by_phrase,
            "{by_phrase} {by_word}"
        );
    }

    #[test]
    fn a_bare_decision_is_credited_to_the_source_holding_the_question() {
        let q = "Do older patients receive adequate stroke care?";
        let own = "Older patients receive less adequate stroke care than younger ones.";
        let other = "Statins reduce cardiovascular events.";
        assert_eq!(attribute("No.", q, &[other, own]), vec![1]);
        assert_eq!(
            attribute("是的。", "员工有带薪年假吗", &["员工每年有带薪年假。"]),
            vec![0]
        );
        assert!(attribute("Yes.", q, &[other]).is_empty());
    }

    #[test]
    fn function_words_support_nothing() {
        let q = "What is the capital of Australia?";
        let hotels =
            "Hotels are reimbursed up to USD 180 per night in the capital cities of the region.";
        assert!(attribute("The capital of Australia is Sydney.", q, &[hotels]).is_empty());
    }

    #[test]
    fn nothing_is_credited_without_support() {
        assert!(
            attribute(
                "Canberra is the capital.",
                "capital of Australia?",
                &["FX limits are USD 5 million."]
            )
            .is_empty()
        );
        assert!(attribute("", "q", &["x"]).is_empty());
    }
}
