//! Choosing the next token from the last position's logits.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::SamplingParams;

/// Greedy or sampled choice of the next token; seeded, so reproducible.
pub struct Sampler {
    rng: StdRng,
    temperature: f32,
    top_p: f32,
    top_k: usize,
    repetition_penalty: f32,
    logit_bias: Vec<(u32, f32)>,
    /// Scratch space for candidates, reused across steps.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Self {
            rng,
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: params.top_k,
            repetition_penalty: params.repetition_penalty,
            logit_bias: params.logit_bias.clone(),
            candidates: Vec::new(),
        }
    }

    /// The next token. `generated` are the tokens generated so far (the
    /// repetition penalty applies to them, not to the prompt, so an answer
    /// may quote its sources freely).
    pub fn sample(&mut self, logits: &mut [f32], generated: &[u32]) -> u32 {
        for &(token, bias) in &self.logit_bias {
            if let Some(l) = logits.get_mut(token as usize) {
                *l += bias;
            }
        }
        if self.repetition_penalty != 1.0 {
            let mut seen = generated.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / self.repetition_penalty
                    } else {
                        *l * self.repetition_penalty
                    };
                }
            }
        }
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        self.sample_scaled(logits)
    }

    fn sample_scaled(&mut self, logits: &[f32]) -> u32 {
        let inv_t = 1.0 / self.temperature;
        let c = &mut self.candidates;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l * inv_t)),
        );
        if c.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if self.top_k > 0 && self.top_k < c.len() {
            c.select_nth_unstable_by(self.top_k - 1, by_logit_desc);
            c.truncate(self.top_k);
        }
        // Softmax over the candidates (max subtracted for stability).
        let max = c.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f64;
        for x in c.iter_mut() {
            x.1 = (x.1 - max).exp();
            total += f64::from(x.1);
        }
        if self.top_p < 1.0 {
            // The nucleus is usually small: sort a growing head, not the vocabulary.
            let target = f64::from(self.top_p) * total;
            let mut head = 64.min(c.len());
            loop {
                if head < c.len() {
                    c.select_nth_unstable_by(head - 1, by_logit_desc);
                }
                c[..head].sort_unstable_by(by_logit_desc);
                let mut acc = 0f64;
                let mut cut = None;
                for (i, x) in c[..head].iter().enumerate() {
                    acc += f64::from(x.1);
                    if acc >= target {
                        cut = Some(i + 1);
                        break;
                    }
                }
                if let Some(n) = cut {
                    c.truncate(n);
                    break;
                }
                if head == c.len() {
                    break;
                }
                head = (head * 8).min(c.len());
            }
            total = c.iter().map(|x| f64::from(x.1)).sum();
        }
        let mut r = self.rng.r#gen::<f64>() * total;
        for x in c.iter() {
            r -= f64::from(x.1);
            if r <= 0.0 {
                return x.0;
            }
        }
        c.last().map(|x| x.0).unwrap_or(0)
    }
}

/// The index of the largest logit (the first, on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_value {
            best = i;
            best_value = l;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
            ..Default::default()
        }
    }

    fn logits() -> Vec<f32> {
        (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut l = vec![0.1, 3.0, -2.0, 2.9];
        assert_eq!(Sampler::new(&params(0.0, 1.0, 0, 1)).sample(&mut l, &[]), 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens_and_another_seed_differs() {
        let run = |seed| {
            let mut s = Sampler::new(&params(1.0, 1.0, 0, seed));
            (0..50)
                .map(|_| s.sample(&mut logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_only_draws_from_the_k_most_likely() {
        let l = logits();
        let mut sorted: Vec<u32> = (0..l.len() as u32).collect();
        sorted.sort_by(|a, b| l[*b as usize].total_cmp(&l[*a as usize]));
        let top: Vec<u32> = sorted[..5].to_vec();
        let mut s = Sampler::new(&params(5.0, 1.0, 5, 3));
        for _ in 0..500 {
            assert!(top.contains(&s.sample(&mut logits(), &[])));
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // One token holds ~88% of the mass: top_p 0.5 must always pick it.
        let mut l = vec![0.0f32; 10];
        l[4] = 5.0;
        let mut s = Sampler::new(&params(1.0, 0.5, 0, 11));
        for _ in 0..200 {
            assert_eq!(s.sample(&mut l.clone(), &[]), 4);
        }
        // With top_p 1.0 other tokens appear.
        let mut s = Sampler::new(&params(1.0, 1.0, 0, 11));
        assert!((0..500).any(|_| s.sample(&mut l.clone(), &[]) != 4));
    }

    #[test]
    fn top_p_over_a_large_vocabulary_grows_its_head() {
        // A flat distribution: the nucleus of 0.9 spans ~900 of 1000 tokens.
        let mut s = Sampler::new(&params(1.0, 0.9, 0, 5));
        let picks: std::collections::HashSet<u32> = (0..3000)
            .map(|_| s.sample(&mut vec![1.0; 1000], &[]))
            .collect();
        assert!(picks.len() > 500, "{}", picks.len());
    }

    #[test]
    fn repetition_penalty_and_logit_bias_change_the_greedy_choice() {
        let mut p = params(0.0, 1.0, 0, 1);
        p.repetition_penalty = 2.0;
        let mut l = vec![1.0, 3.0, 2.0];
        assert_eq!(Sampler::new(&p).sample(&mut l, &[1]), 2);
        let mut p = params(0.0, 1.0, 0, 1);
        p.logit_bias = vec![(1, -100.0)];
        assert_eq!(Sampler::new(&p).sample(&mut [1.0, 3.0, 2.0], &[]), 2);
    }
}
