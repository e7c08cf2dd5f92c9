//! The generation check: greedy continuations of a few prompts by the artefact and by the
//! baseline, compared token by token, and a check that the artefact's output does not fall into
//! a loop the baseline's does not.

use serde::{Deserialize, Serialize};

/// The prompts continued when none are given: a story opening, a fact, code, and a list, so that
/// a broken artefact shows in at least one kind of text.
pub const DEFAULT_PROMPTS: [&str; 4] = [
    "Once upon a time, there was a little girl named Lily. One day,",
    "The capital of France is",
    "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n",
    "The three primary colors are",
];

/// Tokens generated per prompt when no other number is given.
pub const DEFAULT_NEW_TOKENS: usize = 32;

/// The longest period (in tokens) the loop check looks for.
const MAX_PERIOD: usize = 16;

/// One prompt's continuations, as ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRun {
    /// The prompt's position in the list (runs split over processes are put back in order).
    pub index: usize,
    /// The prompt's ids.
    pub prompt: Vec<u32>,
    /// The baseline's greedy continuation.
    pub baseline: Vec<u32>,
    /// The artefact's greedy continuation.
    pub artefact: Vec<u32>,
}

/// A continuation that ends in a loop: the same `period` tokens over and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repetition {
    /// Tokens per repeat.
    pub period: usize,
    /// How many of the continuation's last tokens the loop covers.
    pub covered: usize,
}

/// Finds a loop at the end of `tokens`: the shortest period `p` (1 to 16) whose repeats cover at
/// least half the continuation, at least 8 tokens and at least three whole repeats. A model that
/// has collapsed (one token forever, a phrase over and over) shows this; healthy text does not.
pub fn find_repetition(tokens: &[u32]) -> Option<Repetition> {
    let n = tokens.len();
    (1..=MAX_PERIOD.min(n / 3)).find_map(|p| {
        // Trailing positions i (from the end) with tokens[i] == tokens[i - p].
        let run = (p..n).rev().take_while(|&i| tokens[i] == tokens[i - p]).count();
        let covered = run + p;
        (covered >= 3 * p && covered >= 8 && 2 * covered >= n)
            .then_some(Repetition { period: p, covered })
    })
}

/// The first position where two continuations differ (a shorter one differs where it ends);
/// `None` when they are equal.
pub fn first_divergence(a: &[u32], b: &[u32]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None if a.len() == b.len() => None,
        None => Some(a.len().min(b.len())),
    }
}

/// Positions where the two continuations hold the same token, and positions compared (the
/// longer continuation's length).
pub fn agreement(a: &[u32], b: &[u32]) -> (usize, usize) {
    (a.iter().zip(b).filter(|(x, y)| x == y).count(), a.len().max(b.len()))
}

/// One prompt in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptReport {
    /// The prompt (decoded from its ids).
    pub prompt: String,
    /// The baseline's continuation, decoded.
    pub baseline_text: String,
    /// The artefact's continuation, decoded.
    pub artefact_text: String,
    /// The baseline's ids.
    pub baseline_ids: Vec<u32>,
    /// The artefact's ids.
    pub artefact_ids: Vec<u32>,
    /// Where the artefact first leaves the baseline's tokens (`None`: never).
    pub first_divergence: Option<usize>,
    /// Positions with the same token, over the longer continuation's length.
    pub agreement: f64,
    /// A loop the baseline's continuation ends in.
    pub baseline_repetition: Option<Repetition>,
    /// A loop the artefact's continuation ends in.
    pub artefact_repetition: Option<Repetition>,
    /// Whether the artefact loops where the baseline does not.
    pub degenerate: bool,
}

/// The generation check of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationReport {
    /// Tokens generated per prompt at most.
    pub max_new_tokens: usize,
    /// Each prompt.
    pub prompts: Vec<PromptReport>,
    /// Positions with the same token over positions compared, across every prompt (`None` when
    /// nothing was generated: no generation check).
    pub agreement: Option<f64>,
    /// Prompts whose artefact continuation loops where the baseline's does not.
    pub degenerate_prompts: usize,
}

impl GenerationReport {
    /// The report of `runs` (in prompt order), with text from `decode`.
    pub fn new(
        runs: &[PromptRun],
        max_new_tokens: usize,
        decode: &dyn Fn(&[u32]) -> String,
    ) -> GenerationReport {
        let (mut same, mut compared) = (0, 0);
        let prompts: Vec<PromptReport> = runs
            .iter()
            .map(|run| {
                let (s, c) = agreement(&run.baseline, &run.artefact);
                same += s;
                compared += c;
                let baseline_repetition = find_repetition(&run.baseline);
                let artefact_repetition = find_repetition(&run.artefact);
                PromptReport {
                    prompt: decode(&run.prompt),
                    baseline_text: decode(&run.baseline),
                    artefact_text: decode(&run.artefact),
                    baseline_ids: run.baseline.clone(),
                    artefact_ids: run.artefact.clone(),
                    first_divergence: first_divergence(&run.baseline, &run.artefact),
                    agreement: if c == 0 { 1.0 } else { s as f64 / c as f64 },
                    baseline_repetition,
                    artefact_repetition,
                    degenerate: artefact_repetition.is_some() && baseline_repetition.is_none(),
                }
            })
            .collect();
        GenerationReport {
            max_new_tokens,
            degenerate_prompts: prompts.iter().filter(|p| p.degenerate).count(),
            agreement: (compared > 0).then(|| same as f64 / compared as f64),
            prompts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_found_and_text_is_not() {
        assert_eq!(find_repetition(&[5; 20]), Some(Repetition { period: 1, covered: 20 }));
        let mut t: Vec<u32> = (100..110).collect();
        t.extend([7, 8, 9].repeat(5));
        assert_eq!(find_repetition(&t), Some(Repetition { period: 3, covered: 15 }));
        // Too short a loop, or one that covers under half the output.
        assert_eq!(find_repetition(&[1, 1, 1, 1]), None);
        let mut t: Vec<u32> = (0..30).collect();
        t.extend([4; 9]);
        assert_eq!(find_repetition(&t), None);
        assert_eq!(find_repetition(&(0..64).collect::<Vec<u32>>()), None);
        assert_eq!(find_repetition(&[]), None);
    }

    #[test]
    fn divergence_and_agreement() {
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_divergence(&[1, 2], &[1, 2, 3]), Some(2));
        assert_eq!(agreement(&[1, 2, 3], &[1, 5, 3, 4]), (2, 4));
        assert_eq!(agreement(&[], &[]), (0, 0));
    }

    #[test]
    fn report_counts_degenerate_prompts() {
        let runs = [
            PromptRun {
                index: 0,
                prompt: vec![1],
                baseline: (0..12).collect(),
                artefact: vec![3; 12],
            },
            PromptRun { index: 1, prompt: vec![2], baseline: vec![4; 12], artefact: vec![4; 12] },
        ];
        let r = GenerationReport::new(&runs, 12, &|ids| format!("{ids:?}"));
        assert_eq!(r.degenerate_prompts, 1);
        assert!(r.prompts[0].degenerate && !r.prompts[1].degenerate);
        assert_eq!(r.prompts[0].first_divergence, Some(0));
        assert_eq!(r.prompts[1].first_divergence, None);
        assert!((r.agreement.unwrap() - 13.0 / 24.0).abs() < 1e-12);
        assert_eq!(GenerationReport::new(&[], 0, &|_| String::new()).agreement, None);
        assert_eq!(r.prompts[0].prompt, "[1]");
    }
}
