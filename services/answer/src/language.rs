//! The language a question is asked in, so the answer (and a refusal) comes
//! in the same one. Sovra answers in English, Indonesian and Chinese; a
//! question with Han characters is Chinese, otherwise whatlang chooses
//! between Indonesian and English (restricted to those two, short
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

pub fn detect(question: &str) -> Language {
    let han = question
        .chars()
        .filter(|c| matches!(*c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF))
        .count();
    if han > 0 {
        return Language::Chinese;
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
