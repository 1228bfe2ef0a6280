//! The language a question is asked in, so the answer (and a refusal) comes
//! in the same one. Sovra answers in English, Indonesian and Chinese; a
//! question with Han characters is Chinese, one with a question word of
//! only one of Indonesian and English is in that language, otherwise
//! whatlang chooses between the two (restricted to those two, short
//! questions are told apart reliably).

use whatlang::{Detector, Lang};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    Indonesian,
    Chinese,
}

impl Language {
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Indonesian => "id",
            Language::Chinese => "zh",
        }
    }

    /// The language's name as the instruction to the model gives it.
    pub fn name(self) -> &'static str {
        match self {
            Language::English => "English",
            Language::Indonesian => "Indonesian (Bahasa Indonesia)",
            Language::Chinese => "Chinese (中文)",
        }
    }

    /// The refusal in this language: the same sentence in every API.
    pub fn refusal(self) -> &'static str {
        crate::REFUSALS
            .iter()
            .find(|(code, _)| *code == self.code())
            .map_or(crate::NO_SOURCES_ANSWER, |(_, r)| r)
    }
}

/// Indonesian question words (with the emphatic -kah), none of them an
/// English word.
const INDONESIAN_QUESTION_WORDS: [&str; 16] = [
    "apa",
    "apakah",
    "siapa",
    "siapakah",
    "berapa",
    "berapakah",
    "kapan",
    "kapankah",
    "bagaimana",
    "bagaimanakah",
    "mengapa",
    "kenapa",
    "manakah",
    "dimana",
    "dimanakah",
    "bilamana",
];

/// English question words and auxiliaries that open a question.
const ENGLISH_QUESTION_WORDS: [&str; 12] = [
    "what", "who", "whom", "whose", "which", "when", "where", "why", "how", "does", "did", "is",
];

/// The question's language: Chinese when it holds Han characters; else
/// Indonesian or English by its question word when it has one of only one
/// of them; else as whatlang tells the two apart.
pub fn detect(question: &str) -> Language {
    let han = question
        .chars()
        .filter(|c| matches!(*c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF))
        .count();
    if han > 0 {
        return Language::Chinese;
    }
    // A question made mostly of names ("Siapakah pendiri Freedom
    // Institute?") reads as English to a letter-statistics detector; its
    // question word does not.
    let words: Vec<String> = question
        .split(|c: char| !c.is_alphabetic())
        // An all-capitals word is a name (WHO, APA), not a question word.
        .filter(|w| w.chars().any(char::is_lowercase))
        .map(str::to_lowercase)
        .collect();
    let asks_in = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    match (
        asks_in(&INDONESIAN_QUESTION_WORDS),
        asks_in(&ENGLISH_QUESTION_WORDS),
    ) {
        (true, false) => return Language::Indonesian,
        (false, true) => return Language::English,
        _ => {}
    }
    match Detector::with_allowlist(vec![Lang::Eng, Lang::Ind]).detect_lang(question) {
        Some(Lang::Ind) => Language::Indonesian,
        _ => Language::English,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_in_the_three_languages() {
        assert_eq!(
            detect("What is the FX limit of a junior dealer?"),
            Language::English
        );
        assert_eq!(
            detect("Kelompok apakah yang menyatakan bertanggung jawab atas ledakan di Srinagar?"),
            Language::Indonesian
        );
        assert_eq!(
            detect("Berapa hari cuti tahunan perawat?"),
            Language::Indonesian
        );
        assert_eq!(
            detect("第七届香港立法会议员宣誓仪式的时间"),
            Language::Chinese
        );
        assert_eq!(detect("Wie viel?"), Language::English, "others get English");
        // Mostly names: the question word decides (FacQA questions whatlang
        // reads as English).
        for q in [
            "Siapakah pendiri Freedom Institute?",
            "siapakah Director of Cancer Division WHO",
            "Profesor dr Roemwerdiniadi Soedoko SpPA bekerja di universitas apa",
            "Berapa jumlah makalah yang ikut serta dalam 15th International Photovoltaic Science and Engineering Conference (PVSEC)?",
        ] {
            assert_eq!(detect(q), Language::Indonesian, "{q}");
        }
        assert_eq!(
            detect("What does the APA manual say about Jakarta?"),
            Language::English
        );
    }

    #[test]
    fn each_language_refuses_in_its_own_words() {
        assert_eq!(Language::English.refusal(), crate::NO_SOURCES_ANSWER);
        assert!(Language::Indonesian.refusal().starts_with("Saya tidak"));
        assert!(Language::Chinese.refusal().contains("找不到"));
        for l in [Language::English, Language::Indonesian, Language::Chinese] {
            assert!(crate::is_refusal(l.refusal()));
        }
    }
}
