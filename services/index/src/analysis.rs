//! Analyzers: `sovra_multi` (jieba segmentation, lower-cased, words only)
//! and `sovra_en` (English with stemming).

use tantivy::Index;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer, Token,
    TokenFilter, TokenStream, Tokenizer,
};
use tantivy_jieba::JiebaTokenizer;

pub const MULTI: &str = "sovra_multi";
pub const EN: &str = "sovra_en";

pub fn register(index: &Index) {
    index.tokenizers().register(
        MULTI,
        TextAnalyzer::builder(JiebaTokenizer::new())
            .filter(WordsOnly)
            .filter(RemoveLongFilter::limit(64))
            .filter(LowerCaser)
            .build(),
    );
    index.tokenizers().register(
        EN,
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(64))
            .filter(LowerCaser)
            .filter(Stemmer::new(Language::English))
            .build(),
    );
}

/// Drops tokens without a letter or digit (jieba emits spaces and punctuation).
#[derive(Clone)]
pub struct WordsOnly;

impl TokenFilter for WordsOnly {
    type Tokenizer<T: Tokenizer> = WordsOnlyTokenizer<T>;
    fn transform<T: Tokenizer>(self, tokenizer: T) -> WordsOnlyTokenizer<T> {
        WordsOnlyTokenizer(tokenizer)
    }
}

#[derive(Clone)]
pub struct WordsOnlyTokenizer<T>(T);

impl<T: Tokenizer> Tokenizer for WordsOnlyTokenizer<T> {
    type TokenStream<'a> = WordsOnlyStream<T::TokenStream<'a>>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        WordsOnlyStream(self.0.token_stream(text))
    }
}

pub struct WordsOnlyStream<S>(S);

impl<S: TokenStream> TokenStream for WordsOnlyStream<S> {
    fn advance(&mut self) -> bool {
        while self.0.advance() {
            if self.0.token().text.chars().any(char::is_alphanumeric) {
                return true;
            }
        }
        false
    }
    fn token(&self) -> &Token {
        self.0.token()
    }
    fn token_mut(&mut self) -> &mut Token {
        self.0.token_mut()
    }
}

/// The terms `analyzer` makes of `text`, deduplicated in order.
/// The body's analysis for snippets only: jieba's search mode emits a
/// compound's parts and then the compound itself, so offsets step back,
/// which tantivy's snippet generator cannot take (it subtracts offsets and
/// panics). This keeps the tokens whose offsets move forward and lie on the
/// text's character boundaries.
pub fn snippet_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(JiebaTokenizer::new())
        .filter(WordsOnly)
        .filter(ForwardOffsets)
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .build()
}

#[derive(Clone)]
pub struct ForwardOffsets;

impl TokenFilter for ForwardOffsets {
    type Tokenizer<T: Tokenizer> = ForwardOffsetsTokenizer<T>;
    fn transform<T: Tokenizer>(self, tokenizer: T) -> ForwardOffsetsTokenizer<T> {
        ForwardOffsetsTokenizer(tokenizer)
    }
}

#[derive(Clone)]
pub struct ForwardOffsetsTokenizer<T>(T);

impl<T: Tokenizer> Tokenizer for ForwardOffsetsTokenizer<T> {
    type TokenStream<'a> = ForwardOffsetsStream<'a, T::TokenStream<'a>>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        ForwardOffsetsStream {
            inner: self.0.token_stream(text),
            text,
            end: 0,
        }
    }
}

pub struct ForwardOffsetsStream<'a, S> {
    inner: S,
    text: &'a str,
    /// Where the last token kept ended.
    end: usize,
}

impl<S: TokenStream> TokenStream for ForwardOffsetsStream<'_, S> {
    fn advance(&mut self) -> bool {
        while self.inner.advance() {
            let t = self.inner.token();
            if t.offset_from >= self.end
                && t.offset_from < t.offset_to
                && t.offset_to <= self.text.len()
                && self.text.is_char_boundary(t.offset_from)
                && self.text.is_char_boundary(t.offset_to)
            {
                self.end = t.offset_to;
                return true;
            }
        }
        false
    }
    fn token(&self) -> &Token {
        self.inner.token()
    }
    fn token_mut(&mut self) -> &mut Token {
        self.inner.token_mut()
    }
}

pub fn tokens(index: &Index, analyzer: &str, text: &str) -> Vec<String> {
    let Some(mut a) = index.tokenizers().get(analyzer) else {
        return Vec::new();
    };
    let mut stream = a.token_stream(text);
    let mut out: Vec<String> = Vec::new();
    while stream.advance() {
        let t = &stream.token().text;
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xAC00..=0xD7AF | 0x20000..=0x2FA1F)
}

/// Overlapping character bigrams of every CJK run (a lone character stands
/// alone), space-separated: context-free, so a query matches whatever way
/// the segmenter cut the passage.
pub fn cjk_bigrams(text: &str) -> String {
    let mut out = Vec::new();
    let mut run: Vec<char> = Vec::new();
    let flush = |run: &mut Vec<char>, out: &mut Vec<String>| {
        match run.len() {
            0 => {}
            1 => out.push(run[0].to_string()),
            _ => out.extend(run.windows(2).map(|w| w.iter().collect::<String>())),
        }
        run.clear();
    };
    for c in text.chars() {
        if is_cjk(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
        }
    }
    flush(&mut run, &mut out);
    out.join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bigrams() {
        assert_eq!(super::cjk_bigrams("带薪年假, ok 假"), "带薪 薪年 年假 假");
        assert_eq!(super::cjk_bigrams("no cjk"), "");
    }
}
