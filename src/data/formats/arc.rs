//! ARC, OpenBookQA and CommonsenseQA records.

use serde_json::{Map, Value};

use super::record::{mcq_item, Ctx};
use crate::data::error::DataError;
use crate::data::Item;

/// ARC / OpenBookQA. Publisher layout:
/// `{"id", "question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}`;
/// Hugging Face layout: `{"id", "question" | "question_stem", "choices": {"text": [...], "label": [...]}, "answerKey"}`.
/// The answer key is matched against the item's own labels ("A".."E" or "1".."5"); choices are
/// shown lettered A, B, C, ... by position. OpenBookQA's `fact1` and other keys are ignored.
pub(crate) fn parse_arc(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Item, DataError> {
    let (stem, texts, labels, choices_field) = match obj.get("question") {
        Some(Value::Object(q)) => {
            let stem = ctx.req_str_named(q.get("stem"), "question.stem", "give the question text in question.stem")?;
            let arr = match q.get("choices") {
                None | Some(Value::Null) => return Err(ctx.missing("question.choices", "give the choices as a list of {\"text\", \"label\"} objects")),
                Some(Value::Array(a)) => a,
                Some(other) => return Err(ctx.wrong("question.choices", "a list of {\"text\", \"label\"} objects", other)),
            };
            let mut texts = Vec::new();
            let mut labels = Vec::new();
            for (i, c) in arr.iter().enumerate() {
                let field = format!("question.choices[{i}]");
                let c = match c {
                    Value::Object(m) => m,
                    other => return Err(ctx.wrong(&field, "an object {\"text\", \"label\"}", other)),
                };
                texts.push(ctx.req_str_named(c.get("text"), &format!("{field}.text"), "give the choice text")?);
                let label = match c.get("label") {
                    Some(Value::String(s)) => s.trim().to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    None | Some(Value::Null) => return Err(ctx.missing(&format!("{field}.label"), "give the choice label (\"A\" or \"1\")")),
                    Some(other) => return Err(ctx.wrong(&format!("{field}.label"), "a string", other)),
                };
                labels.push(label);
            }
            (stem, texts, labels, "question.choices")
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            let stem = match (obj.get("question"), obj.get("question_stem")) {
                (Some(Value::String(s)), _) => s.clone(),
                (_, Some(Value::String(s))) => s.clone(),
                (_, Some(other)) if !other.is_null() => return Err(ctx.wrong("question_stem", "a string", other)),
                _ => return Err(ctx.missing("question", "give the question as {\"stem\", \"choices\"} (ARC/OpenBookQA JSONL)")),
            };
            let ch = match obj.get("choices") {
                Some(Value::Object(m)) => m,
                None | Some(Value::Null) => return Err(ctx.missing("choices", "give choices as {\"text\": [...], \"label\": [...]}")),
                Some(other) => return Err(ctx.wrong("choices", "an object {\"text\": [...], \"label\": [...]}", other)),
            };
            let texts = ctx.choice_list_unchecked("choices.text", ch.get("text"))?;
            let labels = ctx.choice_list_unchecked("choices.label", ch.get("label"))?;
            if labels.len() != texts.len() {
                return Err(ctx.invalid("choices.label", format!("{} labels for {} choice texts; give one label per choice", labels.len(), texts.len())));
            }
            (stem, texts, labels, "choices")
        }
        Some(other) => return Err(ctx.wrong("question", "an object {\"stem\", \"choices\"} or a string", other)),
    };
    ctx.check_choice_count(choices_field, texts.len())?;
    let key = match obj.get("answerKey") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) | Some(Value::String(_)) => return Err(ctx.missing("answerKey", "give the label of the correct choice (e.g. \"A\" or \"1\")")),
        Some(other) => return Err(ctx.wrong("answerKey", "a string", other)),
    };
    let label = labels.iter().position(|l| l.eq_ignore_ascii_case(&key)).ok_or_else(|| DataError::UnknownAnswerLabel {
        at: ctx.at.clone(),
        field: "answerKey".into(),
        letter: key.clone(),
        labels: labels.clone(),
    })?;
    let id = ctx.id(obj, &["id"])?;
    Ok(mcq_item(id, None, &stem, texts, label))
}

#[cfg(test)]
mod tests {
    use crate::data::formats::test_util::*;
    use crate::data::formats::{detect_format, load_items};
    use crate::data::Format;

    #[test]
    fn arc_publisher_and_hf_layouts() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "ARC-Challenge-Dev.jsonl",
            br#"{"id": "ARC_0001", "question": {"stem": "A kettle of water is heated on a stove. What happens to the water?", "choices": [{"text": "It freezes.", "label": "A"}, {"text": "It turns to sand.", "label": "B"}, {"text": "It gets warmer.", "label": "C"}, {"text": "It becomes heavier.", "label": "D"}]}, "answerKey": "C"}
{"id": "num1", "question": {"stem": "Numbered?", "choices": [{"text": "one", "label": "1"}, {"text": "two", "label": "2"}, {"text": "three", "label": "3"}]}, "answerKey": "2"}
{"id": "OBQA_17", "question": {"stem": "A seed needs", "choices": [{"text": "a radio", "label": "A"}, {"text": "water and light", "label": "D"}]}, "fact1": "plants need water to grow", "humanScore": 1.0, "answerKey": "D"}
"#,
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Arc);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!(items[0].id, "ARC_0001");
        assert_eq!(items[0].label, 2);
        assert_eq!(
            items[0].prompt,
            "Select one of the choices that answers the following question: A kettle of water is heated on a stove. What happens to the water?\nChoices:\nA. It freezes.\nB. It turns to sand.\nC. It gets warmer.\nD. It becomes heavier.\nAnswer:"
        );
        assert_eq!(items[1].label, 1);
        assert_eq!(items[1].answer_labels, vec![" A", " B", " C"]);
        assert!(items[1].prompt.contains("\nA. one\nB. two\nC. three\n"));
        assert_eq!(items[2].label, 1); // OpenBookQA-style, answer key matched by label "D" at position 1
        assert_eq!(items[2].choices.len(), 2);

        let p = write(
            &d,
            "arc_hf.jsonl",
            br#"{"id": "x1", "question": "Which is a gas?", "choices": {"text": ["ice", "steam", "iron"], "label": ["A", "B", "C"]}, "answerKey": "B"}
{"id": "x2", "question_stem": "Obqa hf?", "choices": {"text": ["p", "q"], "label": ["A", "B"]}, "answerKey": "A"}
"#,
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Arc);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!((items[0].label, items[1].label), (1, 0));
        assert!(items[1].prompt.contains("question: Obqa hf?\n"));

        let p = write(
            &d,
            "arc_bad.jsonl",
            br#"{"id": "a", "question": {"stem": "S", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]}, "answerKey": "E"}"#,
        );
        let m = err(&p, Format::Arc);
        assert_located(&m, "arc_bad.jsonl", 1, "answerKey");
        assert!(m.contains("[\"A\", \"B\"]"), "{m}");

        let p = write(
            &d,
            "arc_bad2.jsonl",
            br#"{"id": "a", "question": {"stem": "S", "choices": [{"label": "A"}, {"text": "y", "label": "B"}]}, "answerKey": "A"}"#,
        );
        assert_located(&err(&p, Format::Arc), "arc_bad2.jsonl", 1, "question.choices[0].text");
    }
}
