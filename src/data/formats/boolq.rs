//! BoolQ records.

use serde_json::{Map, Value};

use super::record::Ctx;
use crate::data::error::DataError;
use crate::data::prompt::boolq_prompt;
use crate::data::Item;

/// BoolQ: `{"question", "passage", "answer": true|false, "title"?}`. Choices True/False
/// (label 0 = True). The SuperGLUE layout `"label": 1|0` (1 = True) is accepted too.
pub(crate) fn parse_boolq(ctx: &Ctx, obj: &Map<String, Value>) -> Result<Item, DataError> {
    let question = ctx.req_str(obj, "question", "give the yes/no question")?;
    let passage = ctx.req_str(obj, "passage", "give the passage the question is about")?;
    let answer = match (obj.get("answer"), obj.get("label")) {
        (Some(Value::Bool(b)), _) => *b,
        (Some(Value::String(s)), _) if s.trim().eq_ignore_ascii_case("true") => true,
        (Some(Value::String(s)), _) if s.trim().eq_ignore_ascii_case("false") => false,
        (Some(other), _) if !other.is_null() => return Err(ctx.wrong("answer", "true or false", other)),
        (_, Some(Value::Bool(b))) => *b,
        (_, Some(Value::Number(n))) if n.as_i64() == Some(1) => true,
        (_, Some(Value::Number(n))) if n.as_i64() == Some(0) => false,
        (_, Some(other)) if !other.is_null() => return Err(ctx.wrong("label", "1 (true) or 0 (false)", other)),
        _ => return Err(ctx.missing("answer", "give the answer as true or false")),
    };
    let id = ctx.id(obj, &["id", "idx"])?;
    Ok(Item {
        id,
        prompt: boolq_prompt(&passage, &question),
        choices: vec!["True".into(), "False".into()],
        answer_labels: vec![" True".into(), " False".into()],
        label: if answer { 0 } else { 1 },
    })
}

#[cfg(test)]
mod tests {
    use crate::data::formats::test_util::*;
    use crate::data::formats::{detect_format, load_items};
    use crate::data::Format;

    #[test]
    fn boolq_publisher_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "dev.jsonl",
            br#"{"question": "is the shed painted green", "title": "Shed", "answer": false, "passage": "The old shed behind the house was painted red last spring."}
{"question": "is it legal", "passage": "It is legal.", "answer": true, "id": "b2"}
{"question": "superglue layout", "passage": "P.", "label": 1, "idx": 7}
"#,
        );
        assert_eq!(detect_format(&p).unwrap(), Format::Boolq);
        let items = load_items(&p, Format::Auto).unwrap();
        assert_eq!(
            items[0].prompt,
            "Answer the question with only True or False: is the shed painted green\nContext: The old shed behind the house was painted red last spring.\nAnswer:"
        );
        assert_eq!(items[0].choices, vec!["True", "False"]);
        assert_eq!(items[0].answer_labels, vec![" True", " False"]);
        assert_eq!(items[0].label, 1);
        assert_eq!(items[0].id, "dev.jsonl:1");
        assert_eq!((items[1].label, items[1].id.as_str()), (0, "b2"));
        assert_eq!((items[2].label, items[2].id.as_str()), (0, "7"));

        let p = write(&d, "bq.jsonl", br#"{"question": "q", "passage": "p", "answer": "maybe"}"#);
        let m = err(&p, Format::Boolq);
        assert_located(&m, "bq.jsonl", 1, "answer");
        assert!(m.contains("true or false"), "{m}");
        let p = write(&d, "bq2.jsonl", br#"{"question": "q", "answer": true}"#);
        assert_located(&err(&p, Format::Boolq), "bq2.jsonl", 1, "passage");
    }
}
