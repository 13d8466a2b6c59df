//! A user's own question, rendered as one item of a run: with the prompt template of the run's
//! kind of answers, so that the run's answer tokens are read where they were trained.
//!
//! The kind follows from the run's K answer labels (DESIGN.md section 2):
//! - `" A", " B", ...` (multiple choice, two-option cloze): `mcq_prompt(context, question,
//!   choices)`, 2 to K choices (fewer than K are masked, as for a data file's item);
//! - `" True", " False"` (BoolQ): `boolq_prompt(passage, question)`, the choices are the run's;
//! - anything else (plain text classification, labels `" " + class`): `classification_prompt`.

use super::{boolq_prompt, classification_prompt, letter_labels, mcq_prompt, Item};

/// What the user typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Question {
    /// A passage (True/False runs: required) or an optional context line (multiple choice).
    pub context: String,
    /// The question (or, for a classification run, the text to classify).
    pub question: String,
    /// Multiple choice: one choice a line (blank lines are skipped).
    pub choices: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    MultipleChoice,
    TrueFalse,
    Classification,
}

pub fn kind_of(answer_labels: &[String]) -> Kind {
    if answer_labels == [" True", " False"] {
        Kind::TrueFalse
    } else if answer_labels == letter_labels(answer_labels.len()).as_slice() {
        Kind::MultipleChoice
    } else {
        Kind::Classification
    }
}

/// The item `q` is for a run answering with `answer_labels`, or a message saying what to change.
/// Its label (there is no correct answer) is 0.
pub fn render(q: &Question, answer_labels: &[String], id: &str) -> Result<Item, String> {
    let k = answer_labels.len();
    let question = q.question.trim();
    if question.is_empty() {
        return Err("type a question first".into());
    }
    let item = |prompt: String, choices: Vec<String>, labels: Vec<String>| Item { id: id.to_string(), prompt, choices, answer_labels: labels, label: 0 };
    match kind_of(answer_labels) {
        Kind::MultipleChoice => {
            let choices: Vec<String> = q.choices.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if choices.len() < 2 || choices.len() > k {
                return Err(format!(
                    "this run answers with {k} letters ({}): give 2 to {k} choices, one a line (you gave {})",
                    answer_labels.iter().map(|l| l.trim()).collect::<Vec<_>>().join(", "),
                    choices.len()
                ));
            }
            let context = Some(q.context.as_str()).filter(|c| !c.trim().is_empty());
            Ok(item(mcq_prompt(context, question, &choices), choices.clone(), letter_labels(choices.len())))
        }
        Kind::TrueFalse => {
            if q.context.trim().is_empty() {
                return Err("this run answers True or False about a passage: type the passage too".into());
            }
            if !q.choices.trim().is_empty() {
                return Err("this run answers only True or False: leave the choices empty".into());
            }
            Ok(item(boolq_prompt(&q.context, question), vec!["True".into(), "False".into()], answer_labels.to_vec()))
        }
        Kind::Classification => {
            let labels: Vec<String> = answer_labels.iter().map(|l| l.trim().to_string()).collect();
            Ok(item(classification_prompt(question, &labels), labels, answer_labels.to_vec()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn each_kind_renders_with_its_template_and_wrong_counts_are_messages() {
        let q = Question { context: String::new(), question: "Which is larger?".into(), choices: "one\n\n two \nthree\n".into() };
        let it = render(&q, &letter_labels(4), "q").unwrap();
        assert_eq!(it.prompt, mcq_prompt(None, "Which is larger?", &s(&["one", "two", "three"])));
        assert_eq!(it.answer_labels, s(&[" A", " B", " C"]));
        let e = render(&Question { choices: "a\nb\nc\nd\ne".into(), ..q.clone() }, &letter_labels(4), "q").unwrap_err();
        assert!(e.contains("give 2 to 4 choices") && e.contains("you gave 5"), "{e}");
        let tf = s(&[" True", " False"]);
        assert!(render(&Question { context: "A passage.".into(), ..q.clone() }, &tf, "q").unwrap_err().contains("leave the choices empty"));
        let b = Question { context: "Ann has a cat.".into(), question: "does ann have a cat".into(), choices: String::new() };
        assert_eq!(render(&b, &tf, "q").unwrap().prompt, boolq_prompt("Ann has a cat.", "does ann have a cat"));
        assert!(render(&Question { context: String::new(), ..b.clone() }, &tf, "q").unwrap_err().contains("passage"));
        let c = render(&Question { question: "Great film!".into(), ..Default::default() }, &s(&[" positive", " negative"]), "q").unwrap();
        assert_eq!(c.prompt, classification_prompt("Great film!", &s(&["positive", "negative"])));
        assert!(render(&Question::default(), &tf, "q").is_err());
    }
}
