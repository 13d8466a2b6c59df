//! Prompt templates. Every prompt ends with `Answer:` (no trailing space); the K answer tokens are
//! the single tokens of `answer_labels` (" A", " B", ... or " True"/" False" or " " + class label).
//!
//! The wording follows the Laplace-LoRA paper's prompts (Yang et al., 2023): multiple choice and
//! WinoGrande ask "Select one of the choices that answers the following question: ..." and list the
//! lettered choices; BoolQ asks "Answer the question with only True or False: ... Context: ...".
//! Differences from the paper: each choice is on its own line ("A. text"), and every prompt ends
//! with a final line `Answer:` so that the answer token is read at the same place for every task.

/// Letters used for choice labels, in order. Its length is `MAX_CHOICES`.
pub const LETTERS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

/// `[" A", " B", ...]` for `k` choices (k <= 8).
pub fn letter_labels(k: usize) -> Vec<String> {
    LETTERS.iter().take(k).map(|l| format!(" {l}")).collect()
}

/// Multiple choice (mcq, csv, arc, openbookqa) and two-option cloze (winogrande):
///
/// ```text
/// {context}                      (only when there is a context)
/// Select one of the choices that answers the following question: {question}
/// Choices:
/// A. {choice 0}
/// B. {choice 1}
/// Answer:
/// ```
pub fn mcq_prompt(context: Option<&str>, question: &str, choices: &[String]) -> String {
    let mut s = String::new();
    if let Some(c) = context.map(str::trim).filter(|c| !c.is_empty()) {
        s.push_str(c);
        s.push('\n');
    }
    s.push_str("Select one of the choices that answers the following question: ");
    s.push_str(question.trim());
    s.push_str("\nChoices:\n");
    for (letter, choice) in LETTERS.iter().zip(choices) {
        s.push_str(letter);
        s.push_str(". ");
        s.push_str(choice.trim());
        s.push('\n');
    }
    s.push_str("Answer:");
    s
}

/// Yes/no question over a passage (boolq):
///
/// ```text
/// Answer the question with only True or False: {question}
/// Context: {passage}
/// Answer:
/// ```
pub fn boolq_prompt(passage: &str, question: &str) -> String {
    format!("Answer the question with only True or False: {}\nContext: {}\nAnswer:", question.trim(), passage.trim())
}

/// Plain text classification:
///
/// ```text
/// Classify the text. Options: {l1}, {l2}, ...
/// Text: {text}
/// Answer:
/// ```
pub fn classification_prompt(text: &str, labels: &[String]) -> String {
    format!("Classify the text. Options: {}.\nText: {}\nAnswer:", labels.join(", "), text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcq_prompt_with_and_without_context() {
        let ch = vec!["red".to_string(), "blue".to_string(), "green".to_string()];
        assert_eq!(
            mcq_prompt(None, "Which is a colour of the sky?", &ch),
            "Select one of the choices that answers the following question: Which is a colour of the sky?\nChoices:\nA. red\nB. blue\nC. green\nAnswer:"
        );
        let p = mcq_prompt(Some("The sky is blue. "), "Q?", &ch[..2]);
        assert_eq!(p, "The sky is blue.\nSelect one of the choices that answers the following question: Q?\nChoices:\nA. red\nB. blue\nAnswer:");
        // Blank context is treated as no context.
        assert!(mcq_prompt(Some("  "), "Q?", &ch).starts_with("Select"));
    }

    #[test]
    fn boolq_and_classification_prompts() {
        assert_eq!(
            boolq_prompt("Ann has a cat.", "does ann have a cat"),
            "Answer the question with only True or False: does ann have a cat\nContext: Ann has a cat.\nAnswer:"
        );
        let labels = vec!["positive".to_string(), "negative".to_string()];
        assert_eq!(classification_prompt("Great film!", &labels), "Classify the text. Options: positive, negative.\nText: Great film!\nAnswer:");
        assert_eq!(letter_labels(3), vec![" A", " B", " C"]);
    }
}
